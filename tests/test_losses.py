"""Each loss against its published formula, computed independently in float64."""

import math

import pytest
import torch
from gandist.kernels import gradient_penalty, gradient_penalty_reference

from gandist.losses import build_loss, r1_penalty, wgan_gp_penalty
from gandist.objectives.config import ClassicLoss

REAL = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.2], dtype=torch.float64)
FAKE = torch.tensor([-1.5, 0.3, -4.0, 1.0, 0.0], dtype=torch.float64)


def _d(x):
    return 1 / (1 + torch.exp(-x))  # D(x) = sigmoid(logit), written out


def loss(name, **kw):
    return build_loss(ClassicLoss(name=name, **kw))


def test_minimax_matches_goodfellow_eq1():
    expected_d = -(torch.log(_d(REAL)).mean() + torch.log(1 - _d(FAKE)).mean())
    expected_g = torch.log(1 - _d(FAKE)).mean()
    assert loss("minimax").d_loss(REAL, FAKE).item() == pytest.approx(expected_d.item(), rel=1e-12)
    assert loss("minimax").g_loss(FAKE).item() == pytest.approx(expected_g.item(), rel=1e-12)


def test_nonsaturating_generator():
    expected = -torch.log(_d(FAKE)).mean()
    assert loss("nonsaturating").g_loss(FAKE).item() == pytest.approx(expected.item(), rel=1e-12)
    assert loss("nonsaturating").d_loss(REAL, FAKE).item() == pytest.approx(
        loss("minimax").d_loss(REAL, FAKE).item()
    )


def test_minimax_is_stable_for_extreme_logits():
    big = torch.tensor([200.0, -200.0], dtype=torch.float64)
    assert math.isfinite(loss("minimax").d_loss(big, -big).item())
    assert loss("minimax").d_loss(big[:1], -big[:1]).item() == pytest.approx(0.0, abs=1e-80)


def test_lsgan_matches_mao_eq9():
    a, b, c = 0.0, 1.0, 1.0
    expected_d = 0.5 * ((REAL - b) ** 2).mean() + 0.5 * ((FAKE - a) ** 2).mean()
    expected_g = 0.5 * ((FAKE - c) ** 2).mean()
    lf = loss("lsgan", lsgan_a=a, lsgan_b=b, lsgan_c=c)
    assert lf.d_loss(REAL, FAKE).item() == pytest.approx(expected_d.item(), rel=1e-12)
    assert lf.g_loss(FAKE).item() == pytest.approx(expected_g.item(), rel=1e-12)
    # the -1/1/0 coding of the paper's Eq. 8
    lf2 = loss("lsgan", lsgan_a=-1.0, lsgan_b=1.0, lsgan_c=0.0)
    assert lf2.g_loss(FAKE).item() == pytest.approx(0.5 * (FAKE**2).mean().item())


def test_wasserstein_and_hinge():
    for name in ("wgan", "wgan-gp"):
        assert loss(name).d_loss(REAL, FAKE).item() == pytest.approx((FAKE.mean() - REAL.mean()).item())
        assert loss(name).g_loss(FAKE).item() == pytest.approx(-FAKE.mean().item())
    expected = torch.clamp(1 - REAL, min=0).mean() + torch.clamp(1 + FAKE, min=0).mean()
    assert loss("hinge").d_loss(REAL, FAKE).item() == pytest.approx(expected.item())
    assert loss("hinge").g_loss(FAKE).item() == pytest.approx(-FAKE.mean().item())
    assert loss("wgan").clips_weights and not loss("wgan-gp").clips_weights


class Linear(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_wgan_gp_on_linear_critic_is_analytic():
    # D(x) = w.x has gradient w everywhere, so the penalty is (||w|| - 1)^2 for any interpolate.
    torch.manual_seed(0)
    w = torch.randn(3 * 5 * 7, dtype=torch.float64)
    D = Linear(w)
    real = torch.randn(6, 3, 5, 7, dtype=torch.float64)
    fake = torch.randn(6, 3, 5, 7, dtype=torch.float64)
    gp = wgan_gp_penalty(D, real, fake, generator=torch.Generator().manual_seed(1))
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-12)
    # and it is differentiable w.r.t. the critic's weights: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    (g,) = torch.autograd.grad(gp, D.w)
    torch.testing.assert_close(g, 2 * (w.norm() - 1) * w / w.norm())


def test_r1_on_linear_critic_is_squared_norm():
    w = torch.linspace(-1, 2, 10, dtype=torch.float64)
    D = Linear(w)
    r1 = r1_penalty(D, torch.randn(4, 10, dtype=torch.float64))
    assert r1.item() == pytest.approx((w**2).sum().item(), rel=1e-12)


def test_wgan_gp_interpolates_between_real_and_fake():
    # A quadratic critic D(x) = 0.5 ||x||^2 has gradient x_hat, so the penalty reveals where x_hat lies.
    class Quad(torch.nn.Module):
        def forward(self, x):
            return 0.5 * x.flatten(1).square().sum(1)

    real = torch.ones(5, 4, dtype=torch.float64) * 3.0
    fake = torch.zeros(5, 4, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    eps = torch.rand(5, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = ((eps * 3.0 * 2.0).squeeze(1) - 1).square().mean()  # ||x_hat|| = 3 eps * sqrt(4)
    assert wgan_gp_penalty(Quad(), real, fake, generator=g).item() == pytest.approx(
        expected.item(), rel=1e-12
    )


@pytest.mark.parametrize("center", [0.0, 1.0, 2.5])
def test_gradient_penalty_reference_matches_float64(center):
    grad = torch.randn(7, 3, 5, 9)
    norms = grad.double().reshape(7, -1).norm(dim=1)
    expected = ((norms - center) ** 2).mean()
    assert gradient_penalty(grad, center).item() == pytest.approx(expected.item(), rel=1e-5)
    assert gradient_penalty_reference(grad, center).dtype == grad.dtype
