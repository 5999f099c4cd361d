"""Command line: `gandist train | generate | interpolate | arithmetic | eval | prepare | health`.

User mistakes (bad config, missing data, corrupt checkpoint) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _seeds(text: str) -> list[int]:
    """'1,2,5-7' -> [1, 2, 5, 6, 7]"""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gandist", description="Train and use GANs, from a laptop CPU to clusters."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a GAN (no CONFIG: the quickstart)")
    t.add_argument("config", nargs="?", default=None, help="YAML file or shipped config name (configs/)")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=500 (repeatable)",
    )
    t.add_argument("--out", default=None, help="run directory (default: runs/<id>-<name>/)")
    t.add_argument(
        "--resume",
        default=None,
        metavar="auto|PATH",
        help="auto: continue from the newest complete checkpoint of this run, if any; PATH: a checkpoint",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = sub.add_parser("generate", help="draw samples from a checkpoint")
    g.add_argument("checkpoint", help="checkpoint folder or run directory")
    g.add_argument("--n", type=int, default=64)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="samples.png", help=".png grid/scatter or .npz raw samples")
    g.add_argument("--raw-g", action="store_true", help="use the raw generator instead of its EMA")

    i = sub.add_parser("interpolate", help="lerp and slerp strips between latent seeds")
    i.add_argument("checkpoint")
    i.add_argument("--seeds", default="0,1,2,3", help="comma list; each consecutive pair gives one row")
    i.add_argument("--steps", type=int, default=10)
    i.add_argument(
        "--out", default="interpolation", help="file prefix: writes PREFIX_lerp.png and PREFIX_slerp.png"
    )

    a = sub.add_parser("arithmetic", help="latent vector arithmetic (DCGAN Sec. 6.3): u - v + w")
    a.add_argument("checkpoint")
    a.add_argument("--u", required=True, help="seed group u, e.g. 1,2,3")
    a.add_argument("--v", required=True, help="seed group v")
    a.add_argument("--w", required=True, help="seed group w")
    a.add_argument("--out", default="arithmetic.png")
    e = sub.add_parser("eval", help="evaluate a checkpoint or a folder of fakes: fid,is,kid,pr,nn,modes,parzen")
    e.add_argument("checkpoint", help="checkpoint folder, run directory, or a folder of generated images")
    e.add_argument("--metrics", default="fid,kid", help="comma list of fid,is,kid,pr,nn,modes,parzen")
    e.add_argument("--n", "--num-samples", dest="n", type=int, default=10000,
                   help="generated samples (published FIDs use 50000); under torchrun write --num-samples, "
                   "torchrun itself claims --n as an abbreviation of its own options")  # fmt: skip
    e.add_argument("--n-real", type=int, default=None, help="real samples (default: min(n, dataset size))")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--extractor", default="auto", choices=["auto", "inception", "digits", "points"])
    e.add_argument("--inception", default=None, help="path to the TF-ported Inception-v3 weights file")
    e.add_argument("--data", default=None, help="override the dataset folder (data.path) of the run; with a "
                   "folder of fakes: the folder of real images")  # fmt: skip
    e.add_argument(
        "--ref-stats", default=None, help=".npz of reference statistics: used if present, written if not"
    )
    e.add_argument(
        "--out", default=None, help="append the result (JSON line) to this file; default: RUN/metrics.jsonl"
    )
    e.add_argument("--batch", type=int, default=None,
                   help="extraction batch (default: metrics.batch of the run, else 32 on CPU, 256 on GPU)")  # fmt: skip
    e.add_argument("--workers", type=int, default=None, help="image decoding workers (default: by CPU count)")
    e.add_argument("--extractor-impl", default="auto", choices=["auto", "fused", "reference"],
                   help="Inception: BN folded + channels_last (fused, the auto choice) or torch-fidelity's module")  # fmt: skip

    f = sub.add_parser("fid", help="FID between two image folders, statistics files (.npz) or checkpoints")
    f.add_argument("a", help="image folder, .npz statistics, or a checkpoint / run directory (generated)")
    f.add_argument("b", help="the same kinds; a folder here is the reference: its statistics are cached")
    f.add_argument("--inception", default=None, help="path to the TF-ported Inception-v3 weights file")
    f.add_argument("--num-samples", dest="n", type=int, default=50000, help="samples generated from a checkpoint")
    f.add_argument("--seed", type=int, default=0, help="latent seed for a checkpoint")
    f.add_argument("--no-cache", action="store_true", help="neither read nor write cached folder statistics")
    f.add_argument("--save-stats", default=None, metavar="NPZ", help="also write A's statistics to this .npz")
    f.add_argument("--out", default=None, help="append the result (JSON line) to this file")
    f.add_argument("--batch", type=int, default=None, help="extraction batch (default: 32 on CPU, 256 on GPU)")
    f.add_argument("--workers", type=int, default=None, help="image decoding workers (default: by CPU count)")
    f.add_argument("--extractor-impl", default="auto", choices=["auto", "fused", "reference"],
                   help="Inception: BN folded + channels_last (fused, the auto choice) or torch-fidelity's module")  # fmt: skip

    pr = sub.add_parser("prepare", help="turn a folder of images into a verified training dataset")
    pr.add_argument("src", help="folder of images (searched recursively)")
    pr.add_argument("dst", help="output dataset folder (rerun to resume an interrupted run)")
    pr.add_argument("--resolution", type=int, required=True)
    pr.add_argument("--format", default="jpeg", choices=["jpeg", "npy"])
    pr.add_argument(
        "--quality", type=int, default=95, help="JPEG quality (>= 95 keeps artefacts below GAN noise)"
    )
    pr.add_argument("--filter", default="lanczos", choices=["lanczos", "bicubic", "bilinear", "box"])
    pr.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    pr.add_argument("--no-progress", action="store_true")

    h = sub.add_parser("health", help="one-page health report of a run: plots, diagnoses and remedies")
    h.add_argument("run_dir")
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    from gandist.metrics.commands import run_eval

    return run_eval(args)


def cmd_fid(args: argparse.Namespace) -> int:
    from gandist.metrics.commands import run_fid

    return run_fid(args)


def cmd_prepare(args: argparse.Namespace) -> int:
    from gandist.data.prepare import Options, prepare

    opts = Options(args.resolution, args.format, args.quality, args.filter)
    m = prepare(args.src, args.dst, opts, workers=args.workers, progress=not args.no_progress)
    print(
        f"[gandist] {m['count']} images at {m['resolution']}x{m['resolution']} ({m['format']}, {m['filter']}) in "
        f"{args.dst}; {m['skipped']} skipped (see {args.dst}/report.txt)"
    )
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from gandist.train.health_report import report

    text, png = report(args.run_dir)
    print(text)
    print(f"[gandist] report picture: {png}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from gandist.config import load_config
    from gandist.errors import UserError
    from gandist.train import checkpoint as ckpt
    from gandist.train.loop import Trainer
    from gandist.train.runlog import new_run_dir, newest_run_dir

    cfg = load_config(args.config if args.config else "quickstart", args.overrides)
    if args.no_progress:
        cfg.train.progress = False
    resume_from = None
    if args.out:
        run_dir = Path(args.out)
    elif args.resume == "auto":
        run_dir = newest_run_dir("runs", cfg.name) or new_run_dir("runs", cfg.name)
    else:
        run_dir = new_run_dir("runs", cfg.name)
    if args.resume == "auto":
        resume_from = ckpt.latest_checkpoint(run_dir / "checkpoints")
    elif args.resume:
        resume_from = ckpt.resolve_checkpoint(args.resume)
    if (
        resume_from is None
        and (run_dir / "checkpoints").is_dir()
        and ckpt.list_checkpoints(run_dir / "checkpoints")
    ):
        raise UserError(
            f"run directory '{run_dir}' already has checkpoints; add --resume auto to continue it, "
            "or choose another --out"
        )
    trainer = Trainer(cfg, run_dir)
    if resume_from is not None:
        trainer.load(resume_from)
        print(f"[gandist] resumed from {resume_from} at step {trainer.step}", file=sys.stderr)
    print(
        f"[gandist] {cfg.name}: {cfg.model.name} / {cfg.loss.name} on {cfg.data.name}, "
        f"{cfg.train.steps} steps on {trainer.device}; run directory {run_dir}",
        file=sys.stderr,
    )
    summary = trainer.train()
    if summary["interrupted"]:
        print(
            f"[gandist] stopped by {summary['interrupted']} at step {summary['step']}; checkpoint "
            f"{summary['checkpoint']}. Continue with: gandist train {args.config or ''} --out {run_dir} --resume auto",
            file=sys.stderr,
        )
        return 130
    print(
        f"[gandist] done: {summary['step']} steps in {summary['seconds']:.0f} s. "
        f"Samples: {run_dir / 'samples'}  losses: {run_dir / 'losses.png'}  checkpoint: {summary['checkpoint']}"
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from gandist.generate import load_generator, sample, write_samples

    gen = load_generator(args.checkpoint, which="G" if args.raw_g else "G_ema")
    out = write_samples(gen, sample(gen, args.n, args.seed), args.out)
    print(f"[gandist] wrote {args.n} samples to {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from gandist.generate import interpolation_strips, load_generator
    from gandist.viz import save_grid

    gen = load_generator(args.checkpoint)
    if gen.kind != "images":
        from gandist.errors import UserError

        raise UserError("interpolate draws image strips; this checkpoint generates 2-D points")
    strips = interpolation_strips(gen, _seeds(args.seeds), args.steps)
    for name, imgs in strips.items():
        path = save_grid(imgs, f"{args.out}_{name}.png", nrow=args.steps)
        print(f"[gandist] wrote {path}")
    return 0


def cmd_arithmetic(args: argparse.Namespace) -> int:
    from gandist.generate import load_generator, vector_arithmetic
    from gandist.viz import save_grid

    gen = load_generator(args.checkpoint)
    imgs, row = vector_arithmetic(gen, _seeds(args.u), _seeds(args.v), _seeds(args.w))
    path = save_grid(imgs, args.out, nrow=row)
    print(f"[gandist] wrote {path}: rows u, v, w (mean-latent image last), then u - v + w and variations")
    return 0


COMMANDS = {
    "train": cmd_train,
    "generate": cmd_generate,
    "interpolate": cmd_interpolate,
    "arithmetic": cmd_arithmetic,
    "health": cmd_health,
    "eval": cmd_eval,
    "fid": cmd_fid,
    "prepare": cmd_prepare,
}


def main(argv: list[str] | None = None) -> int:
    from gandist.errors import UserError

    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        msg = str(exc).strip().splitlines()
        print(f"gandist {args.command}: error: {msg[-1] if msg else exc}", file=sys.stderr)
        return 2
    finally:
        if args.command == "train":
            print(f"[gandist] wall time {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
