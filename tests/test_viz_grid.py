"""Sample grids are written without torchvision; their pixels must be torchvision's save_image's."""

import numpy as np
import pytest
import torch
from PIL import Image

from gandist.viz import plot_log, save_grid


@pytest.mark.parametrize(
    "shape,nrow", [((7, 1, 5, 6), 3), ((4, 3, 8, 8), 2), ((1, 3, 4, 4), 1), ((5, 3, 33, 40), 8)]
)
def test_grid_pixels_equal_torchvision(tmp_path, shape, nrow):
    vutils = pytest.importorskip("torchvision.utils")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 0.8
    x[0, 0, 0, 0] = 1.7  # out of range: clamped by both
    ours = save_grid(x, tmp_path / "ours.png", nrow=nrow)
    ref = x.clamp(-1, 1)
    if ref.shape[-1] < 32:  # save_grid's nearest-neighbour upscale of tiny images comes first
        ref = torch.nn.functional.interpolate(ref, scale_factor=-(-32 // ref.shape[-1]), mode="nearest")
    vutils.save_image(
        ref, str(tmp_path / "ref.png"), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2
    )
    a, b = Image.open(ours), Image.open(tmp_path / "ref.png")
    assert a.mode == b.mode and a.size == b.size
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_loss_plot_is_drawn(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(f'{{"step": {i}, "d_loss": {1 / (i + 1)}, "g_loss": {i / 10}, "d_real": 0.5}}\n'
                           for i in range(5)))  # fmt: skip
    out = plot_log(log, tmp_path / "losses.png")
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (360, 1000, 3)  # figsize (10, 3.6) at 100 dpi: two panels
    assert (img != 255).any(axis=2).mean() > 0.01  # something is drawn on the white page
