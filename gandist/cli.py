"""Command line: `gandist train | generate | interpolate | arithmetic | style-mix | eval | prepare | health | translate`.

User mistakes (bad config, missing data, corrupt checkpoint) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gandist.cli_args import SEED_MAX, Float, Int, Names, OneLineParser, Seeds, Text

# Domains of the numeric options, with the reason for each bound.
COUNT = Int(min=1)  # a number of things to draw or use
SEED = Int(min=0, max=SEED_MAX)  # torch.Generator.manual_seed range
EVAL_N = Int(min=2)  # covariances (FID) and unbiased MMD (KID) need at least two samples


def _shipped_configs_epilog() -> str:
    from gandist.resources import shipped_configs

    names = ", ".join(shipped_configs()) or "none found (broken install?)"
    return f"shipped configs: {names} (gandist train --list describes them)"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="gandist", description="Train and use GANs, from a laptop CPU to clusters.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a GAN (no CONFIG: the quickstart)",
        epilog=_shipped_configs_epilog(),
    )
    t.add_argument(
        "config", nargs="?", default=None, type=Text(), help="YAML file or shipped config name (see --list)"
    )
    t.add_argument("--list", action="store_true", help="list the shipped configs with their descriptions")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=Text(),
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=500 (repeatable)",
    )
    t.add_argument("--out", default=None, type=Text(), help="run directory (default: runs/<id>-<name>/)")
    t.add_argument(
        "--resume",
        default=None,
        type=Text(),
        metavar="auto|PATH",
        help="auto: continue from the newest complete checkpoint of this run, if any; PATH: a checkpoint",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--allow-nonempty-out", action="store_true",
                   help="train into an --out folder that holds files gandist did not write (refused by default)")  # fmt: skip

    g = sub.add_parser("generate", help="draw samples from a checkpoint")
    g.add_argument("checkpoint", type=Text(), help="checkpoint folder or run directory")
    g.add_argument("--n", type=COUNT, default=64, help="number of samples")
    g.add_argument("--seed", type=SEED, default=0)
    g.add_argument("--out", default="samples.png", type=Text(), help=".png grid/scatter or .npz raw samples")
    g.add_argument("--raw-g", action="store_true", help="use the raw generator instead of its EMA")
    g.add_argument("--class", dest="cls", type=Int(min=0), default=None, metavar="K",
                   help="draw only class K (a class-conditional generator: model.name=sgan, model.conditional=true)")  # fmt: skip
    _style_options(g)

    i = sub.add_parser("interpolate", help="lerp and slerp strips between latent seeds")
    i.add_argument("checkpoint", type=Text())
    i.add_argument(
        "--seeds",
        default="0,1,2,3",
        type=Seeds(min_len=2),
        help="comma list; each consecutive pair gives one row",
    )
    i.add_argument("--steps", type=Int(min=2), default=10, help="samples per strip, both ends included")
    i.add_argument(
        "--out",
        default="interpolation",
        type=Text(),
        help="file prefix: writes PREFIX_lerp.png and PREFIX_slerp.png (in Z), and for StyleGAN PREFIX_wlerp.png (in W)",
    )
    _style_options(i)

    sm = sub.add_parser("style-mix", help="StyleGAN style-mixing grid (Karras et al. 2019, Fig. 3)")
    sm.add_argument("checkpoint", type=Text(), help="checkpoint folder or run directory of a StyleGAN run")
    sm.add_argument(
        "--rows", default="0-4", type=Seeds(), help="seeds down the left: the styles not mixed in"
    )
    sm.add_argument("--cols", default="5-9", type=Seeds(), help="seeds across the top: the styles mixed in")
    sm.add_argument(
        "--styles",
        default="coarse",
        type=Text(),
        help="layers taken from the column seeds: coarse (4-8 px), middle (16-32 px), fine (64 px up) or a-b "
        "(layer indices, both included; layers 2k and 2k+1 work at 4*2^k px)",
    )
    sm.add_argument("--out", default="style_mix.png", type=Text(), help=".png grid")
    _style_options(sm)

    pp = sub.add_parser("ppl", help="perceptual path length of a StyleGAN run (Karras et al. 2019, Sec. 4.2)")
    pp.add_argument("checkpoint", type=Text(), help="checkpoint folder or run directory of a style-based run")
    pp.add_argument("--space", default="w", choices=["w", "z", "both"], help="lerp in W or slerp in Z")
    pp.add_argument("--n", type=Int(min=100), default=100_000, help="latent pairs (the paper: 100,000)")
    pp.add_argument("--epsilon", type=Float(min=1e-12, max=1.0), default=1e-4, help="the step between the two images of a pair")
    pp.add_argument("--sampling", default="full", choices=["full", "end"], help="t ~ U(0, 1), or t = 0")
    pp.add_argument("--crop", action="store_true", help="the official crop of FFHQ-aligned faces")
    pp.add_argument("--batch", type=Int(min=1), default=16, help="pairs per batch")
    pp.add_argument("--seed", type=SEED, default=0)
    pp.add_argument("--raw-g", action="store_true", help="G instead of G_ema")
    pp.add_argument("--device", default=None, type=Text())
    pp.add_argument("--vgg16", default=None, type=Text(), help="torchvision's vgg16-397923af.pth")
    pp.add_argument("--lpips", default=None, type=Text(), help="LPIPS v0.1 lin layers for VGG (vgg.pth)")
    pp.add_argument("--no-progress", action="store_true")

    a = sub.add_parser("arithmetic", help="latent vector arithmetic (DCGAN Sec. 6.3): u - v + w")
    a.add_argument("checkpoint", type=Text())
    a.add_argument("--u", required=True, type=Seeds(), help="seed group u, e.g. 1,2,3")
    a.add_argument("--v", required=True, type=Seeds(), help="seed group v")
    a.add_argument("--w", required=True, type=Seeds(), help="seed group w")
    a.add_argument("--out", default="arithmetic.png", type=Text())

    e = sub.add_parser(
        "eval", help="evaluate a checkpoint or a folder of fakes: fid,is,kid,pr,nn,modes,parzen"
    )
    e.add_argument(
        "checkpoint", type=Text(), help="checkpoint folder, run directory, or a folder of generated images"
    )
    e.add_argument("--metrics", default="fid,kid", type=Names(),
                   help="comma list of fid,is,kid,pr,pr_inception,nn,modes,parzen (pr: precision and recall on VGG-16 "
                   "fc2 for images, as Kynkaanniemi et al.; pr_inception: on Inception pool3); accuracy: the "
                   "semi-supervised GAN's held-out classifier accuracy (always reported for that family)")  # fmt: skip
    e.add_argument("--n", "--num-samples", dest="n", type=EVAL_N, default=50_000,
                   help="generated samples (default 50,000, the published FIDs' protocol; fewer is faster and biases "
                   "FID and KID upward); under torchrun write --num-samples, "
                   "torchrun itself claims --n as an abbreviation of its own options")  # fmt: skip
    e.add_argument("--n-real", type=EVAL_N, default=None, help="real samples (default: the whole real set up to --n; as many as --n of an endless synthetic source)")
    e.add_argument("--is-splits", dest="is_order", choices=["shuffled", "consecutive"], default="shuffled",
                   help="Inception Score's 10 splits: of the shuffled samples (torch-fidelity, seed 2020) or of "
                   "consecutive samples (improved-gan's inception_score.py)")  # fmt: skip
    e.add_argument("--noise-mode", choices=["random", "const", "none"], default="random",
                   help="StyleGAN noise inputs of the generated samples: fresh per sample (random, as the official "
                   "metrics) or the fixed noise images of the pictures (const)")  # fmt: skip
    e.add_argument("--seed", type=SEED, default=0)
    e.add_argument("--extractor", default="auto", choices=["auto", "inception", "digits", "points"])
    e.add_argument(
        "--inception", default=None, type=Text(), help="path to the TF-ported Inception-v3 weights file"
    )
    e.add_argument("--vgg16", default=None, type=Text(),
                   help="torchvision's vgg16-397923af.pth, the features of pr on images (else GANDIST_VGG16_WEIGHTS "
                   "or the cache)")  # fmt: skip
    e.add_argument("--data", default=None, type=Text(), help="override the dataset folder (data.path) of the run; "
                   "with a folder of fakes: the folder of real images")  # fmt: skip
    e.add_argument(
        "--ref-stats",
        default=None,
        type=Text(),
        help=".npz of reference statistics: used if present, written if not",
    )
    e.add_argument(
        "--out",
        default=None,
        type=Text(),
        help="append the result (JSON line) to this file; default: RUN/metrics.jsonl",
    )
    e.add_argument("--batch", type=COUNT, default=None,
                   help="extraction batch (default: metrics.batch of the run, else 8 on CPU, 256 on GPU)")  # fmt: skip
    e.add_argument(
        "--workers", type=Int(min=0), default=None, help="image decoding workers (default: by CPU count)"
    )
    e.add_argument("--extractor-impl", default="auto", choices=["auto", "exact", "fused", "reference"],
                   help="Inception: exact (auto: torch-fidelity's values, faster layout), fused (BN folded) or reference")  # fmt: skip

    f = sub.add_parser("fid", help="FID between two image folders, statistics files (.npz) or checkpoints")
    f.add_argument(
        "a", type=Text(), help="image folder, .npz statistics, or a checkpoint / run directory (generated)"
    )
    f.add_argument(
        "b", type=Text(), help="the same kinds; a folder here is the reference: its statistics are cached"
    )
    f.add_argument(
        "--inception", default=None, type=Text(), help="path to the TF-ported Inception-v3 weights file"
    )
    f.add_argument(
        "--num-samples", dest="n", type=EVAL_N, default=50000, help="samples generated from a checkpoint"
    )
    f.add_argument("--seed", type=SEED, default=0, help="latent seed for a checkpoint")
    f.add_argument("--no-cache", action="store_true", help="neither read nor write cached folder statistics")
    f.add_argument(
        "--save-stats",
        default=None,
        type=Text(),
        metavar="NPZ",
        help="also write A's statistics to this .npz",
    )
    f.add_argument("--out", default=None, type=Text(), help="append the result (JSON line) to this file")
    f.add_argument(
        "--batch", type=COUNT, default=None, help="extraction batch (default: 8 on CPU, 256 on GPU)"
    )
    f.add_argument(
        "--workers", type=Int(min=0), default=None, help="image decoding workers (default: by CPU count)"
    )
    f.add_argument("--extractor-impl", default="auto", choices=["auto", "exact", "fused", "reference"],
                   help="Inception: exact (auto: torch-fidelity's values, faster layout), fused (BN folded) or reference")  # fmt: skip

    pr = sub.add_parser("prepare", help="turn a folder of images into a verified training dataset")
    pr.add_argument("src", type=Text(), help="folder of images (searched recursively)")
    pr.add_argument("dst", type=Text(), help="output dataset folder (rerun to resume an interrupted run)")
    pr.add_argument("--resolution", type=COUNT, required=True, help="output side in pixels")
    pr.add_argument("--format", default="jpeg", choices=["jpeg", "npy"])
    pr.add_argument(
        "--quality",
        type=Int(min=1, max=100),
        default=95,
        help="JPEG quality (>= 95 keeps artefacts below GAN noise)",
    )
    pr.add_argument("--filter", default="lanczos", choices=["lanczos", "bicubic", "bilinear", "box"])
    pr.add_argument("--workers", type=COUNT, default=None, help="processes (default: all cores)")
    pr.add_argument("--no-progress", action="store_true")

    tr = sub.add_parser("translate", help="CycleGAN: translate one image or a folder between the two domains")
    tr.add_argument("checkpoint", type=Text(), help="checkpoint folder or run directory of a CycleGAN run")
    tr.add_argument("--direction", required=True, choices=["AtoB", "BtoA"], help="AtoB: G_AB; BtoA: G_BA")
    tr.add_argument("src", type=Text(), help="IN: an image, or a folder of images (searched recursively)")
    tr.add_argument("dst", type=Text(), help="OUT: a .png file for one image, else a folder")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    h = sub.add_parser("health", help="one-page health report of a run: plots, diagnoses and remedies")
    h.add_argument("run_dir", type=Text())
    return p


def _style_options(p: argparse.ArgumentParser) -> None:
    """Options of the style-based generators (StyleGAN): the truncation trick and the noise inputs."""
    p.add_argument("--truncation", type=Float(), default=1.0, metavar="PSI",
                   help="StyleGAN: w <- w_avg + PSI (w - w_avg) (1 = off; the paper shows 0.7)")  # fmt: skip
    p.add_argument("--truncation-cutoff", type=Int(min=1), default=None, metavar="K",
                   help="StyleGAN: truncate only layers below K (default: all; the paper uses 8)")  # fmt: skip
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default=None,
                   help="StyleGAN noise inputs (default: the run's model.sample_noise, const)")  # fmt: skip


def _load_styled(args: argparse.Namespace, which: str = "G_ema"):
    from gandist.generate import load_generator

    gen = load_generator(args.checkpoint, which=which)
    gen.set_style_options(args.truncation, args.truncation_cutoff, args.noise_mode)
    return gen


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


def cmd_list_configs() -> int:
    from gandist.resources import configs_dir, describe_config, shipped_configs

    configs = shipped_configs()
    width = max((len(n) for n in configs), default=0)
    print(f"shipped configs ({configs_dir()}):")
    for name, path in configs.items():
        print(f"  {name:<{width}}  {describe_config(path)}")
    return 0


def _config_path(name: str | None) -> str:
    """A YAML path as given, or a shipped config's path (found in a checkout and in an installed wheel)."""
    from gandist.resources import shipped_configs

    name = name or "quickstart"
    if Path(name).is_file():
        return name
    shipped = shipped_configs()
    key = name[: -len(".yaml")] if name.endswith(".yaml") else name
    return str(shipped[key]) if key in shipped else name  # else load_config names what is missing


