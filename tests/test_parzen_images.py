"""Parzen-window log-likelihood on images (Goodfellow et al. 2014): pixels in [0, 1], sigma chosen on a
validation half of the reals, the log-likelihood reported on the other half; against a direct float64
log-mean-exp written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TensorSource

from gandist.metrics.evaluate import evaluate_sources
from gandist.metrics.extractors import ModuleExtractor


def log_mean_exp_parzen(samples: np.ndarray, test: np.ndarray, sigma: float) -> np.ndarray:
    """log (1/n) sum_i N(x; s_i, sigma^2 I), one row per test point, in float64 with the max taken out."""
    d = samples.shape[1]
    e = np.array([-((x - samples) ** 2).sum(1) / (2 * sigma**2) for x in test])
    m = e.max(1, keepdims=True)
    return (m[:, 0] + np.log(np.exp(e - m).mean(1))) - d / 2 * np.log(2 * np.pi * sigma**2)


def test_parzen_on_images_is_the_published_estimate():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 1, 4, 4, generator=g) * 2 - 1
    fake = (real[:25] + 0.2 * torch.randn(25, 1, 4, 4, generator=g)).clamp(-1, 1)
    ex = ModuleExtractor(torch.nn.Flatten())
    res = evaluate_sources(TensorSource(fake), TensorSource(real), ["parzen"], ex)
    s = ((fake.double() + 1) / 2).reshape(25, -1).numpy()
    r = ((real.double() + 1) / 2).reshape(40, -1).numpy()
    perm = np.random.default_rng(0).permutation(40)  # the metric's seeded split: validation, then test
    val, test = r[perm[:20]], r[perm[20:]]
    grid = np.logspace(-2, 1, 31)
    sigma = grid[int(np.argmax([log_mean_exp_parzen(s, val, sg).mean() for sg in grid]))]
    want = log_mean_exp_parzen(s, test, sigma)
    assert res["parzen_sigma"] == pytest.approx(sigma, rel=1e-12)
    assert res["parzen_ll"] == pytest.approx(want.mean(), rel=1e-9)
    assert res["parzen_se"] == pytest.approx(want.std(ddof=1) / np.sqrt(20), rel=1e-9)
    assert res["parzen_space"] == "pixels in [0, 1]"
    # a generator that copies the reals scores higher than one that draws noise
    noise = torch.rand(25, 1, 4, 4, generator=g) * 2 - 1
    worse = evaluate_sources(TensorSource(noise), TensorSource(real), ["parzen"], ex)
    assert worse["parzen_ll"] < res["parzen_ll"]


def test_a_growing_g_is_compared_at_the_data_resolution():
    """A growing G draws below data.resolution until its last stage: pixel-space metrics (Parzen, nearest
    neighbours) see its images nearest-upsampled to the reals' size, as its sample grids show them."""
    from gandist.metrics.entries import at_data_resolution

    fake, real = torch.randn(3, 3, 4, 4), torch.randn(5, 3, 16, 16)
    up = at_data_resolution(fake, real)
    assert torch.equal(up, fake.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))
    assert torch.equal(at_data_resolution(real[:2], real), real[:2])
    points = torch.randn(7, 2)
    assert at_data_resolution(points, torch.randn(9, 2)) is points
    with pytest.raises(ValueError, match="do not scale"):
        at_data_resolution(torch.randn(1, 3, 5, 5), real)


@pytest.mark.slow  # a tiny StyleGAN growing 4 -> 16 px, evaluated every step: ~40 s on a loaded 2-core machine
def test_periodic_parzen_runs_through_a_growing_run(tmp_path, stylegan_cfg):
    """Before, the first periodic Parzen of a growing run stopped it with numpy's matmul shape error (a 4x4 G
    against 16x16 reals)."""
    import json

    from conftest import make_trainer

    cfg = stylegan_cfg("train.kimg=0.1", "metrics.names=parzen", "metrics.n=16", "metrics.every=4")
    t = make_trainer(cfg, tmp_path / "run")
    t.train(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 2 and all(np.isfinite(r["parzen_ll"]) for r in rows)
