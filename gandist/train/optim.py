"""Optimizers by name, lazy-regularisation correction, and a step that a non-finite loss skips on the device.

Adam runs fused (one kernel per step on CPU and GPU): its step counters live on the parameters' device, so
no bias correction is read back to the host, and its `found_inf` input skips an update on the device.

Lazy regularisation (StyleGAN2, Sec. 3.1, and its code's `mb_ratio`): when a network's penalty runs in a
phase of its own every N steps, its optimizer takes N + 1 steps where the non-lazy one takes N, so the
learning rate is scaled by c = N / (N + 1) and every exponential-average decay (Adam's betas, RMSprop's
alpha, SGD's momentum) is raised to the power c, which keeps their time constants in steps of data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from gandist.config import OptimConfig
from gandist.registry import register

Builder = Callable[[Iterable[torch.nn.Parameter], OptimConfig, float, float], torch.optim.Optimizer]
OPTIMIZERS: dict[str, Builder] = {}


class AdamEpsInsideSqrt(torch.optim.Optimizer):
    """Adam with epsilon inside the square root (Salimans et al. 2016's Theano `nn.adam_updates`, openai/
    improved-gan): m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2, t <- t + 1, then
    p <- p - lr (m / (1 - b1^t)) / sqrt(v / (1 - b2^t) + eps). `torch.optim.Adam` divides by sqrt(v_hat) + eps.
    The step count is a tensor on the parameter's device, so a guarded step restores it like the moments."""

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
                p.sub_(lr * m_hat / (v_hat + eps).sqrt())


@register(OPTIMIZERS, "adam")
def adam(params, cfg: OptimConfig, lr: float, c: float = 1.0) -> torch.optim.Optimizer:
    if cfg.eps_inside_sqrt:
        return AdamEpsInsideSqrt(params, lr=lr * c, betas=(cfg.beta1**c, cfg.beta2**c), eps=cfg.eps)
    return torch.optim.Adam(params, lr=lr * c, betas=(cfg.beta1**c, cfg.beta2**c), eps=cfg.eps, fused=True)


@register(OPTIMIZERS, "rmsprop")
def rmsprop(params, cfg: OptimConfig, lr: float, c: float = 1.0) -> torch.optim.Optimizer:
    params = list(params)
    # capturable keeps the step counter on a GPU, so the guarded step never moves a flag to the host
    on_gpu = bool(params) and params[0].is_cuda
    return torch.optim.RMSprop(params, lr=lr * c, alpha=cfg.alpha**c, eps=cfg.eps, capturable=on_gpu)


@register(OPTIMIZERS, "sgd")
def sgd(params, cfg: OptimConfig, lr: float, c: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr * c, momentum=cfg.momentum**c)


def lazy_ratio(reg_interval: int) -> float:
    """c = N / (N + 1) for a penalty phase every N steps; 1 when the penalty is paid every step."""
    return reg_interval / (reg_interval + 1) if reg_interval > 1 else 1.0


def build_optimizer(params, cfg: OptimConfig, lr: float, reg_interval: int = 1) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.name](params, cfg, lr, lazy_ratio(reg_interval))


def guarded_step(opt: torch.optim.Optimizer, ok: torch.Tensor) -> None:
    """`opt.step()` where the 0-dim bool tensor `ok` is True; where it is False, parameters and optimizer
    state stay exactly as they were. The flag is never read on the host (no device synchronisation):
    parameters and state are kept aside, stepped, and selected back on the device. Only an optimizer's
    very first step, which creates its state, reads the flag (once per run)."""
    params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
    if not params:
        return
    if opt.defaults.get("fused"):  # the fused kernel skips on the device and undoes its step count
        opt.found_inf = (~ok).to(torch.float32)
        opt.step()
        return
    if any(not opt.state.get(p) for p in params):
        if bool(ok):  # host sync: once, before the state exists
            opt.step()
        return
    with torch.no_grad():
        kept = [p.detach().clone() for p in params]
        kept_state = [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params]
        opt.step()
        for p, old, old_state in zip(params, kept, kept_state):
            p.copy_(torch.where(ok, p, old))
            state = opt.state[p]
            for k, v in old_state.items():
                state[k] = torch.where(ok if v.device == ok.device else ok.cpu(), state[k], v)