def _pick_run_dir(args: argparse.Namespace, name: str) -> tuple[Path, bool]:
    """The run directory and whether this call created it (a fresh runs/<id>-<name>/)."""
    from gandist.train.runlog import new_run_dir, newest_run_dir

    if args.out:
        from gandist.train.rundir import check_run_dir

        check_run_dir(Path(args.out), args.allow_nonempty_out)  # before anything is built or written
        return Path(args.out), False
    if args.resume == "auto":
        found = newest_run_dir("runs", name)
        if found is not None:
            return found, False
    return new_run_dir("runs", name), True


def _resume_point(args: argparse.Namespace, run_dir: Path) -> Path | None:
    from gandist.errors import UserError
    from gandist.train import checkpoint as ckpt

    root = run_dir / "checkpoints"
    if args.resume == "auto":
        found, rejected = ckpt.find_latest(root)
        if found is None and rejected:
            raise ckpt.no_usable_checkpoint(root, rejected)
        for exc in rejected:
            print(f"[gandist] skipping {exc}", file=sys.stderr)
        return found
    if args.resume:
        return ckpt.resolve_checkpoint(args.resume)
    if ckpt.list_checkpoints(root):
        raise UserError(
            f"run directory '{run_dir}' already has checkpoints; add --resume auto to continue it, "
            "or choose another --out"
        )
    return None


