"""2-D mode-coverage quality against PacGAN's Table 1 (Lin et al. 2018): each config trained with 5
seeds, 2500 samples of G_ema scored with the VEEGAN/PacGAN protocol (gandist.metrics.mode_coverage).

    python benchmarks/quality/run_quality.py [--seeds 0 1 2 3 4] [--jobs 2] [--configs ring_gan ...]

Writes benchmarks/results/quality_2d.{json,md} and quality_2d.png (samples of seed 0 per config).
Each run uses one CPU thread; --jobs runs that many at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import provenance  # noqa: E402

# PacGAN Table 1 (2500 samples, mean over trials): modes, % high quality, reverse KL
PUBLISHED = {
    "ring": {"GAN": (6.3, 98.2, 0.45), "PacGAN4": (7.8, 95.9, 0.07)},
    "grid": {"GAN": (17.3, 94.8, 0.70), "PacGAN4": (24.8, 93.6, 0.04)},
}
# name -> (config, extra overrides)
VARIANTS = {
    "ring_gan": ("ring_gan", []),
    "ring_wgangp": ("ring_wgangp", []),
    "grid_gan": ("grid_gan", []),
    "grid_wgangp": ("grid_wgangp", []),
    # longer training: high quality keeps rising while the learning rate decays
    "ring_wgangp_6k": ("ring_wgangp", ["train.steps=6000"]),
    "grid_wgangp_w256_6k": ("grid_wgangp", ["train.steps=6000", "model.g_width=256", "model.d_width=256"]),
    # gandist extras: minibatch standard deviation in D (PGGAN), linear decay and an EMA generator
    "ring_gan+mbstd": ("ring_gan", ["model.minibatch_std=4", "optim.lr_g=0.0005", "optim.lr_d=0.0005",
                                    "optim.decay=linear", "train.ema_beta=0.99", "train.steps=3000"]),
    "grid_gan+mbstd": ("grid_gan", ["model.minibatch_std=4", "optim.lr_g=0.0005", "optim.lr_d=0.0005",
                                    "optim.decay=linear", "train.ema_beta=0.99", "train.steps=3000"]),
    # mixture latent (1024 components) + minibatch std: no bridges between the disconnected modes
    "ring_wgangp_mix": ("ring_wgangp_mix", []),
    "grid_wgangp_mix": ("grid_wgangp_mix", []),
}  # fmt: skip


def one_run(job: tuple[str, int]) -> dict:
    import tempfile

    import torch

    torch.set_num_threads(1)
    from gandist.config import load_config
    from gandist.metrics import mode_coverage
    from gandist.strategies import strategy_from_config
    from gandist.train.loop import Trainer

    name, seed = job
    config, extra = VARIANTS[name]
    cfg = load_config(config, [*extra, f"train.seed={seed}", "train.progress=false", "health.enabled=false"])
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, Path(d), strategy_from_config(cfg.train), log_enabled=False)
        c0, w0 = time.process_time(), time.perf_counter()
        t.train(progress=False)
        cpu_min, wall_min = (time.process_time() - c0) / 60, (time.perf_counter() - w0) / 60
    with torch.no_grad():
        z = torch.randn(2500, cfg.model.z_dim, generator=torch.Generator().manual_seed(10_000 + seed))
        x = t.ema.shadow(z)
    res = mode_coverage(x, cfg.data.name)
    return {"variant": name, "config": config, "overrides": extra, "seed": seed, "dataset": cfg.data.name,
            "modes": res["modes"], "high_quality_pct": 100 * res["high_quality"], "reverse_kl": res["reverse_kl"],
            "cpu_minutes": cpu_min, "wall_minutes": wall_min, "steps": cfg.train.steps,
            "samples": x.numpy().tolist() if seed == 0 else None}  # fmt: skip


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        rs = [r for r in runs if r["variant"] == name]
        row = {"variant": name, "dataset": rs[0]["dataset"], "seeds": len(rs)}
        for k in ("modes", "high_quality_pct", "reverse_kl", "cpu_minutes"):
            v = np.array([r[k] for r in rs], dtype=float)
            row[k] = float(v.mean())
            row[k + "_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
        rows.append(row)
    return rows


def markdown(rows: list[dict], prov: dict) -> str:
    lines = [
        "| dataset | method | modes | high quality % | reverse KL | CPU minutes / run |",
        "|---|---|---|---|---|---|",
    ]
    for ds in ("ring", "grid"):
        for method, (m, hq, kl) in PUBLISHED[ds].items():
            lines.append(f"| {ds} | {method} (PacGAN Table 1) | {m} | {hq} | {kl} | - |")
        for r in (r for r in rows if r["dataset"] == ds):
            lines.append(
                f"| {ds} | gandist `{r['variant']}` | {r['modes']:.1f} ± {r['modes_se']:.1f} | "
                f"{r['high_quality_pct']:.1f} ± {r['high_quality_pct_se']:.1f} | {r['reverse_kl']:.3f} ± {r['reverse_kl_se']:.3f} | "
                f"{r['cpu_minutes']:.1f} |"
            )
    lines.append("")
    lines.append(f"Mean ± standard error over {rows[0]['seeds']} seeds; 2500 samples of G_ema per run. "
                 f"`{prov['command']}` on {prov['device']}, torch {prov['torch']}, commit {prov['commit']}, {prov['date']}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gandist.data import DATASETS

    shown = [r for r in runs if r["samples"] is not None]
    rows = [[r for r in shown if r["dataset"] == ds] for ds in ("ring", "grid")]
    rows = [row for row in rows if row]
    cols = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.2 * cols, 3.4 * len(rows)), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, r in ((axes[i, j], r) for i, row in enumerate(rows) for j, r in enumerate(row)):
        ax.set_axis_on()
        x = np.array(r["samples"])
        m = DATASETS[r["dataset"]].modes.numpy()
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
        ax.scatter(m[:, 0], m[:, 1], s=20, marker="x", c="red")
        ax.set_title(f"{r['variant']}\n{r['modes']} modes, {r['high_quality_pct']:.0f}% HQ", fontsize=8)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    prov = provenance()  # taken before the runs: the commit that is measured
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = []
        for r in pool.map(one_run, jobs):
            runs.append(r)
            print(f"{r['variant']:16} seed {r['seed']}: {r['modes']} modes, {r['high_quality_pct']:.1f}% HQ, "
                  f"KL {r['reverse_kl']:.3f}, {r['cpu_minutes']:.1f} CPU min", flush=True)  # fmt: skip
    rows = summarise(runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_2d.json").write_text(json.dumps({"provenance": prov, "summary": rows, "published": PUBLISHED,
                                                     "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs]},
                                                    indent=1))  # fmt: skip
    (out / "quality_2d.md").write_text(markdown(rows, prov))
    plot(runs, out / "quality_2d.png")
    print(markdown(rows, prov))


if __name__ == "__main__":
    main()
