"""Data sources. Every source is an infinite, seeded stream whose whole state is one integer: the
number of samples drawn so far. The sample at global position p depends only on (seed, p), so a
resumed run continues the identical sequence, whatever the worker count. Random augmentation follows the
same rule: a flip (`data.mirror`) or CycleGAN's random resize-and-crop window (`data.preprocess`, `jitter.py`)
is drawn from (seed, p) as well, so ranks and resume see the same pixels.

Sources yield a `Batch`: images as float tensors [N, C, H, W] in [-1, 1] or 2-D points [N, 2], with
class labels where the data has them. Each source's config class lives in `config.py` (torch-free);
this package imports torch only when a source is first built.
"""

from __future__ import annotations

from typing import Any

_LAZY = ("DATASETS", "DataSource", "Batch", "build_dataset")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from gandist.data import base

        base.load_sources()
        return getattr(base, name)
    raise AttributeError(f"module 'gandist.data' has no attribute '{name}'")
