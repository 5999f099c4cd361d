"""Perceptual path length and its LPIPS distance, against float64 references written out here.

The VGG-16 and LPIPS weights are stand-ins the test writes (seeded random values in the real files'
layouts), so the loading code is the one a user's files go through."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gandist.errors import UserError
from gandist.families.stylegan.networks import StyleGANGenerator
from gandist.metrics import ppl
from gandist.metrics.vgg import LPIPS_CHANNELS, LPIPS_SCALE, LPIPS_SHIFT, lpips_vgg

VGG_CONVS = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M", (128, 256), (256, 256), (256, 256), "M",
             (256, 512), (512, 512), (512, 512), "M", (512, 512), (512, 512), (512, 512)]  # fmt: skip
TAPS = (1, 3, 6, 9, 12)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 among the 13 convolutions (0-based)


@pytest.fixture(scope="module")
def standin_weights(tmp_path_factory):
    """A torchvision-layout VGG-16 (features only, He-scaled so activations keep their scale) and an
    LPIPS lin file in the `lpips` package's layout, seeded."""
    d = tmp_path_factory.mktemp("vgg")
    g = torch.Generator().manual_seed(0)
    sd, idx = {}, 0
    for layer in VGG_CONVS:
        if layer == "M":
            idx += 1
            continue
        cin, cout = layer
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(2 / (9 * cin))
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
        idx += 2  # conv, relu
    torch.save(sd, d / "vgg16.pth")
    lins = {
        f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(LPIPS_CHANNELS)
    }
    torch.save(lins, d / "lin.pth")
    return d / "vgg16.pth", d / "lin.pth", sd, lins


def lpips_reference(x0, x1, sd, lins):
    """LPIPS v0.1 written out in float64 from the published definition, layer by layer."""
    shift = torch.tensor(LPIPS_SHIFT, dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE, dtype=torch.float64).view(1, 3, 1, 1)

    def taps(x):
        h, out, conv, idx = (x - shift) / scale, [], 0, 0
        for layer in VGG_CONVS:
            if layer == "M":
                h, idx = F.max_pool2d(h, 2, 2), idx + 1
                continue
            w, b = sd[f"features.{idx}.weight"].double(), sd[f"features.{idx}.bias"].double()
            h = torch.relu(F.conv2d(h, w, b, padding=1))
            if conv in TAPS:
                out.append(h)
            conv, idx = conv + 1, idx + 2
        return out

    total = torch.zeros(x0.shape[0], dtype=torch.float64)
    for k, (a, b) in enumerate(zip(taps(x0), taps(x1))):
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = lins[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total += ((na - nb) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total


def test_lpips_matches_the_published_definition(standin_weights):
    vgg, lin, sd, lins = standin_weights
    net = lpips_vgg(vgg, lin).double()
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    x1 = (x0 + 0.3 * torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)).clamp(-1, 1)
    got, want = net(x0, x1), lpips_reference(x0, x1, sd, lins)
    assert torch.allclose(got, want, rtol=1e-10, atol=0), (got, want)
    assert torch.all(want > 0) and torch.allclose(net(x0, x0), torch.zeros(2, dtype=torch.float64))


class LinearStyleG(nn.Module):
    """mapping: w = M z; synthesis: the image is A w (every layer's w the same), noise added per pixel:
    for lerp in W the path length is ||A (w1 - w0)||^2 exactly under the squared-L2 distance."""

    def __init__(self, z_dim=5, w_dim=4, res=8, identity=False):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.z_dim, self.w_dim, self.num_layers, self.res = z_dim, w_dim, 2, res
        self.M = torch.eye(z_dim, dtype=torch.float64) if identity else torch.randn(w_dim, z_dim, generator=g,
                                                                                    dtype=torch.float64)  # fmt: skip
        out = z_dim if identity else w_dim
        self.A = torch.eye(3 * res * res, out, dtype=torch.float64) if identity else torch.randn(
            3 * res * res, out, generator=g, dtype=torch.float64)  # fmt: skip
        self.p = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def mapping(self, z):
        return z @ self.M.T

    def broadcast(self, w):
        return w[:, None, :].expand(w.shape[0], self.num_layers, w.shape[1])

    def synthesis(self, ws, noise_mode):
        assert noise_mode == "random"
        x = (ws[:, 0] @ self.A.T).view(-1, 3, self.res, self.res)
        return x + torch.randn_like(x)  # the same draw for both ends of a pair, or the distance explodes


def sine_slerp(a, b, t):
    """Unit a, b [N, D]: (sin((1 - t) theta) a + sin(t theta) b) / sin(theta)."""
    th = torch.acos((a * b).sum(1, keepdim=True))
    return (torch.sin((1 - t[:, None]) * th) * a + torch.sin(t[:, None] * th) * b) / torch.sin(th)


def sq_l2(a, b):
    return (a - b).pow(2).flatten(1).sum(1)


def test_w_space_is_exact_for_a_linear_generator():
    G = LinearStyleG()
    d = ppl.path_lengths(G, sq_l2, 40, space="w", batch=7, seed=5)
    z = torch.cat([torch.randn(2 * min(7, 40 - s), 5, generator=ppl.stream(5, "path_length", position=k),
                               dtype=torch.float64) for k, s in enumerate(range(0, 40, 7))])  # fmt: skip
    want = []
    for s in range(0, 40, 7):
        m = min(7, 40 - s)
        zk = z[2 * s : 2 * s + 2 * m]
        dw = G.mapping(zk[m:]) - G.mapping(zk[:m])
        want.append((dw @ G.A.T).pow(2).sum(1))
    want = torch.cat(want).numpy()
    np.testing.assert_allclose(d, want, rtol=1e-6)


def test_z_space_slerp_gives_the_squared_angle():
    """Identity mapping and synthesis: the image moves along the great circle at speed theta (the angle
    between z0 and z1), so d / eps^2 -> theta^2 (finite difference error O(eps))."""
    G = LinearStyleG(z_dim=6, identity=True, res=8)
    n, seed = 30, 2
    d = ppl.path_lengths(G, sq_l2, n, space="z", batch=n, seed=seed)
    z = torch.randn(
        2 * n, 6, generator=ppl.stream(seed, "path_length", position=0), dtype=torch.float64
    ).numpy()
    a, b = z[:n], z[n:]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    theta = np.arccos(cos)
    np.testing.assert_allclose(d, theta**2, rtol=1e-3)


def test_slerp_against_the_sine_formula():
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(9, 7, generator=g, dtype=torch.float64),
        torch.randn(9, 7, generator=g, dtype=torch.float64),
    )
    t = torch.rand(9, generator=g, dtype=torch.float64)
    want = sine_slerp(a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True), t)
    assert torch.allclose(ppl.slerp(a, b, t), want, rtol=1e-12, atol=1e-12)


