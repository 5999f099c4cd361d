"""StyleGAN through the command line on a tiny trained checkpoint: generate with truncation and noise
modes, style-mix grids (Karras et al. 2019, Fig. 3), interpolation in Z and W, and the one-line errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from gandist.cli import main
from gandist.errors import UserError
from gandist.generate import load_generator, style_layers, style_mix_grid

SG = ["model.z_dim=8", "model.w_dim=8", "model.mapping_layers=2", "model.mapping_width=8", "model.fmap_base=64",
      "model.fmap_max=8", "model.mbstd_group=2", "data.resolution=16", "data.batch_size=4",
      "schedule.stable_kimg=0.008", "schedule.fade_kimg=0.008", "schedule.batch={4: 4, 8: 4, 16: 4}",
      "train.kimg=0.06", "train.log_every=5", "train.sample_every=1000", "train.ckpt_every=1000",
      "train.sample_n=4", "health.enabled=false"]  # fmt: skip
DCGAN = ["model.z_dim=8", "model.g_width=8", "model.d_width=8", "data.resolution=8", "data.batch_size=8",
         "train.steps=2", "train.sample_n=4", "health.enabled=false"]  # fmt: skip


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def stylegan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sg")
    assert main(["train", "stylegan_cpu", "--out", str(out), "--no-progress", *_sets(SG)]) == 0
    return out


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dc")
    assert main(["train", "digits_dcgan", "--out", str(out), "--no-progress", *_sets(DCGAN)]) == 0
    return out


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_generate_with_truncation_and_noise_modes(stylegan_run, tmp_path):
    assert load_generator(stylegan_run).G.resolution == 16
    for extra in ([], ["--truncation", "0.7", "--truncation-cutoff", "4"], ["--noise-mode", "random"]):
        out = tmp_path / f"s{len(extra)}.png"
        assert main(["generate", str(stylegan_run), "--n", "4", "--out", str(out), *extra]) == 0
        assert Image.open(out).size[0] > 0
    # psi 0: every latent gives the image of w_avg (const noise: the very same picture)
    npz = tmp_path / "psi0.npz"
    assert main(["generate", str(stylegan_run), "--n", "3", "--out", str(npz), "--truncation", "0"]) == 0
    x = np.load(npz)["samples"]
    assert x.shape == (3, 1, 16, 16) and np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])
    plain = tmp_path / "plain.npz"
    assert main(["generate", str(stylegan_run), "--n", "3", "--out", str(plain)]) == 0
    assert not np.array_equal(np.load(plain)["samples"][0], np.load(plain)["samples"][1])


def test_truncation_mistakes_are_one_line(stylegan_run, dcgan_run, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert (
        main(["generate", str(stylegan_run), "--out", out, "--truncation", "0.5", "--truncation-cutoff", "7"])
        == 2
    )
    assert "truncation cutoff 7 is past the 6 style layers of this generator at 16x16; use 1..6" in _error(
        capsys
    )
    assert main(["generate", str(dcgan_run), "--out", out, "--truncation", "0.5"]) == 2
    line = _error(capsys)
    assert "need a style-based generator (model.name=stylegan)" in line and "holds a dcgan generator" in line


def test_style_mix_grid_layout_and_content(stylegan_run, tmp_path):
    out = tmp_path / "mix.png"
    rows, cols = "1,2", "3-5"
    assert main(["style-mix", str(stylegan_run), "--rows", rows, "--cols", cols, "--styles", "coarse",
                 "--out", str(out)]) == 0  # fmt: skip
    w, h = Image.open(out).size
    # 4 columns (row images + 3 column seeds) x 3 rows (column images + 2 row seeds), 2 px padding
    assert (w - 2) * 3 == (h - 2) * 4
    gen = load_generator(stylegan_run)
    imgs, row_len = style_mix_grid(gen, [1, 2], [3, 4, 5], "2-3")
    assert row_len == 4 and imgs.shape == (12, 1, 16, 16)
    ws_rows, ws_cols = gen.ws(gen.latents([1, 2])), gen.ws(gen.latents([3, 4, 5]))
    G = gen.G
    with torch.no_grad():
        assert torch.equal(imgs[1:4], G.synthesis(ws_cols, "const"))  # top row: the column seeds
        assert torch.equal(imgs[4], G.synthesis(ws_rows[:1], "const")[0])  # left column: the row seeds
        # row 1: row seed 1's styles with layers 2 and 3 from column seeds 3, 4, 5 (same batch: bit-exact)
        ws = ws_rows[0:1].repeat(3, 1, 1)
        ws[:, 2:4] = ws_cols[:, 2:4]
        assert torch.equal(imgs[5:8], G.synthesis(ws, "const"))
        assert torch.equal(ws[1, :2], ws_rows[0, :2]) and torch.equal(ws[1, 4:], ws_rows[0, 4:])
        assert not torch.allclose(imgs[6], imgs[4])


def test_style_ranges_follow_figure_3():
    assert style_layers("coarse", 18, 1024) == [0, 1, 2, 3]  # 4^2 - 8^2
    assert style_layers("middle", 18, 1024) == [4, 5, 6, 7]  # 16^2 - 32^2
    assert style_layers("fine", 18, 1024) == list(range(8, 18))  # 64^2 - 1024^2
    assert style_layers("3-5", 18, 1024) == [3, 4, 5]
    assert style_layers("middle", 6, 16) == [4, 5]  # a 16 px generator has middle layers 4, 5 only
    for spec, message in [
        ("fine", r"--styles 'fine' names no layer of this generator: it has layers 0-5 at 16x16"),
        ("6-9", r"--styles '6-9' goes past the last layer of this generator: it has layers 0-5 at 16x16"),
        ("5-2", r"--styles '5-2': use coarse, middle, fine or a layer range a-b"),
        ("bogus", r"--styles 'bogus': use coarse"),
    ]:
        with pytest.raises(UserError, match=message) as info:
            style_layers(spec, 6, 16)
        assert "\n" not in str(info.value)


def test_style_mix_mistakes_are_one_line(stylegan_run, dcgan_run, tmp_path, capsys):
    out = str(tmp_path / "m.png")
    assert main(["style-mix", str(stylegan_run), "--styles", "fine", "--out", out]) == 2
    assert "gandist style-mix: error: --styles 'fine' names no layer of this generator" in _error(capsys)
    assert main(["style-mix", str(dcgan_run), "--out", out]) == 2
    line = _error(capsys)
    assert "style-mix needs a style-based generator (model.name=stylegan)" in line and "holds a dcgan" in line


def test_interpolate_in_z_and_w(stylegan_run, tmp_path):
    prefix = tmp_path / "walk"
    assert (
        main(["interpolate", str(stylegan_run), "--seeds", "1,2", "--steps", "5", "--out", str(prefix)]) == 0
    )
    for name in ("lerp", "slerp", "wlerp"):
        assert (tmp_path / f"walk_{name}.png").is_file(), name
    from gandist.generate import interpolation_strips

    gen = load_generator(stylegan_run)
    strips = interpolation_strips(gen, [1, 2], 5)
    ends = gen(gen.latents([1, 2]))
    for name in ("lerp", "slerp", "wlerp"):  # every path starts and ends at the seeds' images
        torch.testing.assert_close(strips[name][[0, 4]], ends, rtol=1e-5, atol=1e-5)
    w = gen.G.mapping(gen.latents([1, 2]))
    with torch.no_grad():
        mid = gen.G.synthesis(gen.G.broadcast((w[0] + w[1])[None] / 2), "const")
    torch.testing.assert_close(strips["wlerp"][2:3], mid, rtol=1e-5, atol=1e-5)  # the midpoint in W
