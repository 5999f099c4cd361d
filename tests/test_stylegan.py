"""StyleGAN (Karras et al. 2019) networks: shapes and gradients (R1 and second order through the fused
epilogue) through every resolution to 1024, style mixing, w_avg and truncation against their definitions,
the mapping network's learning-rate multiplier against the analytic update, the Triton epilogue
(interpreted on CPU) against the reference, exact resume mid-fade, and the mistakes refused in one line."""

import math

import pytest
import torch
from conftest import make_trainer
from kernel_utils import assert_close

from gandist.config import ConfigError, load_config
from gandist.families.pggan.networks import PGGANDiscriminator
from gandist.families.stylegan.networks import StyleGANGenerator, StyleLayer, binomial_kernel, blur2d
from gandist.losses import r1_penalty
from gandist.models import build_networks
from gandist.models.layers import Blur

# Tiny widths: nf = 4 up to 256 px, 2 at 512, 1 at 1024 (as tests/test_pggan_models.py).
TINY = dict(fmap_base=512, fmap_max=4, w_dim=6, mapping_layers=3, mapping_width=5)
Z = 4


def tiny_g(res, channels=1, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    return StyleGANGenerator(Z, (channels, res, res), **{**TINY, **kw}).to(dtype)


def tiny_d(res, channels=1, dtype=torch.float64, seed=1):
    torch.manual_seed(seed)
    return PGGANDiscriminator((channels, res, res), fmap_base=512, fmap_max=4, mbstd_group=2).to(dtype)


def layer_inputs(G):
    """Hooks recording the w each synthesis layer's affine A_l receives, in layer order."""
    layers = [m for m in G.synthesis.modules() if isinstance(m, StyleLayer)]
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        layer.affine.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, inp[0].detach()))
        for i, layer in enumerate(layers)
    ]
    return layers, seen, hooks


def _grads(modules):
    return [p.grad for m in modules for p in m.parameters()]


# ---------------------------------------------------------------------------------------------------
# Shapes and gradients


@pytest.mark.slow
def test_grows_through_every_resolution_with_r1_and_second_order():
    """Every resolution 4..1024 (fading in and stable): image shapes, finite gradients on exactly the blocks
    that run, R1 on reals through D, and a second-order term d/dtheta ||d D(G(w)) / d ws||^2 that
    differentiates the epilogue's backward (the double backward R1 and path-length penalties need)."""
    G, D = tiny_g(1024, dtype=torch.float32), tiny_d(1024, dtype=torch.float32)
    assert G.num_layers == 18  # 2 per resolution 4..1024 (official num_layers = 2 log2(R) - 2)
    z = torch.randn(2, Z)
    for stage, res in enumerate(2**k for k in range(2, 11)):
        for alpha in (0.5,) if res > 4 else (1.0,):
            G.set_growth(res, alpha)
            D.set_growth(res, alpha)
            G.zero_grad(set_to_none=True)
            D.zero_grad(set_to_none=True)
            ws = G.broadcast(G.mapping(z)).detach().requires_grad_(True)
            x = G.synthesis(ws)
            assert x.shape == (2, 1, res, res)
            logits = D(x)
            assert logits.shape == (2,) and torch.isfinite(logits).all()
            (dws,) = torch.autograd.grad(logits.sum(), ws, create_graph=True)
            real = torch.randn(2, 1, res, res)
            loss = logits.sum() + dws.square().sum() + 5.0 * r1_penalty(D, real)
            loss.backward()
            blocks = G.synthesis.blocks
            for i, block in enumerate(blocks):
                live = i <= stage
                assert all((g is not None) == live for g in _grads([block])), (res, alpha, i)
            for i, rgb in enumerate(G.synthesis.to_rgb):
                live = i in (stage, stage - 1) if alpha < 1 else i == stage
                assert all((g is not None) == live for g in _grads([rgb])), (res, alpha, i)
            assert all(torch.isfinite(g).all() for g in _grads([G.synthesis, D]) if g is not None)
            # the second-order term reached the styles: the affines of the live layers have gradients
            assert blocks[stage].layer1.affine.weight.grad.abs().sum() > 0


