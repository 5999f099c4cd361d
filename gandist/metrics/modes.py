"""Mode coverage on the 2-D mixtures (the VEEGAN / PacGAN protocol).

A sample is *high quality* when it lies within 3 standard deviations of its nearest mode centre; a mode
is *captured* when at least one high-quality sample is nearest to it; `reverse_kl` is
KL(histogram of high-quality samples over modes || uniform) in nats (0 when every mode gets the same
share, log(M) when one mode gets everything).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gandist.metrics._util import as_numpy


def mode_coverage(
    samples: Any, dataset: str = "ring", modes: Any = None, std: float | None = None
) -> dict[str, float]:
    """samples: [N, 2]. dataset: 'ring' | 'grid' (or pass explicit `modes` [M, 2] and `std`).
    Returns {'modes': captured count, 'high_quality': fraction in [0, 1], 'reverse_kl': nats, 'n_modes': M}."""
    if modes is None or std is None:
        from gandist.data import DATASETS

        cls = DATASETS.get(dataset)
        if getattr(cls, "std", None) is None:  # a 2-D mixture declares its mode centres and their spread
            mixtures = " or ".join(f"'{n}'" for n, c in DATASETS.items() if getattr(c, "std", None) is not None)
            raise ValueError(f"mode_coverage: dataset must be {mixtures}, got '{dataset}'")
        modes, std = cls.modes, cls.std
    x, m = as_numpy(samples, "samples"), as_numpy(modes, "modes")
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"mode_coverage expects samples of shape [N, 2], got {list(x.shape)}")
    d = np.linalg.norm(x[:, None, :] - m[None, :, :], axis=2)  # [N, M]
    nearest = d.argmin(axis=1)
    hq = d[np.arange(len(x)), nearest] <= 3.0 * std
    counts = np.bincount(nearest[hq], minlength=len(m)).astype(np.float64)
    total = counts.sum()
    if total > 0:
        p = counts / total
        nz = p > 0
        reverse_kl = float(np.sum(p[nz] * np.log(p[nz] * len(m))))
    else:
        reverse_kl = math.log(len(m))  # no high-quality sample at all: the worst case
    return {
        "modes": int((counts > 0).sum()),
        "high_quality": float(hq.mean()) if len(x) else 0.0,
        "reverse_kl": reverse_kl,
        "n_modes": len(m),
    }
