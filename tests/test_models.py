import pytest
import torch
from torch import nn

from gandist.config import make_section
from gandist.models import build_networks
from gandist.models.layers import Maxout, MinibatchStdDev, MixtureLatent


@pytest.mark.parametrize("res", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(res, channels):
    G, D = build_networks(
        make_section("model", name="dcgan", z_dim=5, g_width=4, d_width=4), (channels, res, res), "images"
    ).values()
    x = G(torch.randn(3, 5))
    assert x.shape == (3, channels, res, res)
    assert x.abs().max() <= 1  # tanh output
    assert D(x).shape == (3,)


def test_dcgan_architecture_follows_the_paper():
    G, D = build_networks(
        make_section("model", name="dcgan", z_dim=8, g_width=8, d_width=8), (3, 64, 64), "images"
    ).values()
    g_types = {type(m) for m in G.modules()}
    d_types = {type(m) for m in D.modules()}
    assert (
        nn.ConvTranspose2d in g_types
        and nn.BatchNorm2d in g_types
        and nn.ReLU in g_types
        and nn.Tanh in g_types
    )
    assert nn.Linear not in d_types and nn.Linear not in g_types  # no fully connected hidden layers
    assert not any("Pool" in t.__name__ for t in d_types | g_types)  # strided convolutions, no pooling
    lrelu = [m for m in D.modules() if isinstance(m, nn.LeakyReLU)]
    assert lrelu and all(m.negative_slope == 0.2 for m in lrelu)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.stride == (2, 2) for m in convs[:-1])
    # the first D layer has no batch norm (DCGAN Sec. 3)
    seq = list(D.net)
    assert isinstance(seq[0], nn.Conv2d) and isinstance(seq[1], nn.LeakyReLU)
    # N(0, 0.02) initialisation
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) < 0.002


def test_critic_without_batch_norm():
    _, D = build_networks(make_section("model", name="dcgan", d_norm="layer"), (1, 16, 16), "images").values()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    # per-sample: one sample's output does not depend on the rest of the batch
    x = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(D(x)[:1], D(x[:1]))


def test_mlp_points_and_images():
    cfg = make_section(
        "model",
        name="mlp",
        z_dim=2,
        g_width=16,
        d_width=8,
        g_layers=2,
        d_layers=2,
        d_norm="none",
        maxout_pieces=3,
        dropout=0.5,
    )
    G, D = build_networks(cfg, (2,), "points").values()
    assert G(torch.randn(5, 2)).shape == (5, 2)
    assert D(torch.randn(5, 2)).shape == (5,)
    assert isinstance(G.net[-1], nn.Identity)  # linear output for points
    G2, _ = build_networks(cfg, (1, 8, 8), "images").values()
    assert G2(torch.randn(2, 2)).shape == (2, 1, 8, 8)


def test_maxout_definition():
    m = Maxout(3, 2, pieces=4)
    x = torch.randn(5, 3)
    lin = m.linear(x).view(5, 2, 4)
    torch.testing.assert_close(m(x), lin.max(dim=2).values)


def test_minibatch_stddev_against_float64_definition():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 5, dtype=torch.float64)
    out = MinibatchStdDev(4)(x)
    assert out.shape == (8, 4, 4, 5)
    for i in range(8):
        group = x[[j for j in range(8) if j % 2 == i % 2]]  # groups are strided: i, i+M, ...
        std = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 3], torch.full((4, 5), std.item(), dtype=torch.float64))
    torch.testing.assert_close(out[:, :3], x)
    flat = MinibatchStdDev(2)(torch.randn(6, 7))
    assert flat.shape == (6, 8)


def test_mixture_latent_components_are_the_normal_quantile_bins():
    K, z_dim, std = 8, 4, 0.25
    prior = MixtureLatent(z_dim, K, std)
    assert prior.out_dim == K + z_dim - 1
    # bin k of Phi(z0) is [k/K, (k+1)/K): its midpoint maps to k, and just inside each edge stays inside
    k = torch.arange(K, dtype=torch.float64)
    for frac in (0.5, 1e-6, 1 - 1e-6):
        z = torch.zeros(K, z_dim, dtype=torch.float64)
        z[:, 0] = torch.special.ndtri((k + frac) / K)
        assert prior.component(z).tolist() == list(range(K))
    # with z ~ N(0, I) every component has probability 1/K: chi-square against the uniform histogram
    n = 80_000
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(prior.component(z), minlength=K).double()
    chi2 = ((counts - n / K) ** 2 / (n / K)).sum().item()
    assert chi2 < 24.3  # 0.999 quantile of chi-square with K - 1 = 7 degrees of freedom
    out = prior(z)
    assert out.shape == (n, K + z_dim - 1)
    onehot = out[:, :K]
    assert torch.equal(onehot.sum(1), torch.ones(n)) and torch.equal(onehot.argmax(1), prior.component(z))
    torch.testing.assert_close(out[:, K:], std * z[:, 1:])


@pytest.mark.parametrize("name, shape, kind", [("mlp", (2,), "points"), ("dcgan", (1, 16, 16), "images")])
def test_mixture_latent_generator_keeps_the_z_interface(name, shape, kind):
    cfg = make_section(
        "model", name=name, z_dim=3, g_width=8, d_width=8, latent="mixture", latent_components=5
    )
    G, D = build_networks(cfg, shape, kind).values()
    assert G.z_dim == 3 and isinstance(G.prior, MixtureLatent)
    z = torch.randn(4, 3)
    x = G(z)
    assert x.shape == (4, *shape) and D(x).shape == (4,)
    # the wrapped network sees the one-hot code and the scaled continuous part, nothing else
    G.eval()
    torch.testing.assert_close(G(z), G.net(G.prior(z)))
    first = next(m for m in G.net.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d)))
    fan_in = first.in_features if isinstance(first, nn.Linear) else first.in_channels
    assert fan_in == 5 + 3 - 1