def test_generator_forward_shapes_and_parameters():
    G = tiny_g(32, channels=3)
    assert G.num_layers == 8 and G.active_layers == 8
    z = torch.randn(5, Z, dtype=torch.float64)
    assert G(z).shape == (5, 3, 32, 32)
    G.set_growth(8, 0.25)
    assert G.active_layers == 4 and G(z).shape == (5, 3, 8, 8)
    assert G.synthesis.blocks[0].const.shape == (1, 4, 4, 4)
    layer = G.synthesis.blocks[1].layer0
    # the style's scale bias starts at 1, its shift at 0 (official style_mod: x * (s + 1) + b)
    assert torch.equal(layer.affine.bias[:4], torch.ones(4, dtype=torch.float64))
    assert torch.equal(layer.affine.bias[4:], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(layer.noise_strength, torch.zeros(4, dtype=torch.float64))
    assert G.mapping.layers[0].weight_scale == pytest.approx(math.sqrt(2) / math.sqrt(Z) * 0.01)


def test_parameter_count_matches_the_paper():
    """Karras et al. 2019, Sec. 2: the style-based generator has 26.2M trainable parameters at 1024x1024
    (mapping 8 x (512 x 512 + 512) = 2.10M)."""
    G = StyleGANGenerator(512, (3, 1024, 1024))
    count = sum(p.numel() for p in G.parameters())
    assert round(count / 1e6, 1) == 26.2, count
    assert sum(p.numel() for p in G.mapping.parameters()) == 8 * (512 * 512 + 512)
    assert G.num_layers == 18


def test_layer_matches_the_official_definition_in_float64():
    """One synthesis layer against the official G_synthesis layer written out (NVlabs/stylegan:
    upscale2d -> conv2d -> blur2d -> apply_noise -> apply_bias -> lrelu -> instance_norm -> style_mod)."""
    torch.manual_seed(3)
    layer = StyleLayer(3, 5, 6, 8, up=True, blur=True).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x, w = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    noise = layer.noise_const.expand(2, 1, 8, 8)
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    wt = layer.conv.weight * math.sqrt(2) / math.sqrt(3 * 9)
    h = torch.nn.functional.conv2d(up, wt, padding=1)
    f = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64) / 16
    h = torch.nn.functional.conv2d(h, f.expand(5, 1, 3, 3), padding=1, groups=5)
    h = h + layer.noise_strength.view(1, -1, 1, 1) * noise + layer.bias.view(1, -1, 1, 1)
    h = torch.where(h >= 0, h, 0.2 * h)
    h = h - h.mean(dim=(2, 3), keepdim=True)
    h = h / torch.sqrt(h.square().mean(dim=(2, 3), keepdim=True) + 1e-8)
    style = w @ (layer.affine.weight / math.sqrt(6)).T + layer.affine.bias
    ref = h * style[:, :5, None, None] + style[:, 5:, None, None]
    got = layer(x, w, "const", "reference")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    assert torch.equal(binomial_kernel().view(3, 3).double(), f)
    assert blur2d(torch.ones(1, 1, 3, 3), binomial_kernel())[0, 0, 1, 1] == 1.0  # sums to 1 inside


# ---------------------------------------------------------------------------------------------------
# D: the official D_basic's blur before each downsampling


def test_blur_matches_a_direct_float64_convolution():
    """Blur against the [1, 2, 1] filter written out (outer product / 16) and applied by explicit sums
    over a zero-padded input, on odd sizes; the filter is no parameter and not in the state dict."""
    blur = Blur().double()
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64)
    taps = [1.0, 2.0, 1.0]
    f = [[a * b / 16.0 for b in taps] for a in taps]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # zeros: the official depthwise conv, padding 'SAME'
    ref = torch.zeros_like(x)
    for i in range(3):
        for j in range(3):
            ref += f[i][j] * padded[:, :, i : i + 7, j : j + 5]
    torch.testing.assert_close(blur(x), ref, rtol=1e-14, atol=1e-14)
    assert list(blur.parameters()) == [] and blur.state_dict() == {}
    torch.autograd.gradgradcheck(blur, (torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True),))