def test_crop_downsample_and_filter_follow_the_official_code():
    x = torch.arange(2 * 3 * 512 * 512, dtype=torch.float64).view(2, 3, 512, 512)
    c = ppl.face_crop(x)
    assert c.shape == (2, 3, 256, 256) and torch.equal(c, x[:, :, 192:448, 128:384])
    small = ppl.box_downsample(x)
    assert small.shape == (2, 3, 256, 256)
    assert torch.equal(small[0, 1, 10, 20], x[0, 1, 20:22, 40:42].mean())
    assert ppl.box_downsample(c) is c
    v = np.arange(1000, dtype=np.float64)  # 1st percentile (lower) = 9, 99th (higher) = 990
    assert ppl.filtered_mean(v) == pytest.approx(v[9:991].mean(), rel=1e-15)


@pytest.mark.slow
def test_stylegan_ppl_with_lpips_against_a_float64_recomputation(standin_weights):
    """End to end on a tiny StyleGAN (float64): the module's distances equal a recomputation from the
    same streams with the published formulas (sine slerp, the float64 LPIPS written out above)."""
    vgg, lin, sd, lins = standin_weights
    torch.manual_seed(0)
    G = StyleGANGenerator(4, (3, 16, 16), fmap_base=512, fmap_max=4, w_dim=6, mapping_layers=3,
                          mapping_width=5).double().eval()  # fmt: skip
    with torch.no_grad():  # noise strengths start at 0: give the noise a visible weight
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.2)
    net = lpips_vgg(vgg, lin).double()
    n, batch, eps = 3, 2, 1e-4  # two batches, the second a partial one
    for space in ("z", "w"):
        got = ppl.path_lengths(G, net, n, space=space, batch=batch, seed=1, epsilon=eps)
        want = []
        for k, s in enumerate(range(0, n, batch)):
            m = min(batch, n - s)
            g = ppl.stream(1, "path_length", position=k)
            z = torch.randn(2 * m, 4, generator=g, dtype=torch.float64)
            t = torch.rand(m, generator=g, dtype=torch.float64)
            seed = int(torch.randint(0, 2**62, (), generator=g))
            with torch.no_grad():
                if space == "z":
                    a, b = z[:m] / z[:m].norm(dim=1, keepdim=True), z[m:] / z[m:].norm(dim=1, keepdim=True)
                    w0, w1 = G.mapping(sine_slerp(a, b, t)), G.mapping(sine_slerp(a, b, t + eps))
                else:
                    wa, wb = G.mapping(z[:m]), G.mapping(z[m:])
                    w0, w1 = wa + t[:, None] * (wb - wa), wa + (t[:, None] + eps) * (wb - wa)
                imgs = []
                for w in (w0, w1):
                    torch.manual_seed(seed)
                    imgs.append(G.synthesis(w[:, None].expand(m, G.num_layers, 6), "random"))
            want.append(lpips_reference(imgs[0], imgs[1], sd, lins) / eps**2)
        want = torch.cat(want).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-7)
        assert np.all(got > 0)


