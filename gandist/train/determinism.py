"""Deterministic CPU runs (`train.deterministic`): what bit-exact resume needs and nothing more.

- Deterministic algorithms on: every op picks a run-to-run reproducible kernel (or raises).
- No filling of uninitialised memory: with deterministic algorithms on, PyTorch by default fills every
  `torch.empty` with NaN (integers with their maximum) so a kernel that reads memory it never wrote shows up
  as NaN. Nothing in a training step reads such memory (the resume tests compare whole runs bit for bit), and
  the fills cost: StyleGAN 32 px, width 64, batch 16, R1 every step, 2 threads: 1,235 `aten::fill_` calls
  per step with it, 13.6 % of self CPU time in torch.profiler (issue 31).
- The inductor import stays: `torch.use_deterministic_algorithms` imports `torch._inductor.config` (18.7 s
  cumulative under `python -X importtime` on 2 cores at load ~25), but in torch 2.14 the first
  `Optimizer.add_param_group` imports `torch._dynamo`, which imports `torch._inductor.config` itself, so any
  run that trains pays it whatever this module does; bypassing the public call would buy nothing.
"""

from __future__ import annotations

import torch
import torch.utils.deterministic


def set_deterministic(mode: bool = True) -> None:
    """torch.use_deterministic_algorithms(mode) without the NaN fill of uninitialised memory."""
    torch.use_deterministic_algorithms(mode)
    torch.utils.deterministic.fill_uninitialized_memory = False