def test_blur_derivatives_are_those_of_the_plain_depthwise_conv():
    """blur2d's own backward (no gradient for the fixed filter) gives autograd's values through F.conv2d bit
    for bit in float32, the training dtype: the gradient, and the gradient of that gradient with respect to
    the incoming one (the path R1 takes back into D); in float64 for an asymmetric kernel too; and it runs
    under bf16 autocast."""
    from gandist.models.layers import blur2d

    torch.manual_seed(0)
    for dtype, kernels, same in (
        (torch.float32, [Blur().kernel], torch.equal),
        (torch.float64, [Blur().kernel.double(), torch.randn(1, 1, 3, 3, dtype=torch.float64)],
         lambda u, v: torch.allclose(u, v, rtol=1e-13, atol=1e-13)),
    ):  # fmt: skip
        x = torch.randn(2, 4, 6, 5, dtype=dtype, requires_grad=True)
        g = torch.randn(2, 4, 6, 5, dtype=dtype, requires_grad=True)  # stands for dLoss/dy, a function of D
        for kernel in kernels:
            ours = lambda t, k=kernel: blur2d(t, k)  # noqa: E731
            plain = lambda t, k=kernel: torch.nn.functional.conv2d(t, k.expand(4, 1, 3, 3), padding=1, groups=4)  # noqa: E731
            assert same(ours(x), plain(x))
            first = [torch.autograd.grad(f(x), x, g, create_graph=True)[0] for f in (ours, plain)]
            assert same(first[0], first[1])
            second = [torch.autograd.grad(d.square().sum(), g)[0] for d in first]
            assert same(second[0], second[1])
            if dtype == torch.float64:
                torch.autograd.gradgradcheck(ours, (x[:1, :2, :4, :3].detach().requires_grad_(),))
    x32, k = torch.randn(2, 4, 8, 8, requires_grad=True), Blur().kernel
    grads = []
    for f in (lambda t: blur2d(t, k), lambda t: torch.nn.functional.conv2d(t, k.expand(4, 1, 3, 3), padding=1, groups=4)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = f(x32)
        assert y.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(y.float().square().sum(), x32)[0])
    assert grads[0].dtype == torch.float32 and torch.equal(grads[0], grads[1])


