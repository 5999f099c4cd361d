"""R1 paid every step (phase Dboth) differentiates D's main pass on the reals instead of running D on them a
second time. Its gradients must be those of the two-pass computation (float64), and it must save that pass."""

import pytest
import torch

from gandist.config import load_config
from gandist.data.base import Batch
from gandist.models import build_networks
from gandist.objectives.base import Phase, PhaseContext, build_objective


def _objective(loss_keys, model="stylegan"):
    widths = {
        "stylegan": ["model.z_dim=8", "model.w_dim=8", "model.mapping_width=8", "model.fmap_max=8"],
        "dcgan": ["model.z_dim=8", "model.g_width=8", "model.d_width=8"],
    }[model]
    cfg = load_config(None, ["name=r1", f"model.name={model}", *widths, "data.name=procedural",
                             "data.resolution=8", "data.batch_size=4", *loss_keys])  # fmt: skip
    torch.manual_seed(0)
    nets = {k: v.double() for k, v in build_networks(cfg.model, (3, 8, 8), "images").items()}
    return build_objective("classic", cfg, nets, "images")


def _d_grads(obj, reuse: bool, real, fake):
    obj.reuse_reals = reuse
    obj._fakes = lambda ctx: fake  # the same fakes for both (G's noise draws would differ otherwise)
    for p in obj.D.parameters():
        p.grad = None
    calls = []
    hook = obj.D.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    ctx = PhaseContext(step=0, gain=1.0, generator=torch.Generator().manual_seed(3), device=torch.device("cpu"),
                       z_dim=8, batch_size=real.shape[0])  # fmt: skip
    try:
        res = obj.accumulate(Phase("Dboth", "D", ("D",)), Batch(real), ctx)
    finally:
        hook.remove()
    return [None if p.grad is None else p.grad.clone() for p in obj.D.parameters()], res, len(calls)


@pytest.mark.parametrize(
    "loss_keys,model",
    [
        (["loss.name=nonsaturating", "loss.r1_gamma=10", "loss.reg_interval=1"], "stylegan"),
        (["loss.name=nonsaturating", "loss.r1_gamma=10", "loss.reg_interval=1", "loss.drift=0.001"], "dcgan"),
    ],
)
def test_r1_from_the_main_pass_equals_two_passes(loss_keys, model):
    obj = _objective(loss_keys, model)
    g = torch.Generator().manual_seed(1)
    real = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64).tanh()
    fake = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64).tanh()
    two, res2, calls2 = _d_grads(obj, False, real, fake)
    one, res1, calls1 = _d_grads(obj, True, real, fake)
    assert (calls2, calls1) == (3, 2), "reuse runs D on the reals once (main pass), not twice"
    assert res2.stats["r1"] > 0
    torch.testing.assert_close(res1.stats["r1"], res2.stats["r1"], rtol=1e-12, atol=0)
    torch.testing.assert_close(res1.loss, res2.loss, rtol=1e-12, atol=0)
    assert [a is None for a in one] == [b is None for b in two] and sum(a is not None for a in one) >= 4
    for a, b in zip(one, two):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and the penalty's gradient is in there: without R1 the gradients differ
    obj.penalties = ()
    plain, _, _ = _d_grads(obj, False, real, fake)
    assert max((a - b).abs().max().item() for a, b in zip(plain, two) if a is not None) > 1e-6


def test_reuse_stays_off_under_autocast_and_compile():
    obj = _objective(["loss.name=nonsaturating", "loss.r1_gamma=10", "loss.reg_interval=1"])
    real = torch.zeros(4, 3, 8, 8, dtype=torch.float32)
    ctx = PhaseContext(step=0, gain=1.0, generator=torch.Generator(), device=torch.device("cpu"), z_dim=8,
                       batch_size=4)  # fmt: skip
    assert obj._reuses_reals(real, ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the main pass is bf16, R1 must be fp32
        assert not obj._reuses_reals(real, ctx)
    assert not obj._reuses_reals(real.bfloat16(), ctx)
    obj.D_penalty = torch.nn.Identity()  # a compiled D: the penalty runs through another module
    assert not obj._reuses_reals(real, ctx)