def _load_resume(trainer, path: Path, announce: bool = True) -> None:
    from gandist.errors import CheckpointError

    try:
        trainer.load(path)
    except (
        RuntimeError,
        KeyError,
        ValueError,
    ) as exc:  # names, shapes or param groups differ from this config
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"checkpoint '{path}' does not fit this config ({first}); resume with the config it was trained with"
        ) from None
    if announce:  # one set of messages per run: the main rank's
        print(f"[gandist] resumed from {path} at step {trainer.step}", file=sys.stderr)


def _claim(run_dir: Path) -> Path | None:
    """Under the run lock: mark the folder as a gandist run and drop temporary checkpoint folders that
    killed saves left behind (no save can be running now: saves happen only under this lock). Returns the
    marker when this call wrote it, so a start that fails after this can take it back."""
    from gandist.train.checkpoint import remove_stale_temporaries
    from gandist.train.rundir import MARKER, mark_run_dir

    marker = run_dir / MARKER
    new = not marker.exists()
    mark_run_dir(run_dir)
    for p in remove_stale_temporaries(run_dir / "checkpoints"):
        print(f"[gandist] removed {p}, left by a save that did not finish", file=sys.stderr)
    return marker if new else None


def _remove_unstarted(run_dir: Path, lock) -> None:
    """Delete a run folder this call created when the run failed before it started. Only under the
    folder's lock (ours, or taken now), so a folder another training took meanwhile is left alone."""
    import shutil

    from gandist.train.runlock import RunLock, RunLockedError

    if not run_dir.is_dir():
        return
    if lock is None:
        try:
            lock = RunLock(run_dir).acquire()
        except RunLockedError:
            return
    shutil.rmtree(run_dir, ignore_errors=True)
    lock.release()