def test_d_block_with_blur_is_the_official_fused_conv2d_downscale2d():
    """StyleGAN's D block at r > 4 against NVlabs/stylegan D_basic written out in float64:
    lrelu(conv0(x)), then the fused conv2d_downscale2d of the blurred activations (the 3x3 kernel padded to
    5x5, its four 4x4 shifts averaged, a stride-2 convolution with padding 1), then bias and lrelu."""
    torch.manual_seed(5)
    block = PGGANDiscriminator((1, 8, 8), fmap_base=32, fmap_max=5, blur=True).double().blocks[1]
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # non-zero biases
    x = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    lrelu = lambda v: torch.where(v >= 0, v, 0.2 * v)
    c0, c1 = block.conv0, block.conv1
    h = lrelu(torch.nn.functional.conv2d(x, c0.weight * math.sqrt(2 / (5 * 9)), c0.bias, padding=1))
    f = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    h = torch.nn.functional.conv2d(h, (f[:, None] * f[None, :] / 16).expand(5, 1, 3, 3), padding=1, groups=5)
    w = torch.nn.functional.pad(c1.weight * math.sqrt(2 / (5 * 9)), (1, 1, 1, 1))
    w = (w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]) * 0.25
    ref = lrelu(torch.nn.functional.conv2d(h, w, stride=2, padding=1) + c1.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(block(x), ref, rtol=1e-12, atol=1e-12)


def test_stylegan_d_blurs_by_default_and_keeps_its_parameters():
    """model.d_blur (default true) builds the blurring D; its parameters and state-dict keys are PGGAN D's
    (checkpoints written before the blur load), 23.1M at 1024x1024 beside G's 26.2M."""
    cfg = load_config(None, ["model.name=stylegan", "data.name=procedural", "data.resolution=16",
                             "data.batch_size=8"]).model  # fmt: skip
    assert cfg.d_blur
    assert all(load_config(n, ["data.path=."]).model.d_blur for n in ("stylegan_256", "stylegan_1024"))
    D = build_networks(cfg, (3, 16, 16), "images")["D"]
    assert all(block.blur is not None for block in D.blocks[1:])
    off = build_networks(load_config(None, ["model.name=stylegan", "data.name=procedural", "data.resolution=16",
                                            "data.batch_size=8", "model.d_blur=false"]).model,
                         (3, 16, 16), "images")["D"]  # fmt: skip
    assert all(block.blur is None for block in off.blocks[1:])
    assert D.state_dict().keys() == off.state_dict().keys()
    assert all(not isinstance(b.blur, Blur) for b in build_networks(load_config(
        None, ["model.name=pggan", "data.resolution=16"]).model, (1, 16, 16), "images")["D"].blocks[1:])  # fmt: skip
    with torch.device("meta"):  # shapes only
        G = StyleGANGenerator(512, (3, 1024, 1024))
        D = PGGANDiscriminator((3, 1024, 1024), blur=True)
    assert round(sum(p.numel() for p in G.parameters()) / 1e6, 1) == 26.2
    assert sum(p.numel() for p in D.parameters()) == 23_087_249  # PGGAN D's, Table 2: 23.1M


def test_blurring_d_runs_at_every_growth_stage_and_fades_from_the_previous_one():
    """A 32 px blurring D at every stage and mid-fade: logits [N] with R1 through the blur; at alpha 0 a
    fading D is exactly the previous stage's D on the box-downscaled images (official D_basic's lerp)."""
    torch.manual_seed(2)
    D = PGGANDiscriminator((1, 32, 32), fmap_base=512, fmap_max=4, mbstd_group=2, blur=True).double()
    for res in (4, 8, 16, 32):
        for alpha in (0.0, 0.5, 1.0) if res > 4 else (1.0,):
            D.set_growth(res, alpha)
            x = torch.randn(4, 1, res, res, dtype=torch.float64)
            D.zero_grad(set_to_none=True)
            logits = D(x)
            assert logits.shape == (4,) and torch.isfinite(logits).all()
            (logits.sum() + r1_penalty(D, x)).backward()
            assert all(torch.isfinite(g).all() for g in _grads([D]) if g is not None)
            if res > 4 and alpha > 0:  # the new block (its blur included) is live
                assert D.blocks[D.stage].conv1.weight.grad.abs().sum() > 0
            if alpha == 0.0:
                D.set_growth(res // 2, 1.0)
                torch.testing.assert_close(logits, D(torch.nn.functional.avg_pool2d(x, 2)), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------
# Styles: mixing, w_avg, truncation


def test_mixing_switches_w_exactly_at_the_crossover_layer():
    G = tiny_g(32).eval()
    layers, seen, hooks = layer_inputs(G)
    z1, z2 = torch.randn(3, Z, dtype=torch.float64), torch.randn(3, Z, dtype=torch.float64)
    w1, w2 = G.mapping(z1), G.mapping(z2)
    for crossover in range(1, G.num_layers):
        G.synthesis(G.mix(G.broadcast(w1), w2, crossover), "const")
        for i in range(G.num_layers):
            assert torch.equal(seen[i], w1 if i < crossover else w2), (crossover, i)
    for h in hooks:
        h.remove()


def test_training_mixes_with_the_configured_probability_from_a_random_crossover():
    """In training mode a second latent (the next global-RNG draw) takes over from one crossover in
    [1, active layers) with probability p; the rest of the time every layer sees w(z)."""
    G = tiny_g(16, style_mixing=0.9)
    G.set_growth(16, 0.5)  # fading: the new block's layers 4, 5 can be crossed over too
    layers, seen, hooks = layer_inputs(G)
    z = torch.randn(2, Z, dtype=torch.float64)
    crossovers = []
    for s in range(300):
        torch.manual_seed(s)
        with torch.no_grad():
            G(z)
        torch.manual_seed(s)
        w1, w2 = G.mapping(z), G.mapping(torch.randn(2, Z).double())  # G's first draw (fp32)
        same = [torch.equal(seen[i], w1) for i in range(G.active_layers)]
        other = [torch.equal(seen[i], w2) for i in range(G.active_layers)]
        k = same.index(False) if False in same else G.active_layers
        assert all(same[:k]) and all(other[k:]), (s, same, other)
        crossovers.append(k)
    for h in hooks:
        h.remove()
    mixed = [k for k in crossovers if k < G.active_layers]
    assert set(mixed) == {1, 2, 3, 4, 5}
    share = len(mixed) / len(crossovers)
    assert abs(share - 0.9) < 4 * math.sqrt(0.9 * 0.1 / 300), share  # binomial, 4 sigma
    G0 = tiny_g(16, style_mixing=0.0)
    layers, seen, hooks = layer_inputs(G0)
    w = G0.mapping(z)
    with torch.no_grad():
        G0(z)
    assert all(torch.equal(seen[i], w) for i in range(G0.num_layers))


def test_w_avg_tracks_the_mean_of_w_in_training_only():
    G = tiny_g(8, w_avg_beta=0.9)
    z = torch.randn(6, Z, dtype=torch.float64)
    assert torch.equal(G.w_avg, torch.zeros(6, dtype=torch.float64))
    expected = torch.zeros(6, dtype=torch.float64)
    for _ in range(3):
        with torch.no_grad():
            G(z)
        expected = 0.9 * expected + 0.1 * G.mapping(z).mean(dim=0)
        torch.testing.assert_close(G.w_avg, expected, rtol=1e-12, atol=1e-12)
    before = G.w_avg.clone()
    G.eval()(z)
    assert torch.equal(G.w_avg, before)


def test_truncation_against_its_definition():
    G = tiny_g(16).eval()
    with torch.no_grad():
        G.w_avg.copy_(torch.randn(6, dtype=torch.float64))
    z = torch.randn(4, Z, dtype=torch.float64)
    with torch.no_grad():
        # psi = 0: every latent gives the image of w_avg
        avg_img = G.synthesis(G.broadcast(G.w_avg[None].expand(1, 6)), "const")
        img0 = G(z, truncation_psi=0.0)
        torch.testing.assert_close(img0, avg_img.expand(4, -1, -1, -1), rtol=1e-12, atol=1e-12)
        # psi = 1 changes nothing, whatever the cutoff
        assert torch.equal(G(z, truncation_psi=1.0, truncation_cutoff=2), G(z))
    # psi = 0.7, cutoff 4: layers 0..3 see w_avg + 0.7 (w - w_avg), layers 4.. see w untouched
    layers, seen, hooks = layer_inputs(G)
    w = G.mapping(z)
    G(z, truncation_psi=0.7, truncation_cutoff=4)
    for i in range(G.num_layers):
        ref = G.w_avg + 0.7 * (w - G.w_avg) if i < 4 else w
        torch.testing.assert_close(seen[i], ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(seen[4], w)
    for h in hooks:
        h.remove()


def test_truncation_cutoff_past_the_layers_is_one_line():
    G = tiny_g(16).eval()
    z = torch.randn(1, Z, dtype=torch.float64)
    for bad in (0, 7):
        with pytest.raises(ValueError, match=rf"^truncation cutoff {bad} is past the 6 style layers") as info:
            G(z, truncation_psi=0.5, truncation_cutoff=bad)
        assert "\n" not in str(info.value)
    G.set_growth(8, 1.0)
    with pytest.raises(ValueError, match=r"cutoff 6 is past the 4 style layers of this generator at 8x8"):
        G(z, truncation_psi=0.5, truncation_cutoff=6)


def test_noise_modes():
    G = tiny_g(8).eval()
    with torch.no_grad():
        for layer in G.synthesis.modules():
            if isinstance(layer, StyleLayer):
                layer.noise_strength.fill_(0.5)
    z = torch.randn(2, Z, dtype=torch.float64)
    const = G(z)  # eval: model.sample_noise (const) by default
    assert torch.equal(const, G(z, noise_mode="const"))
    assert not torch.allclose(G(z, noise_mode="random"), const)
    assert not torch.allclose(G(z, noise_mode="none"), const)
    assert torch.equal(G(z, noise_mode="none"), G(z, noise_mode="none"))
    with pytest.raises(ValueError, match="noise_mode='bogus' must be one of random, const, none"):
        G(z, noise_mode="bogus")


# ---------------------------------------------------------------------------------------------------
# The mapping network's learning-rate multiplier


def _mapping_reference(z, effective):
    """The mapping network written out in float64 from its effective weights and biases."""
    x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    for w, b in effective:
        x = torch.nn.functional.leaky_relu(x @ w.T + b, 0.2)
    return x


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mapping_learning_rate_multiplier_is_applied_to_the_update(optimizer):
    """Effective weight w = theta * he * lr_mul. SGD: dw = -lr (he lr_mul)^2 dL/dw; Adam's first step
    (beta1 0, bias-corrected) moves theta by -lr sign(g), so dw = -lr he lr_mul sign(dL/dw): 0.01x the step of
    an equalised layer without the multiplier (Appendix C)."""
    G = tiny_g(8)
    layers = G.mapping.layers
    z = torch.randn(7, Z, dtype=torch.float64)
    target = torch.randn(7, 6, dtype=torch.float64)
    eff = [
        (
            (m.weight * m.weight_scale).detach().requires_grad_(),
            (m.bias * m.bias_scale).detach().requires_grad_(),
        )
        for m in layers
    ]
    ref_loss = (_mapping_reference(z, eff) - target).square().sum()
    grads = torch.autograd.grad(ref_loss, [t for pair in eff for t in pair])
    lr = 0.1
    params = list(G.mapping.parameters())
    opt = (
        torch.optim.SGD(params, lr=lr)
        if optimizer == "sgd"
        else torch.optim.Adam(params, lr=lr, betas=(0.0, 0.99), eps=1e-30)
    )
    (G.mapping(z) - target).square().sum().backward()
    opt.step()
    for j, m in enumerate(layers):
        he = math.sqrt(2) / math.sqrt(m.in_features)
        assert m.weight_scale == pytest.approx(he * 0.01) and m.bias_scale == 0.01
        new_w, new_b = (m.weight * m.weight_scale).detach(), (m.bias * m.bias_scale).detach()
        gw, gb = grads[2 * j], grads[2 * j + 1]
        if optimizer == "sgd":
            ref_w = eff[j][0] - lr * (he * 0.01) ** 2 * gw
            ref_b = eff[j][1] - lr * 0.01**2 * gb
        else:
            ref_w = eff[j][0] - lr * he * 0.01 * torch.sign(gw)
            ref_b = eff[j][1] - lr * 0.01 * torch.sign(gb)
        torch.testing.assert_close(new_w, ref_w, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(new_b, ref_b, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# Triton epilogue (interpreted on CPU) against the reference


def _forward_backward(impl, dtype=torch.float64):
    """Outputs and gradients of G and D (non-saturating losses, R1 on reals, and a second-order term through
    G's epilogues) for one tiny StyleGAN at 8 px, fading, in float64."""
    G = tiny_g(8, channels=2, impl=impl, dtype=dtype)
    D = tiny_d(8, channels=2, dtype=dtype)
    with torch.no_grad():
        for layer in G.synthesis.modules():
            if isinstance(layer, StyleLayer):
                layer.noise_strength.normal_()
    G.set_growth(8, 0.5)
    D.set_growth(8, 0.5)
    torch.manual_seed(5)  # noise and mixing draws
    z = torch.randn(4, Z, dtype=torch.float64).to(dtype)
    fake = G(z)
    real = torch.randn(4, 2, 8, 8, dtype=torch.float64).to(dtype)
    d_loss = (
        torch.nn.functional.softplus(D(fake.detach())).mean() + torch.nn.functional.softplus(-D(real)).mean()
    )
    d_loss = d_loss + 5.0 * r1_penalty(D, real)
    d_loss.backward()
    ws = G.broadcast(G.mapping(z))
    img = G.synthesis(ws, "random")
    (dws,) = torch.autograd.grad(img.square().sum(), ws, create_graph=True)
    g_loss = torch.nn.functional.softplus(-D(fake)).mean() + dws.square().sum()
    D.zero_grad()
    G.zero_grad()
    g_loss.backward()
    with torch.no_grad():  # eval mode: the stored noise images, expanded over the batch
        sample = G.eval()(z, truncation_psi=0.5, truncation_cutoff=2)
    return torch.cat([fake.detach(), sample]), {n: p.grad for n, p in G.named_parameters()}, d_loss.detach()


@pytest.mark.slow
def test_triton_epilogue_matches_the_reference_in_outputs_and_gradients():
    """fp32 G with the Triton epilogue and with the reference, each against the same model in float64 (the
    reference ops), within the fp32 row of the kernels' tolerance table: the fused path is as exact as
    the eager ops it replaces. Same global-RNG draws in every dtype (noise and mixing are drawn in fp32)."""
    fake64, grads64, dl64 = _forward_backward("reference", torch.float64)
    for impl in ("triton", "reference"):
        fake, grads, dl = _forward_backward(impl, torch.float32)
        assert_close(fake, fake64, torch.float32, f"{impl} output")
        assert_close(dl, dl64, torch.float32, f"{impl} D loss with R1")
        assert grads.keys() == grads64.keys()
        for name, ref in grads64.items():
            assert (grads[name] is None) == (ref is None), name
            if ref is not None:
                assert_close(grads[name], ref, torch.float32, f"{impl} grad {name}")


@pytest.mark.slow
def test_triton_epilogue_matches_the_reference_in_float64():
    fake_t, grads_t, _ = _forward_backward("triton")
    fake_r, grads_r, _ = _forward_backward("reference")
    assert_close(fake_t, fake_r, torch.float64, "output")
    for name in grads_r:
        assert_close(grads_t[name], grads_r[name], torch.float64, f"grad {name}")


@pytest.mark.slow
def test_triton_and_reference_training_steps_end_at_the_same_parameters(tmp_path, stylegan_cfg):
    """A few loop steps (D, lazy R1, G; style mixing and noise on) with the Triton epilogue and with the
    reference. Plain SGD, as tests/test_kernel_training.py: updates linear in the gradients, so the runs
    differ only by fp32 rounding (Adam would turn near-zero gradients into full steps of random sign)."""
    out = {}
    for impl in ("triton", "reference"):
        cfg = stylegan_cfg(f"model.epilogue_impl={impl}", "optim.name=sgd", "optim.lr_g=0.01", "optim.lr_d=0.01",
                       "schedule.kind=fixed", "schedule.batch={}", "data.resolution=8", "train.kimg=0",
                       "train.steps=4")  # fmt: skip
        t = make_trainer(cfg, tmp_path / impl, log_enabled=False)
        for _ in range(4):
            t.train_step()
        out[impl] = t.state_tensors()
    a, b = out["triton"], out["reference"]
    assert a.keys() == b.keys()
    moved = 0.0
    init = make_trainer(cfg, tmp_path / "init", log_enabled=False).state_tensors()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
        if a[k].is_floating_point():
            moved = max(moved, (a[k] - init[k]).abs().max().item())
    assert moved > 1e-3  # the runs did train, well beyond the tolerance


# ---------------------------------------------------------------------------------------------------
# The loop: configs, mistakes (exact resume mid-fade: tests/test_schedule.py)


def test_shipped_configs_load_and_build():
    from gandist.resources import shipped_configs

    names = [n for n in shipped_configs() if n.startswith("stylegan")]
    assert {"stylegan_cpu", "stylegan_256", "stylegan_1024"} <= set(names)
    for name in names:
        cfg = load_config(name, [] if name.endswith("cpu") else ["data.path=."])
        assert cfg.model.name == "stylegan" and cfg.loss.name == "nonsaturating" and cfg.loss.r1_gamma == 10
        assert cfg.loss.reg_interval == 16 and cfg.schedule.kind == "progressive"
    cpu = load_config(str(shipped_configs()["stylegan_cpu"])).model
    nets = build_networks(cpu, (1, 32, 32), "images")
    G = nets["G"]
    assert len(G.mapping.layers) == 8 and G.mapping.layers[0].bias_scale == 0.01
    assert G(torch.randn(2, cpu.z_dim)).shape == (2, 1, 32, 32) and nets["D"].resolution == 32
    full = load_config("stylegan_1024", ["data.path=."]).model
    assert (full.z_dim, full.w_dim, full.mapping_layers, full.mapping_width) == (512, 512, 8, 512)
    assert (full.fmap_base, full.fmap_max, full.mapping_lr_mul, full.style_mixing) == (8192, 512, 0.01, 0.9)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.style_mixing=1.5"], r"^model.style_mixing=1.5 "),
        (["model.style_mixing=-0.1"], r"^model.style_mixing=-0.1 "),
        (["model.mapping_lr_mul=0"], r"^model.mapping_lr_mul=0"),
        (["model.epilogue_impl=cuda"], r"^model.epilogue_impl='cuda' is not known"),
        (["data.name=procedural", "data.resolution=48"], r"^data.resolution=48: StyleGAN grows to a power of two"),
        (["data.batch_size=5", "schedule.batch={}"], r"^data.batch_size=5 must be divisible by model.mbstd_group=2"),
    ],
)  # fmt: skip
def test_config_errors_are_one_line(overrides, message, stylegan_cfg):
    with pytest.raises(ConfigError, match=message) as info:
        stylegan_cfg(*overrides)
    assert "\n" not in str(info.value)


def test_points_data_is_refused_in_one_line():
    with pytest.raises(
        ConfigError, match=r"^model.name=stylegan needs image data, but data.name=ring is 2-D"
    ) as info:
        load_config(None, ["model.name=stylegan", "data.name=ring", "data.batch_size=8"])
    assert "\n" not in str(info.value)
