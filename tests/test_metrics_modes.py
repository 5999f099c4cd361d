import math

import numpy as np
import pytest
import torch

from gandist.data import DATASETS
from gandist.metrics import mode_coverage


def test_perfect_ring_samples():
    ring = DATASETS["ring"]
    x = ring.modes.repeat(10, 1)  # 10 exact copies of each centre
    r = mode_coverage(x, "ring")
    assert r == {"modes": 8, "high_quality": 1.0, "reverse_kl": pytest.approx(0.0, abs=1e-12), "n_modes": 8}


def test_single_mode_collapse():
    x = np.tile([[0.0, 1.0]], (100, 1)) + 0.005
    r = mode_coverage(x, "ring")
    assert r["modes"] == 1 and r["high_quality"] == 1.0
    assert r["reverse_kl"] == pytest.approx(math.log(8))


def test_threshold_is_three_standard_deviations():
    # ring std 0.01: 0.029 from a centre is high quality, 0.031 is not
    x = torch.tensor([[1.029, 0.0], [0.0, 1.031], [0.0, 0.0]], dtype=torch.float64)
    r = mode_coverage(x, "ring")
    assert r["high_quality"] == pytest.approx(1 / 3)
    assert r["modes"] == 1


def test_known_histogram_reverse_kl():
    modes = DATASETS["grid"].modes
    # 3 samples on mode 0, 1 on mode 1, plus 4 far-away samples that do not count
    x = torch.cat([modes[[0, 0, 0, 1]], torch.full((4, 2), 10.0, dtype=torch.float64)])
    r = mode_coverage(x, "grid")
    p = np.array([0.75, 0.25])
    assert r["modes"] == 2 and r["high_quality"] == 0.5
    assert r["reverse_kl"] == pytest.approx(float(np.sum(p * np.log(p * 25))))


def test_no_high_quality_sample_is_worst_case():
    r = mode_coverage(np.zeros((5, 2)) + 0.5, "ring")
    assert r["modes"] == 0 and r["high_quality"] == 0.0 and r["reverse_kl"] == pytest.approx(math.log(8))
