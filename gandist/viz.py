"""Pictures people would rather look at: sample grids, 2-D scatters, loss curves.

Cheap to call at the end of a run: grids are written with torch + PIL (the pixels of torchvision's
`save_image(normalize=True, value_range=(-1, 1), padding=2)`, without importing torchvision: 54 s cumulative
under `python -X importtime` against 0.2 s for PIL, on 2 cores at load ~25), and figures are drawn on
matplotlib's Agg `Figure` without `matplotlib.pyplot` (its backend machinery and global figure registry).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def _figure(**kw):
    """A matplotlib Figure on the Agg canvas (PNG), without pyplot; nothing to close afterwards."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def make_grid(images: torch.Tensor, nrow: int, padding: int = 2) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> [3 or C, rows * (H + p) + p, nrow * (W + p) + p] uint8: images left to right,
    top to bottom, p pixels of black between and around them; one channel is repeated to three (RGB).
    torchvision.utils.make_grid + save_image's rounding, pixel for pixel (tests/test_viz_grid.py)."""
    x = images.detach().float().cpu().clamp(-1, 1)
    x = (x + 1) / 2  # value_range (-1, 1) -> [0, 1], as normalize=True
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[0] == 1:  # one image: itself, no border (as make_grid)
        return x[0].mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    n, c, h, w = x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = torch.zeros(c, rows * (h + padding) + padding, cols * (w + padding) + padding)
    for i in range(n):
        y0, x0 = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[:, y0 : y0 + h, x0 : x0 + w] = x[i]
    return grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save [N, C, H, W] images in [-1, 1] as one PNG grid (nearest-neighbour upscale for tiny images)."""
    from PIL import Image

    images = images.detach().float().cpu().clamp(-1, 1)
    if images.shape[-1] < 32:  # 8-16 px digits are unreadable at 1:1
        factor = math.ceil(32 / images.shape[-1])
        images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_grid(images, nrow).permute(1, 2, 0).numpy()).save(path)
    return path


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Save one [C, H, W] image in [-1, 1] as a PNG at its own size (uint8, rounded)."""
    from PIL import Image

    x = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = x.permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path)
    return path


def save_scatter(
    points: torch.Tensor,
    path: str | Path,
    reference: torch.Tensor | None = None,
    modes: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """Scatter of generated 2-D points over real data (and mode centres)."""
    fig = _figure(figsize=(5, 5), dpi=100)
    ax = fig.subplots()
    if reference is not None:
        r = reference.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=4, c="tab:gray", alpha=0.3, label="data")
    p = points.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=4, c="tab:blue", alpha=0.6, label="generated")
    if modes is not None:
        m = modes.cpu().numpy()
        ax.scatter(m[:, 0], m[:, 1], s=40, marker="x", c="tab:red", label="modes")
        span = float(abs(m).max()) * 1.5 + 0.5
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_log(log_path: str | Path, out_path: str | Path) -> Path | None:
    """Loss curves (every `*_loss` and penalty a family logs) and mean D outputs from a run's log.jsonl."""
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    records = [r for r in records if "event" not in r and any(k.endswith("_loss") for k in r)]
    if not records:
        return None
    keys = {k for r in records for k in r}
    losses = sorted(k for k in keys if k.endswith("_loss")) + [k for k in ("gp", "r1") if k in keys]
    outputs = [(k, label) for k, label in (("d_real", "D(x)"), ("d_fake", "D(G(z))")) if k in keys]
    fig = _figure(figsize=(10 if outputs else 5, 3.6), dpi=100)
    axes = fig.subplots(1, 2 if outputs else 1, squeeze=False)
    a = axes[0][0]
    for key in losses:
        rows = [r for r in records if key in r]
        label = {"d_loss": "D loss", "g_loss": "G loss", "gp": "GP", "r1": "R1"}.get(key, key)
        a.plot(
            [r["step"] for r in rows],
            [r[key] for r in rows],
            label=label,
            alpha=0.7 if key in ("gp", "r1") else 1,
        )
    a.set_xlabel("generator step")
    a.set_title("losses")
    a.legend()
    if outputs:
        b = axes[0][1]
        for key, label in outputs:
            rows = [r for r in records if key in r]
            b.plot([r["step"] for r in rows], [r[key] for r in rows], label=label)
        b.set_xlabel("generator step")
        b.set_title("mean discriminator output")
        b.legend()
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path)
    return out_path


def plot_metrics(path: str | Path, out_path: str | Path) -> Path | None:
    """One panel per metric over training steps, from metrics.jsonl."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    keys = [k for k in ("fid", "kid", "is", "modes", "high_quality", "reverse_kl", "precision", "recall")
            if any(k in r for r in records)]  # fmt: skip
    if not records or not keys:
        return None
    fig = _figure(figsize=(3.2 * len(keys), 3), dpi=100)
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in records if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ax.set_title(k)
        ax.set_xlabel("generator step")
    fig.suptitle(f"extractor {records[-1].get('extractor')}, {records[-1].get('n_fake')} samples", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path)
    return Path(out_path)
