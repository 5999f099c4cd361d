"""PGGAN networks (Karras et al. 2018) and their layers, against the paper's Table 2, the official code's
definitions (tkarras/progressive_growing_of_gans networks.py) and float64 references."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gandist.config import ConfigError, load_config
from gandist.families.pggan.networks import PGGANDiscriminator, PGGANGenerator
from gandist.models import build_networks
from gandist.models.growth import feature_maps
from gandist.models.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    avgpool2x,
    upsample2x,
)

# Tiny widths for growing to 1024 px on CPU: nf = 4 up to 256 px, then 2 at 512 and 1 at 1024.
TINY = dict(fmap_base=512, fmap_max=4)


def _up_ref(x):  # nearest neighbour: every pixel becomes a 2x2 block
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def _pool_ref(x):  # mean of each 2x2 block
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def _tiny_pair(res, channels=3, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    G = PGGANGenerator(4, (channels, res, res), **TINY, **kw).to(dtype)
    D = PGGANDiscriminator((channels, res, res), **TINY, mbstd_group=2).to(dtype)
    return G, D


def _grads(modules):
    return [p.grad for m in modules for p in m.parameters()]


def _none_or_zero(grads):
    return all(g is None or not g.any() for g in grads)


# ---------------------------------------------------------------------------------------------------
# Layers


def test_resampling_against_definitions():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(upsample2x(x), _up_ref(x), rtol=0, atol=0)
    y = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    torch.testing.assert_close(avgpool2x(y), _pool_ref(y))
    torch.testing.assert_close(avgpool2x(upsample2x(x)), x)
    with pytest.raises(ValueError, match="even"):
        avgpool2x(torch.randn(1, 1, 5, 4))


def test_pixel_norm_against_definition():
    x = torch.randn(3, 5, 7, 2, dtype=torch.float64) * 3
    ref = torch.empty_like(x)
    for n in range(3):
        for i in range(7):
            for j in range(2):
                v = x[n, :, i, j]
                ref[n, :, i, j] = v / math.sqrt((v * v).sum().item() / 5 + 1e-8)
    out = PixelNorm()(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out.square().mean(dim=1), torch.ones(3, 7, 2, dtype=torch.float64))
    torch.testing.assert_close(PixelNorm()(x[:, :, 0, 0]), ref[:, :, 0, 0])  # latents [N, C]


def _mbstd_official(x: np.ndarray, group_size: int) -> np.ndarray:
    """networks.py `minibatch_stddev_layer`, step for step in numpy float64."""
    g = min(group_size, x.shape[0])
    s = x.shape
    y = x.reshape(g, -1, s[1], s[2], s[3])  # [GMCHW]
    y = y - y.mean(axis=0, keepdims=True)
    y = np.sqrt(np.square(y).mean(axis=0) + 1e-8)  # [MCHW]
    y = y.mean(axis=(1, 2, 3), keepdims=True)  # [M111]
    y = np.tile(y, [g, 1, s[2], s[3]])  # [N1HW]
    return np.concatenate([x, y], axis=1)


@pytest.mark.parametrize("n, group", [(12, 4), (2, 4), (6, 3)])
def test_minibatch_std_matches_official_code(n, group):
    x = torch.randn(n, 5, 3, 7, dtype=torch.float64)
    out = MinibatchStdDev(group)(x)
    np.testing.assert_allclose(out.numpy(), _mbstd_official(x.numpy(), group), rtol=1e-12, atol=0)


def test_equalized_layers_scale_by_he_constant():
    torch.manual_seed(0)
    lin = EqualizedLinear(300, 200)
    he = math.sqrt(2) / math.sqrt(300)
    assert lin.weight_scale == pytest.approx(he, rel=1e-12) and lin.bias_scale == 1.0
    assert abs(lin.weight.std().item() - 1) < 0.01 and not lin.bias.any()
    conv = EqualizedConv2d(32, 16, 3, gain=1.0)
    assert conv.weight_scale == pytest.approx(1 / math.sqrt(32 * 9), rel=1e-12)
    lin64, conv64 = lin.double(), conv.double()
    with torch.no_grad():
        lin64.bias.normal_()
        conv64.bias.normal_()
    x = torch.randn(4, 300, dtype=torch.float64)
    torch.testing.assert_close(lin64(x), x @ (lin64.weight * he).T + lin64.bias)
    img = torch.randn(2, 32, 5, 6, dtype=torch.float64)
    ref = F.conv2d(img, conv64.weight / math.sqrt(32 * 9), conv64.bias, padding=1)
    torch.testing.assert_close(conv64(img), ref)
    assert conv64(img).shape == (2, 16, 5, 6)
    # plain layers for the ablation: the He init itself, no runtime scale
    plain = EqualizedConv2d(64, 64, 3, equalized=False)
    assert plain.weight_scale == 1.0
    assert plain.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)


def test_equalized_linear_learning_rate_multiplier():
    torch.manual_seed(0)
    lr_mul, n = 0.01, 512
    he = math.sqrt(2) / math.sqrt(n)
    m = EqualizedLinear(n, n, lr_mul=lr_mul, bias_init=1.0).double()
    assert m.weight_scale == pytest.approx(he * lr_mul, rel=1e-12) and m.bias_scale == lr_mul
    assert m.weight.std().item() == pytest.approx(1 / lr_mul, rel=0.01)  # N(0, 1/lr_mul^2) stored
    assert (m.weight * m.weight_scale).std().item() == pytest.approx(he, rel=0.01)  # effective: He's std
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(m(x), x @ (m.weight * he * lr_mul).T + 1.0)  # bias starts at bias_init
    # the stored bias sees its gradient scaled by lr_mul (the slowed-down learning rate)
    m(x).sum().backward()
    torch.testing.assert_close(m.bias.grad, torch.full((n,), 3 * lr_mul, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------
# Networks


def test_feature_maps_follow_table_2():
    widths = [feature_maps(2**k) for k in range(2, 11)]
    assert widths == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert feature_maps(2) == 512  # D's hidden dense layer
    assert [feature_maps(2**k, **TINY) for k in range(2, 11)] == [4, 4, 4, 4, 4, 4, 4, 2, 1]
    with pytest.raises(ValueError, match="fmap_base=256 leaves no feature maps at 1024x1024"):
        PGGANGenerator(4, (3, 1024, 1024), fmap_base=256)


def test_grows_through_every_resolution_with_gradients():
    G, D = _tiny_pair(1024, channels=1, dtype=torch.float32)
    z = torch.randn(2, 4)
    for stage, res in enumerate(2**k for k in range(2, 11)):
        for alpha in (0.5, 1.0) if res > 4 else (1.0,):
            G.set_growth(res, alpha)
            D.set_growth(res, alpha)
            G.zero_grad(set_to_none=True)
            D.zero_grad(set_to_none=True)
            x = G(z)
            assert x.shape == (2, 1, res, res)
            logits = D(x)
            assert logits.shape == (2,) and torch.isfinite(logits).all()
            logits.sum().backward()
            old = {stage - 1} if alpha < 1 else set()
            for net, rgb in ((G, G.to_rgb), (D, D.from_rgb)):
                for i, block in enumerate(net.blocks):
                    live = i <= stage
                    assert all((g is not None) == live for g in _grads([block])), (net, res, alpha, i)
                for i, layer in enumerate(rgb):
                    live = i == stage or i in old
                    assert all((g is not None) == live for g in _grads([layer])), (net, res, alpha, i)
            assert all(torch.isfinite(g).all() for g in _grads([G, D]) if g is not None)


@pytest.mark.parametrize("res", [8, 32])
def test_fade_in_starts_at_the_previous_stage_and_blends_linearly(res):
    G, D = _tiny_pair(64)
    z = torch.randn(5, 4, dtype=torch.float64)
    x = torch.randn(4, 3, res, res, dtype=torch.float64)
    with torch.no_grad():
        G.set_growth(res // 2, 1.0)
        D.set_growth(res // 2, 1.0)
        g_prev, d_prev = G(z), D(_pool_ref(x))
        G.set_growth(res, 1.0)
        g_new = G(z)
        G.set_growth(res, 0.0)
        D.set_growth(res, 0.0)
        torch.testing.assert_close(G(z), _up_ref(g_prev), rtol=0, atol=0)
        torch.testing.assert_close(D(x), d_prev)  # avg_pool2d and the reference round differently
        # G's output is linear in alpha: (1 - a) * upsampled old stage + a * new stage (Sec. 3, Fig. 2)
        G.set_growth(res, 0.3)
        torch.testing.assert_close(G(z), 0.7 * _up_ref(g_prev) + 0.3 * g_new)
        # D blends the features entering the blocks below r
        D.set_growth(res, 0.3)
        s = int(math.log2(res)) - 2
        h = 0.7 * D.from_rgb[s - 1](_pool_ref(x)) + 0.3 * D.blocks[s](D.from_rgb[s](x))
        for i in range(s - 1, -1, -1):
            h = D.blocks[i](h)
        torch.testing.assert_close(D(x), h)


def test_alpha_edges_cut_the_old_and_new_paths():
    G, D = _tiny_pair(16)
    z = torch.randn(4, 4, dtype=torch.float64)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    s = 2  # 16 px
    # alpha = 1: the old toRGB / fromRGB have no effect and get no gradient
    G.set_growth(16, 1.0)
    D.set_growth(16, 1.0)
    before_g, before_d = G(z).detach(), D(x).detach()
    with torch.no_grad():
        G.to_rgb[s - 1].weight.add_(1.0)
        D.from_rgb[s - 1][0].weight.add_(1.0)
    torch.testing.assert_close(G(z), before_g, rtol=0, atol=0)
    torch.testing.assert_close(D(x), before_d, rtol=0, atol=0)
    (G(z).sum() + D(x).sum()).backward()
    assert _none_or_zero(_grads([G.to_rgb[s - 1], D.from_rgb[s - 1]]))
    assert not _none_or_zero(_grads([G.to_rgb[s], D.from_rgb[s]]))
    # alpha = 0: the new block and its toRGB / fromRGB get no gradient; the old ones do
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    G.set_growth(16, 0.0)
    D.set_growth(16, 0.0)
    (G(z).sum() + D(x).sum()).backward()
    assert _none_or_zero(_grads([G.blocks[s], G.to_rgb[s], D.blocks[s], D.from_rgb[s]]))
    assert not _none_or_zero(_grads([G.to_rgb[s - 1], D.from_rgb[s - 1], G.blocks[s - 1], D.blocks[s - 1]]))


def test_alpha_is_an_in_place_buffer_and_growth_is_checked():
    G, D = _tiny_pair(32)
    ptr = G.alpha.data_ptr()
    G.set_growth(16, 0.25)
    assert G.alpha.dim() == 0 and G.alpha.item() == 0.25 and G.alpha.data_ptr() == ptr
    assert "alpha" in G.state_dict() and G.resolution == 16 and isinstance(G.resolution, int)
    z = torch.randn(2, 4, dtype=torch.float64)
    y = G(z)
    G.alpha.copy_(torch.tensor(0.75))  # an EMA-style buffer copy changes the blend without set_growth
    assert not torch.equal(G(z), y)
    for bad in (2, 6, 64, 48):
        with pytest.raises(ValueError, match="power of two between 4 and 32"):
            D.set_growth(bad, 1.0)
    with pytest.raises(ValueError, match=r"alpha=1.5 must be in \[0, 1\]"):
        D.set_growth(8, 1.5)
    D.set_growth(8, 1.0)
    with pytest.raises(AssertionError, match=r"D at 8x8 expects \[N, 3, 8, 8\]"):
        D(torch.randn(2, 3, 16, 16, dtype=torch.float64))


def test_equalized_lr_scale_of_every_layer():
    torch.manual_seed(0)
    kw = dict(fmap_base=256, fmap_max=32)
    G = PGGANGenerator(32, (3, 64, 64), **kw)
    D = PGGANDiscriminator((3, 64, 64), **kw)
    layers = [m for net in (G, D) for m in net.modules() if isinstance(m, (EqualizedLinear, EqualizedConv2d))]
    assert len(layers) == (1 + 1 + 2 * 4 + 5) + (5 + 2 * 4 + 1 + 2)
    linear_out = {id(m) for m in G.to_rgb} | {id(D.blocks[0].dense1)}  # gain 1 (linear outputs)
    for m in layers:
        fan_in = m.in_features if isinstance(m, EqualizedLinear) else m.in_channels * m.kernel_size**2
        gain = 1.0 if id(m) in linear_out else math.sqrt(2)
        if m is G.blocks[0].dense:
            gain = math.sqrt(2) / 4  # the official code's gain of G's first dense layer
        assert m.weight_scale == pytest.approx(gain / math.sqrt(fan_in), rel=1e-12)
    weights = torch.cat([m.weight.detach().flatten() for m in layers])
    assert abs(weights.mean().item()) < 0.01 and abs(weights.std().item() - 1) < 0.01
    assert not any(m.bias.any() for m in layers if m.bias is not None) and not G.blocks[0].bias.any()
    # equalized_lr=false: plain layers whose stored weights have He's std
    P = PGGANGenerator(32, (3, 64, 64), equalized_lr=False, **kw)
    conv = P.blocks[1].conv0
    assert conv.weight_scale == 1.0
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.05)


def _conv(i, o, k):
    return i * o * k * k + o


def test_parameter_count_matches_table_2():
    nf = {r: feature_maps(r) for r in (2**k for k in range(1, 11))}
    res = [2**k for k in range(3, 11)]
    # Table 2 read off layer by layer (conv weights + biases), with a toRGB / fromRGB per resolution
    g_ref = 512 * 16 * nf[4] + nf[4] + _conv(nf[4], nf[4], 3)
    g_ref += sum(_conv(nf[r // 2], nf[r], 3) + _conv(nf[r], nf[r], 3) for r in res)
    g_ref += sum(_conv(nf[r], 3, 1) for r in [4, *res])
    d_ref = _conv(nf[4] + 1, nf[4], 3) + _conv(nf[4] * 16, nf[2], 1) + _conv(nf[2], 1, 1)
    d_ref += sum(_conv(nf[r], nf[r], 3) + _conv(nf[r], nf[r // 2], 3) for r in res)
    d_ref += sum(_conv(3, nf[r], 1) for r in [4, *res])
    with torch.device("meta"):  # shapes only: 2 x 23M parameters are never allocated
        G = PGGANGenerator(512, (3, 1024, 1024))
        D = PGGANDiscriminator((3, 1024, 1024))
    g_n = sum(p.numel() for p in G.parameters())
    d_n = sum(p.numel() for p in D.parameters())
    assert (g_n, d_n) == (g_ref, d_ref) == (23_079_115, 23_087_249)
    # Table 2: "Total trainable parameters 23.1M" for each network
    assert g_n == pytest.approx(23.1e6, rel=0.01) and d_n == pytest.approx(23.1e6, rel=0.01)


# ---------------------------------------------------------------------------------------------------
# Config and builder


def test_config_loads_and_builds():
    cfg = load_config(
        None,
        ["model.name=pggan", "data.name=digits", "data.resolution=32", "model.z_dim=8", "model.fmap_base=64",
         "model.fmap_max=8", "data.batch_size=8"],
    )  # fmt: skip
    m = cfg.model
    assert (m.name, type(cfg.loss).registered_name, m.mbstd_group, m.output) == (
        "pggan",
        "classic",
        4,
        "linear",
    )
    assert m.normalize_latents and m.pixelnorm and m.equalized_lr
    defaults = load_config(None, ["model.name=pggan", "data.name=procedural", "data.resolution=1024"]).model
    assert (defaults.z_dim, defaults.fmap_base, defaults.fmap_max) == (512, 8192, 512)
    G, D = build_networks(m, (1, 32, 32), "images").values()
    assert G.z_dim == 8 and G.shape == (1, 32, 32) and D.resolution == 32
    x = G(torch.randn(8, 8))
    assert x.shape == (8, 1, 32, 32) and D(x).shape == (8,)  # built grown: the final resolution
    G.set_growth(8, 0.5)
    assert G(torch.randn(4, 8)).shape == (4, 1, 8, 8)
    tanh = load_config(None, ["model.name=pggan", "model.output=tanh", "data.resolution=16"]).model
    G2 = build_networks(tanh, (1, 16, 16), "images")["G"]
    assert G2(torch.randn(2, tanh.z_dim)).abs().max() <= 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.name=ring", "data.batch_size=8"], r"^model.name=pggan needs image data, but data.name=ring is 2-D points; use model.name=mlp$"),
        (["data.name=procedural", "data.resolution=48"], r"^data.resolution=48: PGGAN grows to a power of two between 4 and 1024; use one of 4, 8, "),
        (["data.name=procedural", "data.resolution=2048"], r"^data.resolution=2048: PGGAN grows"),
        (["data.batch_size=6"], r"^data.batch_size=6 must be divisible by model.mbstd_group=4 \(or at most 4\)$"),
        (["model.mbstd_group=1"], r"^model.mbstd_group=1 must be 0 \(off\) or a group size >= 2$"),
        (["data.name=procedural", "data.resolution=256", "model.fmap_base=64"], r"^model.fmap_base=64 leaves no feature maps at 256x256; use model.fmap_base >= 128$"),
        (["model.output=sigmoid"], r"^model.output='sigmoid' is not known"),
        (["model.g_width=8"], r"^unknown config key 'model.g_width' for model.name=pggan"),
    ],
)  # fmt: skip
def test_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, ["model.name=pggan", *overrides])  # digits at 16 px unless overridden
    assert "\n" not in str(err.value)


def test_minibatch_std_off_lifts_the_batch_rule():
    cfg = load_config(
        None, ["model.name=pggan", "data.batch_size=6", "model.mbstd_group=0", "model.fmap_max=16"]
    )
    D = build_networks(cfg.model, (1, 16, 16), "images")["D"]
    assert not any(isinstance(m, MinibatchStdDev) for m in D.modules())
    assert D.blocks[0].conv.in_channels == feature_maps(4, cfg.model.fmap_base, cfg.model.fmap_max)
