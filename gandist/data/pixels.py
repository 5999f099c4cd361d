"""One conversion from whatever Pillow opens to 8-bit RGB or greyscale, shared by `gandist prepare` and
folder training, so a file gives the same pixels in both.

Each mode is scaled by what its values mean, never clipped into 8 bits (Pillow's own `convert("RGB")`
clips a 16-bit greyscale image to 255, which turned 16-bit data sets almost white):

  1                      0 / 255
  L, RGB                 as stored
  P                      its palette (RGBA where the palette or tRNS has transparency)
  I;16, I;16B, I;16L     v / 257            (65535 -> 255, rounded)
  I (32-bit integer)     v / 257 for 0..65535, the range a 16-bit file opens in; other values are refused
  F (32-bit float)       v * 255 for 0..1; other values are refused
  CMYK                   (255 - c)(255 - k) / 255 per channel (no colour profile: naive ink subtraction)
  LA, PA, RGBA, La, RGBa alpha over white: c a / 255 + 255 (1 - a / 255) (premultiplied La/RGBa first un-multiplied by Pillow)
  anything else          Pillow's convert("RGB") (YCbCr, LAB, HSV, RGBX)

The EXIF orientation is applied first (a phone's portrait photo is stored sideways). One channel is
ITU-R 601-2 luma, (299 R + 587 G + 114 B) / 1000, which keeps a grey pixel's value exactly. Every step is
integer arithmetic rounded to nearest, so the result is the float64 formula rounded once (0.5 level),
except CMYK and alpha, rounded once more before the luma (1 level in all).

Images above Pillow's decompression-bomb limit (89.5 Mpx) are refused with a line, never a leaked
warning: decoding one costs seconds and gigabytes per read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

ROWS = 512  # rows per block of the integer maths: keeps a 10k-wide image's temporaries near 60 MB


class PixelError(ValueError):
    """An image whose values cannot be mapped to 8 bits without guessing, or one too large to decode."""


def open_image(path: str | Path):
    """Open and fully decode `path` with its EXIF orientation applied. Raises PixelError for an image
    above Pillow's pixel limit (the message says how large it is), OSError / ValueError for a bad file."""
    from PIL import Image, ImageOps

    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                Image.MAX_IMAGE_PIXELS = None  # header only, to name the size
                try:
                    with Image.open(path) as probe:
                        w, h = probe.size
                finally:
                    Image.MAX_IMAGE_PIXELS = limit
            raise PixelError(
                f"{w}x{h} pixels ({w * h / 1e6:.1f} Mpx) is above the {limit / 1e6:.1f} Mpx that is safe to "
                "decode; shrink it first (any image editor, or ImageMagick: mogrify -resize 4096x4096 FILE)"
            ) from None
    try:
        im.load()  # full decode: a truncated file fails here, not later in training
        upright = ImageOps.exif_transpose(im)
    finally:
        im.close()
    return upright


def _round_div(num: np.ndarray, den: int) -> np.ndarray:
    """num / den rounded to nearest for num >= 0 (den odd here: no ties)."""
    return (num + den // 2) // den


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 colour [H, W, C] composited over white with uint8 alpha [H, W]."""
    c = colour.astype(np.int32)
    a = alpha.astype(np.int32)[..., None]
    return _round_div(c * a + 255 * (255 - a), 255).astype(np.uint8)


def _rgb_block(mode: str, arr: np.ndarray) -> np.ndarray:
    """One block of rows of the decoded array -> uint8 [h, W, 3]."""
    if mode == "1":
        g = np.where(arr, 255, 0).astype(np.uint8)
    elif mode in ("L", "RGB"):
        g = arr
    elif mode.startswith("I;16"):
        g = _round_div(arr.astype(np.int64), 257).astype(np.uint8)
    elif mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise PixelError(
                f"32-bit integer pixels from {lo} to {hi}, outside the 16-bit range 0..65535 this mode is "
                "read in; save the image as 8- or 16-bit"
            )
        g = _round_div(arr.astype(np.int64), 257).astype(np.uint8)
    elif mode == "F":
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise PixelError(
                f"floating-point pixels from {np.nanmin(arr):g} to {np.nanmax(arr):g}; they are read as 0..1, "
                "so scale the image to 0..1 or save it as 8- or 16-bit"
            )
        g = np.floor(arr.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    elif mode == "CMYK":
        c = arr.astype(np.int32)
        g = _round_div((255 - c[..., :3]) * (255 - c[..., 3:4]), 255).astype(np.uint8)
    elif mode == "LA":
        g = _over_white(arr[..., 0:1], arr[..., 1])[..., 0]
    elif mode == "RGBA":
        g = _over_white(arr[..., :3], arr[..., 3])
    else:
        raise AssertionError(mode)
    return np.repeat(g[..., None], 3, axis=2) if g.ndim == 2 else g


def to_uint8(im, channels: int = 3) -> np.ndarray:
    """A decoded PIL image (see `open_image`) -> uint8 [H, W, channels], channels 3 (RGB) or 1 (luma)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    mode = im.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info or (im.palette is not None and im.palette.mode == "RGBA")
        im, mode = (im.convert("RGBA"), "RGBA") if has_alpha else (im.convert("RGB"), "RGB")
    elif mode in ("La", "RGBa"):  # premultiplied alpha: Pillow un-multiplies
        im, mode = im.convert("RGBA" if mode == "RGBa" else "LA"), "RGBA" if mode == "RGBa" else "LA"
    elif not (mode in ("1", "L", "RGB", "I", "F", "CMYK", "LA", "RGBA") or mode.startswith("I;16")):
        im, mode = im.convert("RGB"), "RGB"
    arr = np.asarray(im)
    if mode.startswith("I;16") and arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(np.uint16)
    h = arr.shape[0]
    out = np.empty((h, arr.shape[1], channels), np.uint8)
    for top in range(0, h, ROWS):
        rgb = _rgb_block(mode, arr[top : top + ROWS])
        if channels == 1:
            w = rgb.astype(np.int32)
            rgb = _round_div(299 * w[..., 0:1] + 587 * w[..., 1:2] + 114 * w[..., 2:3], 1000).astype(np.uint8)
        out[top : top + ROWS] = rgb
    return out


def load_square(path: str | Path, resolution: int, channels: int = 3, resample: str = "lanczos") -> np.ndarray:
    """Open, convert (`to_uint8`), centre-crop to a square and resize: uint8 [R, R, channels]."""
    from PIL import Image

    filters = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
               "bilinear": Image.Resampling.BILINEAR, "box": Image.Resampling.BOX}  # fmt: skip
    with open_image(path) as im:
        arr = to_uint8(im, channels)
    h, w = arr.shape[:2]
    s = min(w, h)
    top, left = (h - s) // 2, (w - s) // 2
    arr = np.ascontiguousarray(arr[top : top + s, left : left + s])
    if s != resolution:
        small = Image.fromarray(arr[..., 0] if channels == 1 else arr)
        arr = np.array(small.resize((resolution, resolution), filters[resample]))  # a writable copy
        arr = arr[..., None] if channels == 1 else arr
    return arr
