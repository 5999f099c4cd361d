"""RpGAN + R1 + R2 against float64 formulas, and PacGAN's packing against a D fed by hand."""

import pytest
import torch
from torch import nn

from gandist.config import ConfigError, load_config
from gandist.losses import build_loss, r2_penalty
from gandist.objectives.config import ClassicLoss

REAL = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.2, 7.0], dtype=torch.float64)
FAKE = torch.tensor([-1.5, 0.3, -4.0, 1.0, 0.0, -30.0], dtype=torch.float64)


def _softplus(x):
    return torch.log(1 + torch.exp(x))  # log(1 + e^x), written out


def test_rpgan_losses_and_gradients_match_the_pairing_formula():
    rp = build_loss(ClassicLoss(name="rpgan"))
    r, f = REAL.clone().requires_grad_(True), FAKE.clone().requires_grad_(True)
    d = rp.d_loss(r, f)
    assert d.item() == pytest.approx(_softplus(FAKE - REAL).mean().item(), rel=1e-12)
    d.backward()
    # d/dr_i softplus(f_i - r_i) / N = -sigmoid(f_i - r_i) / N, and the opposite for f_i
    s = 1 / (1 + torch.exp(-(FAKE - REAL)))
    torch.testing.assert_close(r.grad, -s / len(REAL), rtol=1e-12, atol=0)
    torch.testing.assert_close(f.grad, s / len(REAL), rtol=1e-12, atol=0)

    r, f = REAL.clone().requires_grad_(True), FAKE.clone().requires_grad_(True)
    g = rp.g_loss(f, r)
    assert g.item() == pytest.approx(_softplus(REAL - FAKE).mean().item(), rel=1e-12)
    g.backward()
    s = 1 / (1 + torch.exp(-(REAL - FAKE)))
    torch.testing.assert_close(f.grad, -s / len(REAL), rtol=1e-12, atol=0)
    # the pairing is one to one: shifting every D output by a constant changes nothing
    assert rp.d_loss(REAL + 5, FAKE + 5).item() == pytest.approx(d.item(), rel=1e-12)


def test_rpgan_generator_loss_needs_the_reals():
    with pytest.raises(ValueError, match="pairs each fake with a real"):
        build_loss(ClassicLoss(name="rpgan")).g_loss(FAKE)


class _TanhD(nn.Module):
    """D(x) = v . tanh(A x): grad_x D = A^T (v * (1 - tanh(A x)^2)), known in closed form."""

    def __init__(self, a: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.a, self.v = nn.Parameter(a), nn.Parameter(v)

    def forward(self, x):
        return torch.tanh(x.flatten(1) @ self.a.T) @ self.v


def test_r2_penalty_and_its_weight_gradient_match_float64_closed_form():
    gen = torch.Generator().manual_seed(3)
    a, v = (
        torch.randn(5, 7, generator=gen, dtype=torch.float64),
        torch.randn(5, generator=gen, dtype=torch.float64),
    )
    fake = torch.randn(9, 7, generator=gen, dtype=torch.float64)

    def closed_form(a, v):
        h = torch.tanh(fake @ a.T)  # [9, 5]
        grad = (v * (1 - h**2)) @ a  # [9, 7]
        return grad.square().sum(1).mean()

    a_ref, v_ref = a.clone().requires_grad_(True), v.clone().requires_grad_(True)
    expected = closed_form(a_ref, v_ref)
    expected.backward()
    D = _TanhD(a.clone(), v.clone())
    got = r2_penalty(D, fake.requires_grad_(True))
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    got.backward()
    torch.testing.assert_close(D.a.grad, a_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(D.v.grad, v_ref.grad, rtol=1e-10, atol=1e-12)
    assert fake.grad is None  # the penalty never reaches G's samples


def _dcgan(*overrides):
    base = [
        "model.name=dcgan",
        "model.z_dim=8",
        "model.g_width=8",
        "model.d_width=8",
        "data.name=digits",
        "data.resolution=8",
        "data.batch_size=8",
    ]
    return load_config(None, base + list(overrides))


def test_packed_d_equals_a_d_fed_the_concatenated_samples_by_hand():
    from gandist.models.base import build_networks

    cfg = _dcgan("model.pack=3", "model.d_norm=none", "data.batch_size=9")
    torch.manual_seed(0)
    D = build_networks(cfg.model, (1, 8, 8), "images")["D"].double()
    x = torch.randn(9, 1, 8, 8, dtype=torch.float64)
    assert D.net[0].in_channels == 3
    by_hand = torch.stack(
        [D.net(torch.cat([x[3 * i], x[3 * i + 1], x[3 * i + 2]])[None]).reshape(()) for i in range(3)]
    )
    torch.testing.assert_close(D(x), by_hand, rtol=0, atol=0)
    feats = D.features(x)
    assert feats.shape[0] == 3
    torch.testing.assert_close(
        feats[1], D.net[: D.n_hidden](torch.cat(list(x[3:6]))[None]).flatten(), rtol=0, atol=0
    )


@pytest.mark.parametrize(
    "overrides, words",
    [
        (("model.pack=3",), "data.batch_size=8 must be divisible by model.pack=3"),
        (
            ("model.pack=2", "data.batch_size=24", "model.minibatch_std=8"),
            "model.minibatch_std=8 groups D's packed inputs, 12",
        ),
        (("model.pack=4", "train.micro_batch=2"), "train.micro_batch=2 must be divisible by model.pack=4"),
        (("model.name=mlp", "loss.feature_matching=1.0"), "loss.feature_matching needs a D"),
    ],
)
def test_bad_packing_is_one_line(overrides, words):
    with pytest.raises(ConfigError) as e:
        _dcgan(*overrides)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_pack_must_divide_the_per_rank_batch():
    from gandist.train.loop import check_world_size

    cfg = _dcgan("model.pack=4", "data.batch_size=8")
    check_world_size(cfg, 2)  # 4 per rank: one pack each
    with pytest.raises(ConfigError, match=r"leaves 2 per rank, not divisible by model.pack=4"):
        check_world_size(_dcgan("model.pack=4", "data.batch_size=16"), 8)
