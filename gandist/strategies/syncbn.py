"""Batch norm over the global batch of all ranks, on any device and backend (gloo included).

torch's `nn.SyncBatchNorm` runs only on GPUs; data-parallel training here also runs on CPUs (gloo), and
W ranks must reproduce one process with the same global batch. `SyncedBatchNorm` computes the batch
statistics exactly as `nn.BatchNorm*` does on the concatenated global batch, in two passes (the mean,
then the mean squared deviation from it, as the one-process kernel does), each one all-reduce of a
[C] sum that autograd differentiates (`_AllReduceSum`: its backward is the all-reduce of the incoming
gradients). Running statistics are updated with the global statistics
(unbiased variance, as `nn.BatchNorm*`), so they agree on every rank. In eval mode, or outside a
process group, it is plain batch norm.

Not for a network differentiated twice (R1, WGAN-GP): batch norm mixes samples, which those penalties
assume independent, in one process as much as in several (use layer norm in such a D).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's input is the sum over ranks of the output gradients
    (each rank's output is the same sum, so each contributes to every input)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


class SyncedBatchNorm(_BatchNorm):
    """`nn.BatchNorm1d/2d/3d` with training statistics over all ranks' samples. Input [N, C, ...]."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input [N, C, ...], got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        count = torch.tensor([x.numel() // x.shape[1]], dtype=xf.dtype, device=x.device)
        sums = _all_reduce_sum(torch.cat([xf.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = _all_reduce_sum(centred.square().sum(dims)) / n  # biased, as BN normalises
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every `nn.BatchNorm*` inside `module` (in place) by a `SyncedBatchNorm` holding the same
    parameters and buffers; returns `module` (or the replacement, when `module` itself is batch norm)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncedBatchNorm):
        new = SyncedBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)  # fmt: skip
        new.load_state_dict(module.state_dict())
        new.to(next(module.buffers(), torch.zeros(())).device)
        new.train(module.training)
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new
    for name, child in module.named_children():
        replaced = convert_sync_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
