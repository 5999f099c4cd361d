"""Class and mode coverage of generated images, read by gandist's digits classifier.

Digits: each sample's class is the classifier's argmax over the 10 digits. Stacked digits (1000 modes):
each channel is classified on its own and the mode is 100 r + 10 g + b (the Stacked MNIST protocol of
Metz et al. 2017, VEEGAN and PacGAN: modes with at least one sample among 26,000, and the KL divergence
of the mode histogram to the uniform one). Every sample counts toward the histogram, as in that protocol;
`confident` reports the share the classifier reads with probability >= CONFIDENT (on every channel), so a
generator of unreadable blobs that happen to spread over the argmaxes shows as such.

    covered    modes (classes) with at least one sample, of `n_modes`
    kl         KL(histogram || uniform) = sum_m p_m log(p_m M), nats: 0 when every mode has the same share,
               log M when one mode has everything
    confident  share of samples read with probability >= CONFIDENT
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gandist.metrics._util import as_numpy

CONFIDENT = 0.9  # top-class probability that counts as a confident reading (per channel)
PROTOCOL_SAMPLES = 26_000  # generated samples of the VEEGAN / PacGAN Stacked MNIST protocol


def histogram_stats(modes: Any, n_modes: int) -> dict[str, float]:
    """modes: [N] integer mode of each sample in [0, n_modes) -> covered count and KL to uniform (float64)."""
    m = as_numpy(modes, "modes").astype(np.int64).reshape(-1)
    if m.size and (m.min() < 0 or m.max() >= n_modes):
        raise ValueError(f"mode indices must lie in [0, {n_modes}), got [{m.min()}, {m.max()}]")
    counts = np.bincount(m, minlength=n_modes).astype(np.float64)
    if not m.size:
        return {"covered": 0, "kl": math.log(n_modes)}
    p = counts / counts.sum()
    nz = p > 0
    return {"covered": int(nz.sum()), "kl": float(np.sum(p[nz] * np.log(p[nz] * n_modes)))}


def class_coverage(probs: Any) -> dict[str, float]:
    """probs: [N, K] class probabilities of each sample (a classifier's softmax) -> classes covered of K,
    KL of the class histogram to uniform, confident share."""
    p = as_numpy(probs, "probs").astype(np.float64)
    if p.ndim != 2:
        raise ValueError(f"class_coverage expects probabilities [N, K], got {list(p.shape)}")
    stats = histogram_stats(p.argmax(1), p.shape[1])
    return {"classes": stats["covered"], "classes_kl": stats["kl"], "n_classes": p.shape[1],
            "classes_confident": float((p.max(1) >= CONFIDENT).mean()) if len(p) else 0.0}  # fmt: skip


def stacked_modes(channel_probs: Any) -> dict[str, float]:
    """channel_probs: [N, 3, 10] digit probabilities of each channel (R, G, B) -> modes covered of 1000,
    KL of the mode histogram to uniform, share of samples read confidently on all three channels."""
    p = as_numpy(channel_probs, "channel_probs").astype(np.float64)
    if p.ndim != 3 or p.shape[1] != 3:
        raise ValueError(f"stacked_modes expects per-channel probabilities [N, 3, K], got {list(p.shape)}")
    k = p.shape[2]
    digits = p.argmax(2)  # [N, 3]
    stats = histogram_stats(digits[:, 0] * k * k + digits[:, 1] * k + digits[:, 2], k**3)
    confident = (p.max(2) >= CONFIDENT).all(1)
    return {"modes": stats["covered"], "modes_kl": stats["kl"], "n_modes": k**3,
            "modes_confident": float(confident.mean()) if len(p) else 0.0}  # fmt: skip
