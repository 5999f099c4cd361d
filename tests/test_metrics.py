"""Metrics against independent references: closed forms, direct float64 computations, definitions."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from gandist.metrics import (
    feature_stats,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_stats,
    nearest_indices,
    nearest_neighbours_figure,
    parzen_log_likelihood,
    precision_recall,
    save_stats,
)

rng = np.random.default_rng(0)


def test_fid_against_direct_scipy():
    a, b = rng.normal(size=(500, 6)), rng.normal(loc=0.3, scale=1.4, size=(400, 6)) @ rng.normal(size=(6, 6))
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    sq = scipy.linalg.sqrtm(s1 @ s2).real
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * sq)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-10)
    m1, c1 = feature_stats(torch.tensor(a))
    assert np.allclose(m1, mu1) and np.allclose(c1, s1)


def test_fid_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-12)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-10)


def test_fid_singular_covariances_stay_finite():
    x = rng.normal(size=(5, 10))  # 5 samples in 10 dimensions: rank-deficient covariances
    y = rng.normal(size=(5, 10))
    mu1, s1 = feature_stats(x)
    mu2, s2 = feature_stats(y)
    val = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(val) and val > 0


def test_fid_stats_cache_roundtrip(tmp_path):
    mu, s = rng.normal(size=4), np.eye(4)
    p = save_stats(tmp_path / "ref.npz", mu, s, extractor="digits", n=100)
    mu2, s2, meta = load_stats(p)
    assert np.array_equal(mu, mu2) and np.array_equal(s, s2) and meta == {"extractor": "digits", "n": "100"}


def test_inception_score_extremes():
    k = 10
    confident = np.eye(k)[np.arange(1000) % k]  # one-hot, classes spread uniformly over every split
    mean, std = inception_score(confident, splits=10, shuffle_seed=None)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-9)
    same = np.tile(rng.dirichlet(np.ones(k)), (1000, 1))
    assert inception_score(same, splits=5)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="softmax"):
        inception_score(rng.normal(size=(20, 3)), splits=2)


def test_inception_score_against_definition():
    p = rng.dirichlet(np.ones(7) * 0.3, size=300)
    expected = []
    for part in np.array_split(p, 3):
        py = part.mean(0)
        expected.append(np.exp(np.mean([np.sum(r * np.log(r / py)) for r in part])))
    got = inception_score(torch.tensor(p), splits=3, shuffle_seed=None)
    assert got[0] == pytest.approx(np.mean(expected)) and got[1] == pytest.approx(np.std(expected))


def test_inception_score_and_kid_follow_torch_fidelity():
    """Same splits (shuffled, seed 2020) and subsets as torch-fidelity's own functions, streamed or not."""
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    from gandist.metrics.isc import ISAccumulator

    logits = torch.tensor(rng.normal(size=(53, 11)) * 3)
    ref = isc_features_to_metric(logits, splits=4)
    got = inception_score(torch.softmax(logits, 1), splits=4)
    assert got == pytest.approx((ref["inception_score_mean"], ref["inception_score_std"]), rel=1e-12)
    acc = ISAccumulator(53, 11, splits=4)
    for start in (0, 7, 30):  # uneven batches, any order
        acc.update(logits[start : {0: 7, 7: 30, 30: 53}[start]], start)
    assert acc.score() == pytest.approx(got, rel=1e-12)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(35, 5)) + 0.2
    ref = kid_features_to_metric(torch.tensor(a), torch.tensor(b), kid_subsets=7, kid_subset_size=20,
                                 verbose=False)  # fmt: skip
    got = kernel_inception_distance(a, b, subsets=7, subset_size=20)
    assert got == pytest.approx(
        (ref["kernel_inception_distance_mean"], ref["kernel_inception_distance_std"]), rel=1e-10
    )


def test_kid_unbiased_near_zero_and_positive_when_shifted():
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    same = kernel_inception_distance(a, b, subsets=50, subset_size=200)
    shifted = kernel_inception_distance(a, b + 0.5, subsets=50, subset_size=200)
    assert abs(same[0]) < 3 * same[1] / math.sqrt(50) + 1e-3  # unbiased: zero within its standard error
    assert shifted[0] > 20 * abs(same[0]) and shifted[0] > 0.05


def test_kid_against_direct_definition():
    from gandist.metrics.kid import mmd2_unbiased

    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    k = lambda u, v: (u @ v / 3 + 1) ** 3
    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy)


def test_precision_recall_constructed():
    real = rng.normal(size=(400, 2))
    assert precision_recall(real, real.copy(), k=3) == {"precision": 1.0, "recall": 1.0}
    far = rng.normal(size=(400, 2)) + 100
    pr = precision_recall(real, far, k=3)
    assert pr == {"precision": 0.0, "recall": 0.0}
    # fakes collapsed on one real point: perfectly precise, recall tiny
    collapsed = np.repeat(real[:1], 400, axis=0) + rng.normal(size=(400, 2)) * 1e-6
    pr = precision_recall(real, collapsed, k=3)
    assert pr["precision"] == 1.0 and pr["recall"] < 0.05


def test_precision_recall_brute_force():
    real, fake = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)) + 0.5

    def radii(x, k):
        d = np.linalg.norm(x[:, None] - x[None], axis=2)
        return np.sort(d, axis=1)[:, k]

    rr, rf = radii(real, 3), radii(fake, 3)
    prec = np.mean([any(np.linalg.norm(f - real[j]) <= rr[j] for j in range(30)) for f in fake])
    rec = np.mean([any(np.linalg.norm(r - fake[j]) <= rf[j] for j in range(25)) for r in real])
    got = precision_recall(real, fake, k=3)
    assert got["precision"] == pytest.approx(prec) and got["recall"] == pytest.approx(rec)


def test_parzen_matches_gaussian_density_for_one_centre():
    # One sample at the origin: the estimate is exactly the N(0, sigma^2 I) density.
    test = rng.normal(size=(50, 2))
    sigma = 0.7
    exact = -np.sum(test**2, 1) / (2 * sigma**2) - np.log(2 * np.pi * sigma**2)
    got = parzen_log_likelihood(np.zeros((1, 2)), test, sigma=sigma)
    assert got["mean"] == pytest.approx(exact.mean()) and got["sigma"] == sigma
    assert got["se"] == pytest.approx(exact.std(ddof=1) / np.sqrt(50))


def test_parzen_sigma_selection_prefers_the_truth():
    samples = rng.normal(size=(2000, 1))
    good = parzen_log_likelihood(samples, rng.normal(size=(1000, 1)))
    assert 0.05 < good["sigma"] < 0.8
    bad = parzen_log_likelihood(samples + 3.0, rng.normal(size=(1000, 1)), sigma=good["sigma"])
    assert good["mean"] > bad["mean"] + 1.0


def test_nearest_neighbours(tmp_path):
    real = torch.rand(20, 1, 4, 4) * 2 - 1
    fake = real[[3, 7]] + 0.001
    idx, dist = nearest_indices(fake, real, k=2)
    assert idx[:, 0].tolist() == [3, 7] and np.all(dist[:, 0] < dist[:, 1])
    res = nearest_neighbours_figure(
        fake, real, tmp_path / "nn.png", k=3, fake_feats=fake.flatten(1), real_feats=real.flatten(1)
    )
    assert (tmp_path / "nn.png").is_file() and res["feature_indices"][:, 0].tolist() == [3, 7]
