"""Inception Score split conventions: torch-fidelity's shuffled splits (the default) and improved-gan's
consecutive ones, through the evaluation pipeline, against the published formula written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandist.cli import main
from gandist.metrics.evaluate import evaluate_sources
from gandist.metrics.extractors import Extractor
from gandist.metrics.sources import Source


class Points(Source):
    def __init__(self, x):
        self.x, self.n, self.kind = x, len(x), "images"

    def batches(self, start, stop, batch):
        for a in range(start, stop, batch):
            yield self.x[a : min(stop, a + batch)]


class LinearClassifier(Extractor):
    name, dim, has_probs, classes = "linear", 3, True, 5

    def __init__(self):
        self.W = torch.randn(3, 5, generator=torch.Generator().manual_seed(0)) * 2

    def extract(self, x):
        return x.float(), x.float() @ self.W


def improved_gan_is(p: np.ndarray, splits: int, order: np.ndarray) -> float:
    """openai/improved-gan's inception_score.py on the rows in `order`: split i is rows
    [i N // splits, (i + 1) N // splits), score exp(mean_x KL(p(y|x) || p(y))), averaged over splits."""
    p = p[order]
    scores = []
    for i in range(splits):
        part = p[i * len(p) // splits : (i + 1) * len(p) // splits]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


def test_shuffled_and_consecutive_splits():
    x = torch.randn(103, 3, generator=torch.Generator().manual_seed(1))
    ex = LinearClassifier()
    p = torch.softmax((x.double() @ ex.W.double()), 1).numpy()
    shuffled = evaluate_sources(Points(x), None, ["is"], ex)
    consecutive = evaluate_sources(Points(x), None, ["is"], ex, is_order="consecutive")
    perm = np.random.RandomState(2020).permutation(103)  # torch-fidelity's default rng_seed
    assert shuffled["is"] == pytest.approx(improved_gan_is(p, 10, perm), rel=1e-5)
    assert consecutive["is"] == pytest.approx(improved_gan_is(p, 10, np.arange(103)), rel=1e-5)
    assert shuffled["is"] != pytest.approx(consecutive["is"], rel=1e-6)
    assert (shuffled["is_split_order"], consecutive["is_split_order"]) == ("shuffled", "consecutive")


def test_unknown_split_order_is_one_line(capsys):
    assert main(["eval", "nowhere", "--metrics", "is", "--is-splits", "halves"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--is-splits" in err[0] and "shuffled" in err[0], err
