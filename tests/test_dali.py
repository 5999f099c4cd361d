"""The DALI source on CPU (device_id=None): same pixels as PIL, shards, resolution switches, resume."""

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e '.[dali]')")

from gandist.config import make_section  # noqa: E402
from gandist.data import build_dataset  # noqa: E402
from gandist.data.dali import DaliFolder  # noqa: E402
from gandist.data.folder import load_image  # noqa: E402
from gandist.data.prepare import Options, prepare  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("dali")
    src = root / "src"
    src.mkdir()
    proc = build_dataset(make_section("data", name="procedural", resolution=40, size=30), 0)
    for i in range(30):
        img = ((proc.image(i) + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(img).save(src / f"{i:03d}.png")
    prepare(src, root / "dst", Options(32), workers=1, progress=False)
    return root / "dst"


def cfg(path, **kw):
    return make_section(
        "data", name="folder", path=str(path), resolution=32, batch_size=4, loader="dali", **kw
    )


def test_same_pixels_as_the_pil_loader(prepared):
    d = build_dataset(cfg(prepared, mirror=True), seed=1)
    t = build_dataset(
        make_section("data", name="folder", path=str(prepared), resolution=32, batch_size=4, mirror=True),
        seed=1,
    )
    assert isinstance(d, DaliFolder)
    for _ in range(3):
        a, b = d.sample(4), t.sample(4)
        assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # both decode with libjpeg-turbo: identical


def test_progressive_growing_serves_the_same_mip_maps_through_both_loaders(prepared):
    """The loop asks a source for a lower resolution with serve_resolution: both loaders box-filter the
    prepared images on the fly, so a growing run sees the same reals whichever loader it uses."""
    d = build_dataset(cfg(prepared, mirror=True), seed=3)
    t = build_dataset(
        make_section("data", name="folder", path=str(prepared), resolution=32, batch_size=4, mirror=True),
        seed=3,
    )
    for source in (d, t):
        source.serve_resolution(8)
    a, b = d.next_batch(4).x, t.next_batch(4).x
    full = t.peek(4, position=0)  # peek is served at 8 px too
    assert a.shape == b.shape == full.shape == (4, 3, 8, 8)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    t.serve_resolution(None)
    ref = t.peek(4, position=0).reshape(4, 3, 8, 4, 8, 4).mean(dim=(3, 5))  # 4x4 blocks, written out
    torch.testing.assert_close(full, ref, atol=1e-6, rtol=0)


def test_resize_matches_pil_lanczos_within_tolerance(prepared):
    d = DaliFolder(cfg(prepared), seed=0, resolution_at=lambda k: 16)
    x = d.sample(4)
    ref = torch.stack([load_image(d.files[i], 16, 3) for i in d.indices(0, 4)]).float() / 127.5 - 1
    assert x.shape == (4, 3, 16, 16)
    assert (x - ref).abs().mean() < 0.01 and (x - ref).abs().max() < 0.15  # two Lanczos-3 implementations


def test_shards_are_disjoint_and_cover_the_dataset(prepared):
    world, n = 3, 5 * 4  # 3 ranks, 5 batches of 4 each: 60 global positions = two epochs of 30 files
    ranks = [DaliFolder(cfg(prepared), seed=2, rank=r, world=world) for r in range(world)]
    positions = [set(d.global_positions(0, n)) for d in ranks]
    assert all(not (positions[a] & positions[b]) for a in range(world) for b in range(a + 1, world))
    assert set().union(*positions) == set(range(world * n))  # together: the whole global stream
    first_epoch = []
    for d in ranks:
        first_epoch += [i for p, i in zip(d.global_positions(0, n), d.indices(0, n)) if p < 30]
    assert sorted(first_epoch) == list(range(30))  # every file exactly once per epoch, split across ranks


def test_resolution_switch_takes_effect_at_the_promised_batch(prepared):
    d = DaliFolder(cfg(prepared), seed=0, prefetch=2)
    assert d.set_resolution(16, from_batch=3) == 3
    sizes = [d.sample(4).shape[-1] for _ in range(5)]
    assert sizes == [32, 32, 32, 16, 16]
    promised = d.set_resolution(8)  # now: batches already prefetched keep 16
    assert promised >= d.batches_served
    later = [(d.batches_served, d.sample(4).shape[-1]) for _ in range(5)]
    assert all(s == (8 if k >= promised else 16) for k, s in later)


def test_resume_yields_the_same_next_batch(prepared):
    a = build_dataset(cfg(prepared, mirror=True), seed=3)
    for _ in range(4):
        a.sample(4)
    state = a.state_dict()
    expected = a.sample(4)
    b = build_dataset(cfg(prepared, mirror=True), seed=3)
    b.load_state_dict(state)
    torch.testing.assert_close(b.sample(4), expected, atol=0, rtol=0)


def test_training_runs_on_dali(prepared, tmp_path):
    from gandist.cli import main

    args = ["train", "digits_dcgan", "--out", str(tmp_path), "--no-progress", "--set", "data.name=folder", "--set",
            f"data.path={prepared}", "--set", "data.loader=dali", "--set", "data.resolution=32", "--set",
            "data.batch_size=4", "--set", "train.steps=3", "--set", "model.g_width=4", "--set", "model.d_width=4"]  # fmt: skip
    assert main(args) == 0
    assert (tmp_path / "samples" / "reals.png").is_file()
    np.testing.assert_equal((tmp_path / "checkpoints").is_dir(), True)