def test_bad_input_is_one_clear_line(tmp_path, standin_weights, monkeypatch):
    monkeypatch.setenv("GANDIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("GANDIST_VGG16_WEIGHTS", raising=False)
    with pytest.raises(UserError, match=r"vgg16-397923af\.pth.*never downloads.*--vgg16"):
        lpips_vgg(None, None)
    vgg, lin, _, _ = standin_weights
    with pytest.raises(UserError, match=r"vgg\.pth.*--lpips"):
        lpips_vgg(vgg, None)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch state dict"):
        lpips_vgg(junk, lin)
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="is not torchvision's VGG-16"):
        lpips_vgg(tmp_path / "wrong.pth", lin)
    with pytest.raises(UserError, match="style-based generator"):
        ppl.path_lengths(nn.Linear(2, 2), sq_l2, 10)


@pytest.mark.slow
def test_ppl_command_on_a_trained_run(tmp_path, standin_weights, capsys):
    """`gandist ppl` on a tiny trained StyleGAN: both spaces, the values of the library call; a DCGAN
    run is refused in one line."""
    import json

    from gandist.cli import main
    from gandist.generate import load_generator
    from gandist.metrics.vgg import lpips_vgg as build

    sg = ["model.z_dim=8", "model.w_dim=8", "model.mapping_layers=2", "model.mapping_width=8",
          "model.fmap_base=64", "model.fmap_max=8", "model.mbstd_group=2", "data.resolution=16",
          "data.batch_size=4", "schedule.stable_kimg=0.004", "schedule.fade_kimg=0.004",
          "schedule.batch={4: 4, 8: 4, 16: 4}", "train.kimg=0.03", "train.sample_every=1000", "train.ckpt_every=1000",
          "train.sample_n=4", "health.enabled=false"]  # fmt: skip
    run = tmp_path / "sg"
    assert main(["train", "stylegan_cpu", "--out", str(run), "--no-progress",
                 *[a for o in sg for a in ("--set", o)]]) == 0  # fmt: skip
    capsys.readouterr()
    vgg, lin, _, _ = standin_weights
    args = ["ppl", str(run), "--n", "100", "--batch", "50", "--space", "both", "--vgg16", str(vgg),
            "--lpips", str(lin), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    G = load_generator(run).G
    net = build(vgg, lin)
    for space in ("z", "w"):
        want = ppl.perceptual_path_length(G, net, 100, space=space, batch=50)
        assert out[f"ppl_{space}"] == pytest.approx(want["ppl"], rel=1e-6) and want["ppl"] > 0
        assert out[f"ppl_n_{space}"] == 100 and out[f"ppl_epsilon_{space}"] == 1e-4
    dc = tmp_path / "dc"
    assert main(["train", "digits_dcgan", "--out", str(dc), "--no-progress", "--set", "train.steps=1",
                 "--set", "data.resolution=8", "--set", "health.enabled=false"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["ppl", str(dc), "--n", "100", "--vgg16", str(vgg), "--lpips", str(lin)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "style-based generator" in err[0], err
    assert main(["ppl", str(run), "--n", "100", "--crop", "--vgg16", str(vgg), "--lpips", str(lin)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least 16 px" in err[0] and "16 px, cropped to 8" in err[0], err
