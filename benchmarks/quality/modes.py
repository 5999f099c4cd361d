"""Mode collapse on stacked digits (1000 modes), beside PacGAN's Tables 2 and 3 and R3GAN.

DCGAN-sized networks (`model.g_width=64`: G's layers 128, 64 channels wide at 16 px, 256, 128, 64 at 32 px) in
PacGAN's two settings: D as wide as G (`d_width=64`, their Table 2) and D with a quarter of G's channels (`d_width=16`,
standing in for their Table 3's quarter-size D). Each row trains for the same CPU time (`--seconds` of one
thread, the step loop stopped at the first generator step past it), then 26,000 samples of G_ema are scored:
modes covered of 1000, KL(mode histogram || uniform), the share read confidently on all three channels, and
FID in the digits classifier's per-channel features ("digits FID": not comparable with Inception FIDs). The
table's first row scores 26,000 stacked digits of the data itself: the values a perfect generator reaches
with this classifier and sample count (KL is not 0: 26,000 draws over 1000 modes leave ~0.02).

    python benchmarks/quality/modes.py [--seeds 0 1] [--seconds 300] [--resolution 16] [--jobs 2] [--rows ...]
    python benchmarks/quality/modes.py --smoke --out /tmp/modes    # every row, tiny and short: < 60 s

Writes modes-stacked{16,32}[-smoke][-TAG].{json,csv,md,png} into --out (benchmarks/results) with provenance.

16 px by default: the digits are scikit-learn's 8x8 ones, so 16 px holds everything 32 px does, and a step of
the 32 px networks costs 5.7 times as much on a CPU (2.8 against 16.1 steps per CPU second, equal setting).
Measured on a quiet AMD EPYC (2026-12-07), `--settings equal --rows nonsaturating rpgan --seeds 0 --seconds 300`:
at 32 px, 847 and 651 steps: 886 modes / KL 1.08 / 5% confident (non-saturating, colour blobs that the
classifier spreads over many modes) and 69 / 6.19 / 57% (RpGAN + R1 + R2, collapsed); at 16 px, 4210 and 3353
steps: 971 / 0.44 / 14% and 990 / 0.29 / 13%. The data scores 1000 / 0.02 / 94% at either size.
Ours are scikit-learn's 8x8 digits upsampled and stacked; the published rows are Stacked MNIST at 28 px,
trained for far longer than 5 CPU minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import provenance  # noqa: E402

# setting -> (title, overrides). DCGAN-sized: G's layers 128, 64 channels wide at 16 px (256, 128, 64 at 32 px).
SETTINGS = {
    "equal": ("D as wide as G (PacGAN Table 2)", ["model.g_width=64", "model.d_width=64"]),
    "quarter": ("D a quarter of G's channels (PacGAN Table 3)", ["model.g_width=64", "model.d_width=16"]),
}
# row -> (label, overrides on the base config below)
ROWS = {
    "nonsaturating": ("non-saturating (DCGAN)", []),
    "pack2": ("+ packing 2", ["model.pack=2"]),
    "pack4": ("+ packing 4", ["model.pack=4"]),
    "mbstd": ("+ minibatch stddev 4", ["model.minibatch_std=4"]),
    # Gulrajani et al. 2017, Alg. 1: lambda 10, n_critic 5, Adam 1e-4 (0, 0.9), no batch norm in the critic
    "wgan-gp": ("WGAN-GP", ["loss.name=wgan-gp", "model.d_norm=layer", "train.d_steps=5", "optim.lr_g=0.0001",
                            "optim.lr_d=0.0001", "optim.beta1=0.0", "optim.beta2=0.9"]),
    # R3GAN (Huang et al. 2025): RpGAN with R1 and R2, no normalisation in D; penalties paid lazily every 4 steps
    "rpgan": ("RpGAN + R1 + R2", ["loss.name=rpgan", "loss.r1_gamma=1.0", "loss.r2_gamma=1.0",
                                  "loss.reg_interval=4", "model.d_norm=none"]),
}  # fmt: skip
# G_ema with a half-life of 69 steps (beta 0.99): a 5-minute CPU run makes 650-4200 steps, and the configs' 0.995
# (138 steps) or slower would score a generator still close to its initialisation
BASE = ["data.name=stacked_digits", "data.batch_size=64", "model.z_dim=100",
        "train.ema_beta=0.99", "train.steps=10000000", "train.progress=false", "health.enabled=false"]  # fmt: skip
SMOKE = ["model.g_width=8", "model.d_width=8", "data.batch_size=16"]  # after the setting: tiny networks
# Published (modes, KL): PacGAN Tables 2 and 3 (Stacked MNIST, 26,000 samples); R3GAN reports all 1000 modes.
PUBLISHED = {
    "equal": [("DCGAN (PacGAN Table 2)", 99.0, 3.40), ("PacDCGAN2 (PacGAN Table 2)", 1000.0, 0.06),
              ("R3GAN, RpGAN + R1 + R2 (Huang et al. 2025)", 1000.0, None)],
    "quarter": [("DCGAN (PacGAN Table 3)", 78.5, 5.21), ("Unrolled GAN, 10 steps (PacGAN Table 3)", 327.0, 4.66),
                ("PacDCGAN4 (PacGAN Table 3)", 667.0, 1.81)],
}  # fmt: skip
COLUMNS = ("modes", "modes_kl", "modes_confident", "fid", "seconds", "steps")


@contextlib.contextmanager
def _keep_threads():
    import torch

    n = torch.get_num_threads()
    try:
        yield None
    finally:
        torch.set_num_threads(n)


def one_run(job: tuple[str, str, int, float, int, bool, int]) -> dict:
    import tempfile

    import torch

    torch.set_num_threads(1)
    from gandist.config import load_config
    from gandist.metrics.evaluate import evaluate
    from gandist.strategies import strategy_from_config
    from gandist.train.loop import Trainer

    setting, row, seed, seconds, samples, smoke, resolution = job
    overrides = [*BASE, f"data.resolution={resolution}", *SETTINGS[setting][1], *(SMOKE if smoke else []),
                 *ROWS[row][1], f"train.seed={seed}"]  # fmt: skip
    cfg = load_config("digits_dcgan", overrides)
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, Path(d), strategy_from_config(cfg.train), log_enabled=False)
        c0 = time.process_time()
        while time.process_time() - c0 < seconds:  # equal CPU time per row, whatever a step costs
            t.train_step()
        cpu = time.process_time() - c0
        # 26,000 samples of G_ema (the protocol's count), scored by the digits classifier read per channel
        res = evaluate(t.sample_net(), cfg, "images", ["modes", "fid"], n=samples, seed=10_000 + seed,
                       extractor="digits")  # fmt: skip
        with torch.no_grad():
            z = torch.randn(64, cfg.model.z_dim, generator=torch.Generator().manual_seed(seed))
            pictures = t.sample_net().eval()(z).clamp(-1, 1).numpy() if seed == 0 else None
    return {"setting": setting, "row": row, "seed": seed, "overrides": overrides, "steps": t.step,
            "seconds": cpu, "modes": res["modes"], "modes_kl": res["modes_kl"],
            "modes_confident": res["modes_confident"], "fid": res["fid"], "samples": samples,
            "extractor": res.get("extractor"), "pictures": pictures}  # fmt: skip


def data_reference(resolution: int, samples: int) -> dict:
    """The stacked digits themselves, `samples` of them drawn as training draws them, scored as a generator's:
    the data as the generated side of the `modes` metric."""
    from gandist.config import load_config
    from gandist.data import build_dataset
    from gandist.metrics.evaluate import evaluate_sources
    from gandist.metrics.sources import DatasetSource
    from gandist.metrics.stacked import StackedDigitsExtractor

    cfg = load_config("digits_dcgan", [*BASE, f"data.resolution={resolution}"])
    res = evaluate_sources(DatasetSource(build_dataset(cfg.data, 0), samples), None, ["modes"],
                           StackedDigitsExtractor(), dataset=cfg.data.name)  # fmt: skip
    return {"resolution": resolution, "samples": samples,
            **{k: res[k] for k in ("modes", "modes_kl", "n_modes", "modes_confident")}}  # fmt: skip


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for setting, row in dict.fromkeys((r["setting"], r["row"]) for r in runs):
        rs = [r for r in runs if (r["setting"], r["row"]) == (setting, row)]
        out = {"setting": setting, "row": row, "label": ROWS[row][0], "seeds": [r["seed"] for r in rs]}
        for k in COLUMNS:
            v = np.array([r[k] for r in rs], dtype=float)
            out[k] = float(v.mean())
            out[k + "_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
        rows.append(out)
    return rows


def markdown(rows: list[dict], prov: dict, samples: int, reference: dict) -> str:
    lines = []
    for setting, (title, overrides) in SETTINGS.items():
        mine = [r for r in rows if r["setting"] == setting]
        if not mine:
            continue
        lines += [f"**{title}** (`{' '.join(overrides)}`)", "",
                  "| row | modes (of 1000) | KL | confident | digits FID | CPU s | steps | seeds |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        lines.append(
            f"| the stacked digits themselves ({reference['samples']} drawn) | {reference['modes']} | "
            f"{reference['modes_kl']:.2f} | {reference['modes_confident']:.2f} | - | - | - | - |"
        )
        for name, modes, kl in PUBLISHED[setting]:
            lines.append(f"| {name} | {modes:g} | {'-' if kl is None else f'{kl:.2f}'} | - | - | - | - | - |")
        for r in mine:
            lines.append(
                f"| gandist {r['label']} | {r['modes']:.1f} ± {r['modes_se']:.1f} | {r['modes_kl']:.2f} ± {r['modes_kl_se']:.2f} | "
                f"{r['modes_confident']:.2f} | {r['fid']:.2f} ± {r['fid_se']:.2f} | {r['seconds']:.0f} | {r['steps']:.0f} | "
                f"{','.join(map(str, r['seeds']))} |"
            )
        lines.append("")
    lines.append(f"Mean ± standard error over seeds; {samples} samples of G_ema per run; stacked 8x8 digits (theirs: "
                 f"Stacked MNIST). `{prov['command']}` on {prov['device']}, torch {prov['torch']}, commit "
                 f"{prov['commit']}, {prov['date']}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in SETTINGS if any(r["setting"] == s for r in rows)]
    names = [name for name in ROWS if any(r["row"] == name for r in rows)]  # the rows run, in ROWS order
    shown = [r for r in runs if r["pictures"] is not None]
    fig, axes = plt.subplots(len(settings), 1 + len(names), figsize=(2.2 * (1 + len(names)) + 2, 2.6 * len(settings)),
                             dpi=100, squeeze=False)  # fmt: skip
    for i, setting in enumerate(settings):
        mine = [r for r in rows if r["setting"] == setting]
        ax = axes[i, 0]
        ax.barh([r["row"] for r in mine], [r["modes"] for r in mine], xerr=[r["modes_se"] for r in mine])
        ax.set_xlim(0, 1000)
        ax.set_title(f"{setting}: modes of 1000", fontsize=8)
        ax.tick_params(labelsize=7)
        for j, row in enumerate(names):
            ax = axes[i, j + 1]
            ax.set_axis_off()
            pic = next((r["pictures"] for r in shown if (r["setting"], r["row"]) == (setting, row)), None)
            if pic is None:
                continue
            grid = pic[:16].reshape(4, 4, *pic.shape[1:]).transpose(0, 3, 1, 4, 2)  # [4, H, 4, W, 3]
            ax.imshow((grid.reshape(4 * pic.shape[2], 4 * pic.shape[3], 3) + 1) / 2)
            ax.set_title(row, fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument(
        "--seconds", type=float, default=300.0, help="CPU seconds of training per run (one thread)"
    )
    p.add_argument(
        "--samples", type=int, default=26_000, help="generated samples scored per run (PacGAN: 26,000)"
    )
    p.add_argument("--resolution", type=int, default=16, choices=(16, 32), help="stacked digits' size in px")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one CPU thread each")
    p.add_argument(
        "--smoke", action="store_true", help="tiny networks, 1 s per row, 200 samples, seed 0 (CI)"
    )
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--tag", default="", help="appended to the file names (a longer budget beside the table)")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.seconds, args.samples = [0], 1.0, 200
    prov = provenance()  # taken before the runs: the commit that is measured
    jobs = [(s, r, seed, args.seconds, args.samples, args.smoke, args.resolution) for s in args.settings
            for r in args.rows for seed in args.seeds]  # fmt: skip
    runs = []
    # one job at a time runs in this process (no pickling of this script's functions, no start-up cost);
    # one_run sets one intra-op thread, so the caller's thread count is put back afterwards
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else _keep_threads() as pool:
        for r in pool.map(one_run, jobs) if pool is not None else map(one_run, jobs):
            runs.append(r)
            print(f"{r['setting']:8} {r['row']:14} seed {r['seed']}: {r['modes']} modes, KL {r['modes_kl']:.2f}, "
                  f"confident {r['modes_confident']:.2f}, FID {r['fid']:.2f}, {r['steps']} steps in {r['seconds']:.0f} CPU s",
                  flush=True)  # fmt: skip
    rows = summarise(runs)
    reference = data_reference(args.resolution, args.samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("-smoke" if args.smoke else "") + (f"-{args.tag}" if args.tag else "")
    stem = out / f"modes-stacked{args.resolution}{suffix}"
    result = {"provenance": {**prov, "threads_per_run": 1, "jobs": args.jobs}, "seconds_per_run": args.seconds, "settings": {k: v[1] for k, v in SETTINGS.items()}, "rows": rows,
              "data_reference": reference, "published": PUBLISHED, "runs": [{k: v for k, v in r.items() if k != "pictures"} for r in runs]}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["setting", "row", "seed", *COLUMNS, "samples"], extrasaction="ignore"
        )
        w.writeheader()
        w.writerows(runs)
    table = markdown(rows, prov, args.samples, reference)
    stem.with_suffix(".md").write_text(table)
    plot(rows, runs, stem.with_suffix(".png"))
    print(table)
    return result


if __name__ == "__main__":
    main()
