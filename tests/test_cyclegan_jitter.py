"""CycleGAN's data jitter (`data.preprocess`, gandist/data/jitter.py) against the official code's transforms,
rebuilt here: PIL's BICUBIC resize, a crop at offsets this file derives from the seeded rule of each stream
position, the flip after it. The torch loader must give those pixels exactly, the DALI pipeline the same
windows (exactly where nothing is resized; within a level of the float64 definition of its own filter where it
resizes), and bad settings one line naming the fix. Ranks and resume: tests/test_data_ranks.py (every source,
the jitter on) and tests/test_cyclegan.py (a CycleGAN run resumed bit-exactly with the jitter on)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gandist.config import ConfigError, load_config
from gandist.data import build_dataset
from gandist.data.jitter import windows
from gandist.data.unpaired import domain_indices, paint, shapes_scene
from gandist.errors import DataError
from gandist.rng import SALTS, position_generator

SEED = 3
BLOCK = 256  # positions per generator of the position-keyed streams (gandist.data.base.POSITION_BLOCK)


# ---------------------------------------------------------------------------------------------------
# The official transforms, written out (pytorch-CycleGAN-and-pix2pix data/base_dataset.py, get_transform with
# params=None as the unaligned dataset calls it), with this file's own derivation of each position's draws


def _official_size(mode: str, w: int, h: int, load: int, crop: int) -> tuple[int, int]:
    if mode == "resize_and_crop":  # transforms.Resize([load_size, load_size], BICUBIC)
        return load, load
    if mode == "scale_width_and_crop":  # __scale_width(img, load_size, crop_size)
        return (w, h) if w == load and h >= crop else (load, int(max(load * h / w, crop)))
    return w, h  # crop: no resize


def _draws(p: int, extent: tuple[int, int], crop: int) -> tuple[int, int, bool]:
    """(left, top, flip) of position p: RandomCrop's randint(0, extent - crop + 1) per axis from the position's
    two float64 uniforms of the crop_window stream, RandomHorizontalFlip's coin from the mirror stream."""
    u = torch.rand(
        BLOCK, 2, dtype=torch.float64, generator=position_generator(SEED, p // BLOCK, SALTS["crop_window"])
    )
    coin = torch.rand(BLOCK, generator=position_generator(SEED, p // BLOCK, SALTS["mirror"]))
    left, top = (math.floor(float(u[p % BLOCK, k]) * (extent[k] - crop + 1)) for k in (0, 1))
    return left, top, bool(coin[p % BLOCK] < 0.5)


def _cut(pixels: np.ndarray, left: int, top: int, crop: int, flip: bool) -> torch.Tensor:
    """[H, W, C] pixel levels -> [C, crop, crop] in [-1, 1]: uint8 levels by the loaders' float32 formula
    (level / 127.5 - 1, so equal pixels compare equal), float levels in float64."""
    out = pixels[top : top + crop, left : left + crop]
    out = torch.from_numpy((out[:, ::-1] if flip else out).copy()).permute(2, 0, 1)
    return out.float() / 127.5 - 1.0 if out.dtype == torch.uint8 else out / 127.5 - 1


def _noise_folders(root, sizes: dict[str, tuple[int, int]], counts: dict[str, int]) -> None:
    """Independent noise pixels (any wrong window or flip shows) of (width, height) per domain, as PNG."""
    g = torch.Generator().manual_seed(0)
    for name, (w, h) in sizes.items():
        (root / name).mkdir(parents=True)
        for i in range(counts[name]):
            pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def _unpaired(root, *overrides: str, batch: int = 6):
    return build_dataset(load_config("cyclegan_256", [f"data.path={root}", "data.resolution=32", f"data.batch_size={batch}",
                                                      *overrides]).data, SEED)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# The torch loader: the official pixels, exactly


@pytest.mark.parametrize("mode, load", [("resize_and_crop", 36), ("resize_and_crop", 40),
                                        ("scale_width_and_crop", 36), ("crop", 0)])  # fmt: skip
def test_torch_loader_cuts_the_official_windows_of_pil_bicubic_resizes(tmp_path, mode, load):
    """Non-square stored images (40x36 and 36x44): resize_and_crop squashes them to load x load,
    scale_width_and_crop keeps B (already 36 wide and taller than the crop) and resamples A to 36x32, crop cuts
    from the stored pixels; 4 batches of 6 cover 24 positions of both domains with various windows."""
    _noise_folders(tmp_path, {"trainA": (40, 36), "trainB": (36, 44)}, {"trainA": 5, "trainB": 7})
    src = _unpaired(tmp_path, f"data.preprocess={mode}", f"data.load_size={load}")
    assert src.cfg.mirror  # the official no_flip false, by default
    got = torch.cat([src.next_batch(6).x for _ in range(4)])
    seen = set()
    for p in range(24):
        domain = p % 2
        path = src.files[domain][domain_indices(src.counts[domain], SEED, domain, p // 2, 1)[0]]
        with Image.open(path) as im:
            size = _official_size(mode, *im.size, load or 36, 32)
            pixels = np.asarray(im.convert("RGB").resize(size, Image.Resampling.BICUBIC))
        left, top, flip = _draws(p, size, 32)
        seen.add((domain, left, top))
        assert torch.equal(got[p], _cut(pixels, left, top, 32, flip)), f"position {p} ({mode})"
    assert len(seen) > 8  # the windows really move


def test_shapes_are_drawn_at_the_load_size_and_cropped():
    """The procedural scenes are drawn at the load size (36 px for 32: defined in continuous coordinates, no
    filter) and cropped and flipped as folders are; `pairs`, the known answer, is never jittered."""
    cfg = load_config("cyclegan_shapes", ["data.preprocess=resize_and_crop", "data.mirror=true"]).data
    src = build_dataset(cfg, SEED)
    assert cfg.load == 36
    got = torch.cat([src.next_batch(4).x for _ in range(3)])
    for p in range(12):
        domain = p % 2
        scene = domain_indices(cfg.count, SEED, domain, p // 2, 1)[0]
        left, top, flip = _draws(p, (36, 36), 32)
        want = paint(shapes_scene(scene, 36), domain)[:, top : top + 32, left : left + 32]
        assert torch.equal(got[p], want.flip(-1) if flip else want), f"position {p}"
    a, b = src.pairs(2)
    assert torch.equal(a[0], paint(shapes_scene(cfg.count, 32), 0)) and torch.equal(
        b[1], paint(shapes_scene(cfg.count + 1, 32), 1)
    )


def test_offsets_are_uniform_over_the_official_range_and_flips_a_fair_coin():
    """resize_and_crop 286 -> 256: RandomCrop draws each offset uniformly from 0..30 (31 values); 31000
    positions give ~1000 per value (sd ~31), and the left and top offsets are independent."""
    n = 31000
    wins = windows("resize_and_crop", SEED, list(range(n)), [(256, 256)] * n, 286, 256, ["x"] * n)
    left = torch.tensor([w.left for w in wins])
    top = torch.tensor([w.top for w in wins])
    for offsets in (left, top):
        counts = torch.bincount(offsets, minlength=31)
        assert counts.numel() == 31 and counts.min() > 850 and counts.max() < 1150, counts.tolist()
    assert abs(torch.corrcoef(torch.stack([left, top]).double())[0, 1].item()) < 0.03
    assert {w.size for w in wins} == {(286, 286)}


# ---------------------------------------------------------------------------------------------------
# DALI: the same windows


def _cubic_clamped(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The float64 definition of DALI's INTERP_CUBIC when upsampling: Keys' cubic with a = -0.5 (PIL's BICUBIC
    kernel), pixel centres aligned (source x = (i + 0.5) in / out - 0.5), taps past the edge repeat the edge
    pixel, one pass per axis without rounding in between. uint8 [H, W, C] -> float [h, w, C]."""

    def keys(t: float) -> float:
        t, a = abs(t), -0.5
        if t < 1:
            return ((a + 2) * t - (a + 3)) * t * t + 1
        return (((t - 5) * t + 8) * t - 4) * a if t < 2 else 0.0

    def matrix(n_in: int, n_out: int) -> np.ndarray:
        assert n_out >= n_in, "the definition here is for upsampling (no antialiasing)"
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            x = (i + 0.5) * n_in / n_out - 0.5
            for k in range(math.floor(x) - 1, math.floor(x) + 3):
                m[i, min(max(k, 0), n_in - 1)] += keys(k - x)
        return m

    h, w = pixels.shape[:2]
    out = np.einsum("yh,hwc,xw->yxc", matrix(h, size[1]), pixels.astype(np.float64), matrix(w, size[0]))
    return np.clip(out, 0, 255)


@pytest.mark.parametrize("mode", ["crop", "resize_and_crop", "scale_width_and_crop"])
def test_dali_cuts_the_same_windows(tmp_path, mode):
    """Stored 32x34 (A) and 34x32 (B) noise PNGs, 32 px crops: `crop` resizes nothing, so DALI must equal the
    torch loader bit for bit; `resize_and_crop` (to 36x36) and `scale_width_and_crop` (A to 36x38, B to 36x33)
    upsample both axes, where DALI's cubic is compared with the float64 definition of its filter cut at the
    windows derived here: every output level is that value rounded down or up (|error| < 1 level: DALI's
    float coefficient tables and one rounding; a window one pixel off misses by tens of levels on noise). Its
    distance to the torch loader's PIL pixels is printed, not asserted: PIL rounds to 8 bits between its two
    passes and renormalises the taps at the edges, DALI does neither (up to ~15 levels on noise)."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e '.[dali]')")
    _noise_folders(tmp_path, {"trainA": (32, 34), "trainB": (34, 32)}, {"trainA": 3, "trainB": 4})
    dali = _unpaired(tmp_path, f"data.preprocess={mode}", "data.loader=dali", batch=4)
    torch_loader = _unpaired(tmp_path, f"data.preprocess={mode}", batch=4)
    got = torch.cat([dali.next_batch(4).x for _ in range(3)])
    want = torch.cat([torch_loader.next_batch(4).x for _ in range(3)])
    if mode == "crop":
        assert torch.equal(got, want)
    for p in range(12):
        domain = p % 2
        path = dali.files[dali.indices(p, 1)[0]]
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        size = _official_size(mode, pixels.shape[1], pixels.shape[0], 36, 32)
        left, top, flip = _draws(p, size, 32)
        ref = _cut(
            _cubic_clamped(pixels, size) if size != pixels.shape[1::-1] else pixels, left, top, 32, flip
        )
        levels = (got[p].double() - ref).abs() * 127.5
        assert levels.max() < 1, f"position {p} (domain {domain}, {mode}): {levels.max():.3f} levels off"
    gap = (got - want).abs() * 127.5
    print(f"{mode}: DALI vs PIL pixels, max {gap.max():.0f} levels, mean {gap.mean():.3f}")
    # off-pipeline reads (evaluation, pictures) are the torch loader's; and resume: a pipeline rebuilt from the
    # state continues the same windows
    resumed = _unpaired(tmp_path, f"data.preprocess={mode}", "data.loader=dali", batch=4)
    resumed.load_state_dict(dali.state_dict())
    assert torch.equal(resumed.next_batch(4).x, dali.next_batch(4).x)
    assert torch.equal(dali.peek(6, position=2), torch_loader.peek(6, position=2))


def test_dali_rank_shares_cut_the_windows_of_the_whole_batch(tmp_path):
    """Two DALI pipelines (rank 0 and 1 of 2, 2 images each) against one torch loader's batches of 4: `crop`
    resizes nothing, so the shares concatenate to the whole batch bit for bit, windows and flips included."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e '.[dali]')")
    from gandist.data.dali import DaliUnpaired

    _noise_folders(tmp_path, {"trainA": (40, 36), "trainB": (36, 44)}, {"trainA": 3, "trainB": 4})
    cfg = load_config("cyclegan_256", [f"data.path={tmp_path}", "data.resolution=32", "data.batch_size=4",
                                       "data.preprocess=crop", "data.loader=dali"]).data  # fmt: skip
    ranks = [DaliUnpaired(cfg, SEED, rank=r, world=2) for r in range(2)]
    whole = _unpaired(tmp_path, "data.preprocess=crop", batch=4)
    for _ in range(3):
        shares = torch.cat([r.next_batch(2).x for r in ranks])
        assert torch.equal(shares, whole.next_batch(4).x)


# ---------------------------------------------------------------------------------------------------
# Bad input: one line naming the fix


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["data.preprocess=scale_width"],
            r"data.preprocess=scale_width keeps each image's aspect ratio.*"
            r"use data.preprocess=scale_width_and_crop",
        ),
        (
            ["data.preprocess=resize_crop"],
            r"data.preprocess='resize_crop' is not known \(did you mean 'resize_and_crop'\?\); "
            r"valid: resize_and_crop, scale_width_and_crop, crop, none",
        ),
        (
            ["data.load_size=200"],
            r"data.load_size=200 is smaller than the 256 px crop \(data.resolution\); "
            r"set data.load_size>=256, or 0 for resolution \* 286 / 256 = 286",
        ),
        (
            ["data.preprocess=crop", "data.load_size=300"],
            r"data.load_size=300 is not used by data.preprocess=crop",
        ),
        (["data.load_size=-1"], r"data.load_size"),
    ],
)
def test_bad_jitter_settings_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config("cyclegan_256", overrides)
    assert "\n" not in str(err.value)


def test_jitter_settings_belong_to_unpaired_data_only():
    with pytest.raises(ConfigError, match=r"unknown config key 'data.preprocess'"):
        load_config(None, ["data.name=digits", "data.preprocess=crop"])


def test_an_image_smaller_than_the_crop_is_named_with_the_fix(tmp_path):
    _noise_folders(tmp_path, {"trainA": (40, 40), "trainB": (30, 40)}, {"trainA": 2, "trainB": 2})
    src = _unpaired(tmp_path, "data.preprocess=crop", batch=2)
    with pytest.raises(DataError, match=r"image '.*trainB/\d.png' is 30x40, smaller than the 32 px crop of "
                                        r"data.preprocess=crop; use data.preprocess=resize_and_crop"):  # fmt: skip
        src.next_batch(2)
