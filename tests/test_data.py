import math

import numpy as np
import pytest
import torch
from PIL import Image

from gandist.config import ConfigError, load_config, make_section
from gandist.data import build_dataset
from gandist.data.digits import load_digits_tensor
from gandist.errors import DataError


def test_ring_matches_its_definition():
    ds = build_dataset(make_section("data", name="ring"), seed=0)
    x = ds.sample(20000).double()
    angles = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(angles / (2 * math.pi / 8)) % 8
    centres = torch.stack([torch.cos(2 * math.pi * k / 8), torch.sin(2 * math.pi * k / 8)], 1)
    resid = x - centres
    assert resid.std().item() == pytest.approx(0.01, rel=0.03)  # per-coordinate std 0.01
    counts = torch.bincount(k.long(), minlength=8).double() / len(x)
    assert torch.all((counts - 1 / 8).abs() < 0.01)
    assert resid.mean(0).abs().max() < 5e-4


def test_grid_matches_its_definition():
    ds = build_dataset(make_section("data", name="grid"), seed=1)
    x = ds.sample(25000).double()
    centres = torch.round(x / 2) * 2
    assert set(centres.flatten().tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert (x - centres).std().item() == pytest.approx(0.05, rel=0.03)


def test_stream_is_a_function_of_position():
    ds = build_dataset(make_section("data", name="digits", resolution=16, mirror=True), seed=3)
    a = ds.sample(50)
    b = ds.sample(70)
    again = build_dataset(make_section("data", name="digits", resolution=16, mirror=True), seed=3)
    again.load_state_dict({"position": 50, "seed": 3})
    assert torch.equal(again.sample(70), b)
    assert torch.equal(ds.peek(50), a)
    other_seed = build_dataset(make_section("data", name="digits", resolution=16), seed=4)
    assert not torch.equal(other_seed.sample(50), a)


def test_digits_epoch_visits_every_image_once():
    ds = build_dataset(make_section("data", name="digits", resolution=8), seed=0)
    imgs = ds.sample(1797)
    ref, _ = load_digits_tensor(8)
    # the first epoch is a permutation of the dataset
    a = imgs.reshape(1797, -1).numpy()
    b = ref.reshape(1797, -1).numpy()
    a_sorted = a[np.lexsort(a.T[::-1])]
    b_sorted = b[np.lexsort(b.T[::-1])]
    assert np.array_equal(a_sorted, b_sorted)


def test_digits_values_and_upsampling():
    x8, y = load_digits_tensor(8)
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images, dtype=torch.float32)
    torch.testing.assert_close(x8[:, 0], raw / 16 * 2 - 1)
    x32, _ = load_digits_tensor(32)
    assert x32.shape == (1797, 1, 32, 32) and x32.min() >= -1 and x32.max() <= 1
    assert len(y) == 1797


def test_mirror_flips_about_half():
    ds = build_dataset(make_section("data", name="digits", resolution=8, mirror=True), seed=0)
    plain = build_dataset(make_section("data", name="digits", resolution=8), seed=0)
    a, b = ds.sample(400), plain.sample(400)
    flipped = (a != b).flatten(1).any(1)
    assert torch.equal(a[flipped], b[flipped].flip(-1))
    assert 0.4 < flipped.float().mean().item() < 0.6


def test_procedural_any_resolution_and_deterministic():
    for r in (5, 17, 64):
        ds = build_dataset(make_section("data", name="procedural", resolution=r, size=10), seed=0)
        x = ds.sample(4)
        assert x.shape == (4, 3, r, r) and x.min() >= -1 and x.max() <= 1
    a = build_dataset(make_section("data", name="procedural", resolution=16, size=10), seed=0).image(3)
    b = build_dataset(make_section("data", name="procedural", resolution=16, size=10), seed=9).image(3)
    assert torch.equal(a, b)  # image i is part of the dataset, not of the run


def _write_images(root, n=6, size=(20, 14)):
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        p = root / ("sub" if i % 2 else "") / f"img{i}.{'png' if i % 3 else 'jpg'}"
        Image.fromarray(arr).save(p, quality=95)
        paths.append(p)
    return paths


def test_folder_loader_matches_pil_reference(tmp_path):
    _write_images(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = build_dataset(make_section("data", name="folder", path=str(tmp_path), resolution=8), seed=0)
    assert len(ds.files) == 6
    from gandist.data.base import epoch_indices

    idx = epoch_indices(6, 0, 0, 6)
    got = ds.sample(6)
    for row, i in zip(got, idx):
        with Image.open(ds.files[i]) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize(
                (8, 8), Image.LANCZOS
            )
            ref = torch.tensor(np.asarray(im), dtype=torch.float32).permute(2, 0, 1) / 127.5 - 1
        torch.testing.assert_close(row, ref)


def test_folder_workers_give_the_same_stream(tmp_path):
    _write_images(tmp_path, n=10)
    base = dict(name="folder", path=str(tmp_path), resolution=8, batch_size=4)
    a = build_dataset(make_section("data", **base), seed=2)
    b = build_dataset(make_section("data", **base, num_workers=2), seed=2)
    for _ in range(4):
        assert torch.equal(a.sample(4), b.sample(4))
    assert a.position == b.position == 16


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(make_section("data", name="folder", path=str(tmp_path / "missing")), seed=0)
    with pytest.raises(DataError, match="holds no images"):
        build_dataset(make_section("data", name="folder", path=str(tmp_path)), seed=0)
    with pytest.raises(ConfigError, match="needs data.path"):
        load_config(None, ["data.name=folder", "model.name=dcgan"])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build_dataset(make_section("data", name="folder", path=str(tmp_path), resolution=8), seed=0)
    with pytest.raises(DataError, match=r"cannot read image '.*bad.png'.*remove or replace"):
        ds.sample(1)


def test_digits_are_scikit_learns_without_importing_it(monkeypatch):
    # The bundled file read directly equals sklearn.datasets.load_digits, and so does the fallback (load_digits
    # itself) used when this scikit-learn keeps the file elsewhere; a process that loads the digits imports
    # neither scikit-learn nor SciPy (about 0.9 s of every run on the digits).
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from gandist.data import digits

    want = load_digits()
    for found in (True, False):
        if not found:
            monkeypatch.setattr(digits, "bundled_digits_file", lambda: None)
        images, labels = digits.read_digits()
        assert images.dtype == want.images.dtype and np.array_equal(images, want.images)
        assert labels.dtype == want.target.dtype and np.array_equal(labels, want.target)
    code = ("import sys; from gandist.data.digits import load_digits_tensor; x, y = load_digits_tensor(16); "
            "print(tuple(x.shape), len(set(y.tolist())), 'sklearn' in sys.modules, 'scipy' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["(1797,", "1,", "16,", "16)", "10", "False", "False"]