def _length(cfg) -> str:
    """How long the run is, in the unit that ends it: train.kimg when set, else train.steps."""
    return f"{cfg.train.kimg:g} kimg" if cfg.train.kimg > 0 else f"{cfg.train.steps} steps"


def _continue_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that resumes this run: the same config and --set overrides (without them the resumed
    config would differ from the checkpoint's), into the same folder."""
    import shlex

    words = ["gandist", "train", *([args.config] if args.config else [])]
    for o in args.overrides:
        words += ["--set", o]
    words += ["--out", str(run_dir), "--resume", "auto"] + (["--no-progress"] if args.no_progress else [])
    return shlex.join(words)


EXIT_REQUEUE = 75  # EX_TEMPFAIL (sysexits.h): stopped by a signal with a checkpoint saved; start it again


def cmd_train(args: argparse.Namespace) -> int:
    """load config -> build trainer -> lock the run folder -> resume -> train -> release.

    The main rank takes the lock (gandist.train.runlock) before anything is written into the run
    folder and holds it until training ends; a second training into the same folder fails there, at
    once. A run folder this call created is removed again if the run fails before it starts."""
    if args.list:
        return cmd_list_configs()
    from gandist.config import load_config
    from gandist.strategies import strategy_from_config
    from gandist.train.loop import Trainer
    from gandist.train.runlock import RunLock

    cfg = load_config(_config_path(args.config), args.overrides)
    if args.no_progress:
        cfg.train.progress = False
    run_dir, created = _pick_run_dir(args, cfg.name)
    created = created or not run_dir.exists()
    trainer, lock, started, strategy, marker = None, None, False, None, None
    try:
        strategy = strategy_from_config(cfg.train)  # every train.* setting of the strategy, backend included
        trainer = Trainer(cfg, run_dir, strategy=strategy)  # builds everything, writes nothing
        if strategy.is_main:  # one writer per folder; under several ranks that is rank 0
            lock = RunLock(run_dir).acquire()
            marker = _claim(run_dir)
        resume_from = _resume_point(args, run_dir)
        if resume_from is not None:
            _load_resume(trainer, resume_from, announce=strategy.is_main)
        if strategy.is_main:
            print(
                f"[gandist] {cfg.name}: {cfg.model.name} / {cfg.loss.name} on {cfg.data.name}, "
                f"{_length(cfg)} on {strategy.describe()}; run directory {run_dir}",
                file=sys.stderr,
            )
        else:
            args.quiet_rank = True  # one set of messages per run: the main rank's
        started = args.started = True  # from here on the wall time is worth a line
        summary = trainer.train()  # returns on every rank together (its last barrier)
    except BaseException:
        if created and not started and (strategy is None or strategy.is_main):
            _remove_unstarted(run_dir, lock)
        elif marker is not None and not started:  # a folder that was there: leave it as it was found
            marker.unlink(missing_ok=True)
        raise
    finally:
        if lock is not None:
            lock.release()
        if strategy is not None:
            strategy.close()
    if summary["interrupted"]:
        if strategy.is_main:
            print(
                f"[gandist] stopped by {summary['interrupted']} at step {summary['step']}; checkpoint "
                f"{summary['checkpoint']}. Continue with: {_continue_command(args, run_dir)}",
                file=sys.stderr,
            )
        # Ctrl-C: 130, as a shell reports it; SIGTERM / SIGUSR2 (a scheduler's preemption or time-limit warning):
        # EXIT_REQUEUE, which launch/slurm/train.sbatch answers with `scontrol requeue`
        return 130 if summary["interrupted"] == "SIGINT" else EXIT_REQUEUE
    if not strategy.is_main:
        return 0
    print(
        f"[gandist] done: {summary['step']} steps in {summary['seconds']:.0f} s. "
        f"Samples: {run_dir / 'samples'}  losses: {run_dir / 'losses.png'}  checkpoint: {summary['checkpoint']}"
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from gandist.generate import sample, write_samples

    gen = _load_styled(args, which="G" if args.raw_g else "G_ema")
    out = write_samples(gen, sample(gen, args.n, args.seed, args.cls), args.out)
    of_class = "" if args.cls is None else f" of class {args.cls}"
    print(f"[gandist] wrote {args.n} samples{of_class} to {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from gandist.generate import interpolation_strips
    from gandist.viz import save_grid

    gen = _load_styled(args)
    if gen.kind != "images":
        from gandist.errors import UserError

        raise UserError("interpolate draws image strips; this checkpoint generates 2-D points")
    strips = interpolation_strips(gen, args.seeds, args.steps)
    for name, imgs in strips.items():
        path = save_grid(imgs, f"{args.out}_{name}.png", nrow=args.steps)
        print(f"[gandist] wrote {path}")
    return 0


def cmd_arithmetic(args: argparse.Namespace) -> int:
    from gandist.generate import load_generator, vector_arithmetic
    from gandist.viz import save_grid

    gen = load_generator(args.checkpoint)
    imgs, row = vector_arithmetic(gen, args.u, args.v, args.w)
    path = save_grid(imgs, args.out, nrow=row)
    print(f"[gandist] wrote {path}: rows u, v, w (mean-latent image last), then u - v + w and variations")
    return 0


def cmd_style_mix(args: argparse.Namespace) -> int:
    from gandist.generate import style_mix_grid
    from gandist.viz import save_grid

    gen = _load_styled(args)
    imgs, row = style_mix_grid(gen, args.rows, args.cols, args.styles)
    path = save_grid(imgs, args.out, nrow=row)
    print(
        f"[gandist] wrote {path}: column seeds {args.cols} across the top, row seeds {args.rows} down the left, "
        f"each cell the row's styles with the {args.styles} styles of the column"
    )
    return 0


def cmd_ppl(args: argparse.Namespace) -> int:
    import json

    from gandist.metrics.ppl import run_command

    print(json.dumps(run_command(args), indent=1))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from gandist.translate import translate

    outs = translate(args.checkpoint, args.direction, args.src, args.dst, progress=not args.no_progress)
    print(f"[gandist] translated {len(outs)} image{'s' if len(outs) != 1 else ''} {args.direction} into {args.dst}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "generate": cmd_generate,
    "interpolate": cmd_interpolate,
    "arithmetic": cmd_arithmetic,
    "style-mix": cmd_style_mix,
    "health": cmd_health,
    "eval": cmd_eval,
    "fid": cmd_fid,
    "prepare": cmd_prepare,
    "translate": cmd_translate,
    "ppl": cmd_ppl,
}


def _other_rank() -> bool:
    """True in a torchrun worker other than rank 0 (read through the one module that reads the launch)."""
    try:
        from gandist.strategies import DistEnv

        return DistEnv.from_environ().rank != 0
    except Exception:  # an inconsistent launch: say it everywhere
        return False


def main(argv: list[str] | None = None) -> int:
    from gandist.errors import UserError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (one line, status 2) or --help (status 0)
        return exc.code if isinstance(exc.code, int) else 2
    t0 = time.perf_counter()
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        from gandist.errors import DivergedError

        msg = str(exc).strip().splitlines()
        if _other_rank() and (exc.collective or not getattr(args, "started", False)):
            # before training every rank runs the same checks and fails alike: one line, rank 0's. A failure
            # in training may be one rank's own, so from then on each rank says what it hit, unless the ranks
            # decided it together (exc.collective)
            return 1 if isinstance(exc, DivergedError) else 2
        print(f"gandist {args.command}: error: {msg[-1] if msg else exc}", file=sys.stderr)
        return 1 if isinstance(exc, DivergedError) else 2
    except OSError as exc:  # a full disk, a read-only folder, a file where a folder belongs: one line
        from gandist.oserrors import describe_os_error

        line = describe_os_error(exc)
        if line is None:
            raise
        print(f"gandist {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C in training, or the first anywhere else
        what = (
            "stopped without saving; the checkpoints already complete are kept (add --resume auto to continue)"
            if args.command == "train"
            else "stopped; files being written may be incomplete"
        )
        print(f"\ngandist {args.command}: interrupted by Ctrl-C: {what}", file=sys.stderr)
        return 130
    finally:
        if getattr(args, "started", False) and not getattr(args, "quiet_rank", False):
            print(f"[gandist] wall time {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def run() -> None:
    """The program `gandist` and `python -m gandist`: `main` with the process's arguments, then exit with its status.

    A rank of a multi-process run (WORLD_SIZE > 1, as torchrun, srun and the DeepSpeed launcher set it) ends with
    `os._exit` once its output is flushed, without the interpreter's teardown: gloo's worker threads can still be
    letting go of the tensors of a finished collective when teardown begins, and a thread that then needs the
    interpreter is ended mid-destructor, which aborts the process (SIGABRT, "terminate called without an active
    exception") after its run has finished and been saved. The launcher would report that rank as failed and
    torchrun would restart a finished job. By then `main` has closed the process group and written and closed the
    checkpoints and logs; data-loading workers see their parent gone and end."""
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing left to say on it
                pass
        os._exit(status if isinstance(status, int) else 1)
    sys.exit(status)


if __name__ == "__main__":
    run()
