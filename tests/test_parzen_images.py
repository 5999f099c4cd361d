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
