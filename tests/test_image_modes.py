"""Every image mode Pillow opens, through `gandist prepare` and the folder data source, against a float64
reference conversion written here from the definitions (not from gandist.data.pixels)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gandist.cli import main
from gandist.data.folder import load_image
from gandist.data.pixels import to_uint8

H, W = 5, 7  # odd, unequal sides: a transposed or mirrored result cannot pass


def _ref_rgb(mode: str, a: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """float64 [H, W, 3] in 0..255 from the raw stored values of `mode`."""
    a = a.astype(np.float64)
    if mode == "1":
        g = a * 255.0
    elif mode in ("L", "RGB"):
        g = a
    elif mode in ("I;16", "I"):
        g = a / 65535.0 * 255.0
    elif mode == "F":
        g = a * 255.0
    elif mode == "CMYK":
        g = 255.0 * (1 - a[..., :3] / 255.0) * (1 - a[..., 3:] / 255.0)
    elif mode in ("LA", "RGBA"):
        alpha = a[..., -1:] / 255.0
        g = a[..., :-1] * alpha + 255.0 * (1 - alpha)
    elif mode in ("P", "PA"):
        rgba = palette[a[..., 0].astype(int)].astype(np.float64)
        alpha = (a[..., 1:] if mode == "PA" else rgba[..., 3:]) / 255.0
        g = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
    else:
        raise AssertionError(mode)
    g = g[..., None] if g.ndim == 2 else g
    return np.repeat(g, 3, axis=2) if g.shape[2] == 1 else g


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


# mode -> (raw values, tolerance in 8-bit levels of the RGB result). 0.5: the float64 value rounded once;
# the luma of a composite or CMYK result is rounded twice (RGB first): 1 level.
RNG = np.random.default_rng(30)
PALETTE = np.concatenate([RNG.integers(0, 256, (256, 3)), RNG.integers(0, 256, (256, 1))], axis=1)
CASES = {
    "1": RNG.integers(0, 2, (H, W)).astype(bool),
    "L": RNG.integers(0, 256, (H, W)).astype(np.uint8),
    "LA": RNG.integers(0, 256, (H, W, 2)).astype(np.uint8),
    "P": RNG.integers(0, 256, (H, W)).astype(np.uint8),
    "PA": RNG.integers(0, 256, (H, W, 2)).astype(np.uint8),
    "RGB": RNG.integers(0, 256, (H, W, 3)).astype(np.uint8),
    "RGBA": RNG.integers(0, 256, (H, W, 4)).astype(np.uint8),
    "CMYK": RNG.integers(0, 256, (H, W, 4)).astype(np.uint8),
    "I;16": RNG.integers(0, 65536, (H, W)).astype(np.uint16),
    "I": RNG.integers(0, 65536, (H, W)).astype(np.int32),
    "F": RNG.random((H, W)).astype(np.float32),
}


def _image(mode: str) -> Image.Image:
    a = CASES[mode]
    if mode in ("P", "PA"):
        im = Image.frombytes(mode, (W, H), a.tobytes())
        im.putpalette(PALETTE.astype(np.uint8).tobytes(), rawmode="RGBA")
        return im
    if mode == "1":
        return Image.fromarray(a.astype(np.uint8) * 255).convert("1")
    return Image.frombytes(mode, (W, H), np.ascontiguousarray(a).tobytes())


def _reference(mode: str, channels: int) -> np.ndarray:
    a = CASES[mode]
    rgb = _ref_rgb(mode, a[..., None] if mode == "P" else a, PALETTE)  # P: the RGBA palette's alpha applies
    return (_luma(rgb)[..., None] if channels == 1 else rgb)


TOL = {("CMYK", 1): 1.0, ("LA", 1): 1.0, ("RGBA", 1): 1.0, ("P", 1): 1.0, ("PA", 1): 1.0}


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("mode", list(CASES))
def test_every_mode_against_float64(mode, channels):
    got = to_uint8(_image(mode), channels).astype(np.float64)
    ref = _reference(mode, channels)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= TOL.get((mode, channels), 0.5)


def _png16(a: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): IHDR, one IDAT, IEND."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


def _files(folder: Path) -> dict[str, np.ndarray]:
    """Square (H x H) files in every mode a format stores, plus 16-bit RGB and an EXIF-rotated one;
    name -> float64 RGB reference."""
    folder.mkdir()
    refs = {}
    for i, (mode, fmt) in enumerate([("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGB", "PNG"),
                                     ("RGBA", "PNG"), ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"),
                                     ("CMYK", "TIFF"), ("I;16", "TIFF")]):  # fmt: skip
        name = f"{i:02d}-{mode.replace(';', '')}.{fmt.lower()}"
        _image(mode).crop((0, 0, H, H)).save(folder / name, fmt)
        refs[name] = _reference(mode, 3)[:, :H]
    rgb16 = RNG.integers(0, 65536, (H, H, 3))
    (folder / "20-rgb16.png").write_bytes(_png16(rgb16))
    refs["20-rgb16.png"] = rgb16 / 65535.0 * 255.0
    # EXIF orientation 6: the stored pixels are shown rotated 90 degrees clockwise
    stored = CASES["RGB"][:, : H - 1]  # 5 x 4 stored, 4 x 5 shown: the crop below keeps it square after rotation
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(folder / "21-exif.png", exif=exif.tobytes())
    shown = np.rot90(stored, k=-1).astype(np.float64)  # [4, 5, 3]
    refs["21-exif.png"] = shown[:, 0:4]  # centre crop of 5 columns to 4: (5 - 4) // 2 = 0
    return refs


def test_prepare_and_folder_training_read_every_mode(tmp_path, capsys):
    refs = _files(tmp_path / "src")
    names = sorted(refs)
    res = {n: (4 if n == "21-exif.png" else H) for n in names}
    for r in sorted(set(res.values())):
        dst = tmp_path / f"out{r}"
        assert main(["prepare", str(tmp_path / "src"), str(dst), "--resolution", str(r), "--format", "npy",
                     "--workers", "1", "--no-progress"]) == 0  # fmt: skip
        assert "0 skipped" in capsys.readouterr().out
        for i, n in enumerate(names):
            if res[n] != r:
                continue
            got = np.load(dst / "images" / "00000" / f"{i:08d}.npy").astype(np.float64)
            # 16-bit RGB: Pillow decodes it to 8 bits itself by keeping the high byte, floor(v / 256), which is
            # within 1 level of v / 257 (no mode holds 16-bit colour, so it cannot be read any finer)
            assert np.abs(got - refs[n]).max() <= (1.0 if n == "20-rgb16.png" else 0.5), n
            folder = load_image(tmp_path / "src" / n, r, 3).permute(1, 2, 0).numpy()
            assert np.array_equal(folder, got.astype(np.uint8)), n  # training reads what prepare writes


@pytest.mark.parametrize(
    "mode,values,what",
    [("I", np.full((H, W), 70000, np.int32), "outside the 16-bit range"),
     ("F", np.full((H, W), 2.0, np.float32), "read as 0..1")],
)  # fmt: skip
def test_values_without_an_8_bit_meaning_are_refused(tmp_path, capsys, mode, values, what):
    (tmp_path / "src").mkdir()
    Image.frombytes(mode, (W, H), values.tobytes()).save(tmp_path / "src" / "x.tiff")
    Image.new("RGB", (W, H)).save(tmp_path / "src" / "y.png")
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "dst"), "--resolution", "4", "--no-progress"]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert what in (tmp_path / "dst" / "report.txt").read_text()


def test_decompression_bomb_is_one_line_never_a_warning(tmp_path, capsys, monkeypatch):
    # a 10000^2 file costs seconds to make; the same code path at a limit of 1000 pixels costs nothing
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "src").mkdir()
    Image.new("L", (40, 40)).save(tmp_path / "src" / "warn.png")  # 1600 px: Pillow warns (> limit)
    Image.new("L", (50, 50)).save(tmp_path / "src" / "error.png")  # 2500 px: Pillow raises (> 2 x limit)
    Image.new("L", (20, 20)).save(tmp_path / "src" / "ok.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "dst"), "--resolution", "8",
                     "--workers", "1", "--no-progress"]) == 0  # fmt: skip
        from gandist.errors import DataError

        with pytest.raises(DataError, match=r"40x40 pixels .* shrink it first"):
            load_image(tmp_path / "src" / "warn.png", 8, 3)
    assert "2 skipped" in capsys.readouterr().out
    report = (tmp_path / "dst" / "report.txt").read_text()
    assert "50x50 pixels" in report and "40x40 pixels" in report
    assert Image.MAX_IMAGE_PIXELS == 1000  # the probe restores the limit


def test_png16_helper_is_a_real_png():
    a = np.arange(12).reshape(2, 2, 3) * 5000
    im = Image.open(io.BytesIO(_png16(a)))
    assert im.size == (2, 2) and im.mode == "RGB"


def test_the_dali_loader_reads_every_mode_as_the_torch_loader(tmp_path):
    """Training from a folder with `data.loader: dali` sees the same pixels as the torch loader for every mode
    above (16-bit greyscale and RGB, float and CMYK TIFFs included). The EXIF-rotated file is left out: it is
    4x4 once rotated, and resizing it would compare two resampling filters instead of two decoders."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e '.[dali]')")
    from gandist.config import make_section
    from gandist.data import build_dataset

    _files(tmp_path / "src")
    (tmp_path / "src" / "21-exif.png").unlink()
    n = len(list((tmp_path / "src").iterdir()))
    served = []
    for loader in ("torch", "dali"):
        cfg = make_section("data", name="folder", path=str(tmp_path / "src"), resolution=H, batch_size=n,
                           mirror=False, loader=loader)  # fmt: skip
        source = build_dataset(cfg, seed=0)
        assert (type(source).__name__ == "DaliFolder") == (loader == "dali")
        served.append(source.peek(n))
    assert served[0].shape == (n, 3, H, H)
    assert torch.equal(served[0], served[1])
