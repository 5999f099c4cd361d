"""Data sources. Every source is an infinite, seeded stream whose whole state is one integer: the
number of samples drawn so far. The sample at global position p depends only on (seed, p), so a
resumed run continues the identical sequence, whatever the worker count.

Images come out as float tensors [N, C, H, W] in [-1, 1]; 2-D sets as [N, 2].
"""

from __future__ import annotations

from gandist.data import digits, folder, synthetic  # noqa: F401,E402  (registration side effects)
from gandist.data.base import DATASETS, DataSource, build_dataset  # noqa: F401
