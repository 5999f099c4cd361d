"""Class and mode coverage against hand-built sample sets with known answers, computed in float64."""

import math

import numpy as np
import pytest
import torch
from conftest import ConstantG

from gandist.config import ConfigError, load_config
from gandist.errors import UserError
from gandist.metrics.coverage import class_coverage, histogram_stats, stacked_modes


def _one_hot(digits: np.ndarray, k: int = 10) -> np.ndarray:
    return np.eye(k)[digits]


def test_all_1000_modes_once_is_full_coverage_and_zero_kl():
    combos = np.array([(m // 100, m // 10 % 10, m % 10) for m in range(1000)])
    probs = np.stack([_one_hot(combos[:, c]) for c in range(3)], axis=1)  # [1000, 3, 10]
    out = stacked_modes(probs)
    assert out["modes"] == 1000 and out["n_modes"] == 1000
    assert out["modes_kl"] == 0.0
    assert out["modes_confident"] == 1.0


def test_one_mode_only_is_one_mode_and_kl_log_1000():
    probs = np.zeros((500, 3, 10))
    probs[:, 0, 7], probs[:, 1, 3], probs[:, 2, 0] = 1.0, 1.0, 1.0
    out = stacked_modes(probs)
    assert out["modes"] == 1
    assert out["modes_kl"] == pytest.approx(math.log(1000), rel=1e-15)


def test_known_histogram_kl_and_confident_share():
    # modes 0 x4, 1 x2, 2 x2 of M = 16: p = (1/2, 1/4, 1/4), KL = 1/2 log(8) + 2 (1/4) log(4)
    out = histogram_stats([0, 0, 0, 0, 1, 1, 2, 2], 16)
    assert out["covered"] == 3
    expected = 0.5 * math.log(0.5 * 16) + 2 * 0.25 * math.log(0.25 * 16)
    assert out["kl"] == pytest.approx(expected, rel=1e-14)
    # digits: classes 3, 3, 5 read with top probability 0.95, 0.5, 0.91 -> 2 of 3 confident
    probs = np.full((3, 10), 0.0)
    for i, (c, top) in enumerate([(3, 0.95), (3, 0.5), (5, 0.91)]):
        probs[i] = (1 - top) / 9
        probs[i, c] = top
    out = class_coverage(probs)
    assert out["classes"] == 2 and out["n_classes"] == 10
    assert out["classes_kl"] == pytest.approx(
        (2 / 3) * math.log(20 / 3) + (1 / 3) * math.log(10 / 3), rel=1e-14
    )
    assert out["classes_confident"] == pytest.approx(2 / 3, rel=1e-15)


def test_stacked_confidence_needs_every_channel():
    probs = np.full((2, 3, 10), 0.01)
    probs[:, :, 4] = 0.91
    probs[1, 2] = 0.1  # the third channel of the second sample is unreadable
    assert stacked_modes(probs)["modes_confident"] == 0.5


def test_channel_marginals_of_the_joint_are_the_channel_probabilities():
    from gandist.metrics.stacked import channel_probs

    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 3, 10, generator=gen, dtype=torch.float64), dim=2)
    joint = (p[:, 0, :, None, None] * p[:, 1, None, :, None] * p[:, 2, None, None, :]).reshape(5, 1000)
    torch.testing.assert_close(channel_probs(joint), p, rtol=1e-14, atol=1e-16)


def _stacked(*overrides):
    return load_config(
        None, ["data.name=stacked_digits", "data.resolution=16", "data.batch_size=8", *overrides]
    )


@pytest.mark.parametrize("res", [8, 64])
def test_stacked_digits_at_a_resolution_the_classifier_cannot_read(res):
    with pytest.raises(ConfigError) as e:
        _stacked(f"data.resolution={res}")
    assert f"data.resolution={res}: the digits classifier" in str(e.value) and "\n" not in str(e.value)


def test_modes_on_data_without_modes_is_one_line():
    from gandist.metrics.entries import check_request

    with pytest.raises(UserError) as e:
        check_request(["modes"], "images", "digits", True)
    msg = str(e.value)
    assert "needs data with known modes" in msg and "data.name=digits has none" in msg and "classes" in msg
    assert "\n" not in msg
    with pytest.raises(UserError, match="data.name=folder has none"):
        check_request(["modes"], "images", "folder", True)


def test_stacked_stream_is_keyed_by_position_and_shards_equal_one_process():
    from gandist.data import build_dataset

    cfg = _stacked()
    one = build_dataset(cfg.data, seed=5)
    whole = one.next_batch(8)
    parts = []
    for rank in range(2):
        src = build_dataset(cfg.data, seed=5)
        src.shard(rank, 2)
        parts.append(src.next_batch(4))
        assert src.position == 8
    assert torch.equal(torch.cat([p.x for p in parts]), whole.x)
    assert torch.equal(torch.cat([p.labels for p in parts]), whole.labels)
    assert torch.equal(one.peek(3, position=2), whole.x[2:5])
    # the channels are the digits the mode says: 100 r + 10 g + b, each channel a digit image
    from gandist.data.digits import load_digits_tensor

    images, labels = load_digits_tensor(16)
    idx = one.indices(0, 8)
    assert torch.equal(whole.labels, labels[idx[:, 0]] * 100 + labels[idx[:, 1]] * 10 + labels[idx[:, 2]])
    assert torch.equal(whole.x[:, 1:2], images[idx[:, 1]])
    # 30,000 draws cover every one of the 1000 modes, near-uniformly (chi-square with 999 dof ~ 999 +- 45)
    lab = one._draw_batch(0, 30_000).labels
    counts = torch.bincount(lab, minlength=1000).double()
    chi2 = float(((counts - 30.0) ** 2 / 30.0).sum())
    assert (counts > 0).all() and chi2 < 999 + 5 * 45


@pytest.mark.slow
def test_classifier_reads_the_real_stacked_digits():
    """The extractor's modes agree with the data's own labels on real stacked digits (the classifier is
    98.7% right per digit on held-out digits, so ~96% per triple), and the mode metric counts them."""
    from gandist.data import build_dataset
    from gandist.metrics.coverage import stacked_modes
    from gandist.metrics.extractors import build_extractor
    from gandist.metrics.stacked import channel_probs

    cfg = _stacked("data.resolution=32")
    data = build_dataset(cfg.data, seed=1)
    batch = data._draw_batch(0, 600)
    ex = build_extractor("auto", "images", "stacked_digits")
    feats, probs = ex(batch.x)
    assert feats.shape == (600, 384) and probs.shape == (600, 1000)
    agree = float((probs.argmax(1) == batch.labels).double().mean())
    assert agree > 0.9
    out = stacked_modes(channel_probs(probs))
    assert out["modes"] == histogram_stats(probs.argmax(1), 1000)["covered"]
    assert out["modes_confident"] > 0.8


@pytest.mark.slow
def test_evaluate_reports_one_class_and_one_mode_for_a_constant_generator():
    from gandist.data.digits import load_digits_tensor
    from gandist.metrics.evaluate import evaluate

    images, labels = load_digits_tensor(16)
    digits = load_config(None, ["data.name=digits", "data.resolution=16", "model.z_dim=8"])
    res = evaluate(ConstantG(images[0]), digits, "images", ["classes"], n=64, extractor="digits")
    assert res["classes"] == 1 and res["n_classes"] == 10
    assert res["classes_kl"] == pytest.approx(math.log(10), rel=1e-12)
    stacked = _stacked("model.z_dim=8")
    image = torch.cat([images[0], images[1], images[2]])  # one stacked image: a single mode
    res = evaluate(ConstantG(image), stacked, "images", ["modes"], n=64, extractor="auto")
    assert res["modes"] == 1 and res["n_modes"] == 1000
    assert res["modes_kl"] == pytest.approx(math.log(1000), rel=1e-12)
    assert res["extractor"].endswith("-stacked")
