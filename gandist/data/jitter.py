"""CycleGAN's data jitter (`data.preprocess`): where each image is resized to and which window of it is cropped.

The official code (junyanz/pytorch-CycleGAN-and-pix2pix, `data/base_dataset.py`, `get_transform` as the
unaligned dataset calls it: no fixed params, a fresh draw per image) composes, per image:

| `data.preprocess` | resize (PIL BICUBIC) | then crop `data.resolution` x `data.resolution` at a random offset |
|---|---|---|
| `resize_and_crop` (default) | to `load_size` x `load_size` (aspect ratio not kept) | x, y uniform in 0 .. load_size - resolution |
| `scale_width_and_crop` | width to `load_size`, height int(max(load_size h / w, resolution)) (none if the width is already `load_size` and the height >= resolution) | x uniform in 0 .. load_size - resolution, y in 0 .. h' - resolution |
| `crop` | none: the image as stored | x in 0 .. w - resolution, y in 0 .. h - resolution |
| `none` | no jitter: gandist's own load (centre square, Lanczos to `data.resolution`) | none |

and then a horizontal flip with probability 1/2 (`data.mirror`, the official `no_flip` false), after the crop.
The official `scale_width` alone keeps each image's aspect ratio and trains one image at a time; gandist's
batches are square, so it is refused in favour of `scale_width_and_crop` (config.py).

Here every draw is a pure function of (seed, stream position): the offsets of the image at global position p
are floor(u * (extent - resolution + 1)) for the two uniforms u of position p in the `crop_window` stream
(float64, drawn in blocks as `gandist.data.base.mirror` draws its flips), and its flip is `mirror`'s. An
unpaired batch holds domain p % 2 at position p, so (seed, p) names the image and its domain: a rank's share
of a batch, a micro-batch or a resumed run crops exactly the windows of the same images drawn whole. The
torch loader and the DALI pipeline (`dali.py`) take their windows from `windows` below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gandist.data.base import POSITION_BLOCK
from gandist.errors import DataError
from gandist.rng import SALTS, position_generator


@dataclass(frozen=True)
class Window:
    """One image's jitter: resize the stored (width, height) image to `size` (width, height), then crop the
    `crop` x `crop` square whose top-left pixel is (left, top)."""

    size: tuple[int, int]
    left: int
    top: int
    crop: int


def resized_size(mode: str, width: int, height: int, load: int, crop: int) -> tuple[int, int]:
    """The (width, height) an image of (width, height) pixels is resized to before the crop: the official
    `transforms.Resize([load, load])` or `__scale_width(img, load, crop)`; `crop` keeps the stored size."""
    if mode == "resize_and_crop":
        return load, load
    if mode == "scale_width_and_crop":
        if width == load and height >= crop:  # the official early return: no resampling at all
            return width, height
        return load, int(max(load * height / width, crop))  # Python's float maths and truncation, as official
    if mode == "crop":
        return width, height
    raise ValueError(f"data.preprocess={mode} has no crop window")


def crop_uniforms(seed: int, positions: list[int]) -> list[tuple[float, float]]:
    """Two float64 uniforms in [0, 1) (left, top) for each global stream position: block b of POSITION_BLOCK
    positions is one draw of the generator (seed, b, `crop_window`), so any position can be recomputed alone."""
    blocks: dict[int, torch.Tensor] = {}
    out = []
    for p in positions:
        b, k = divmod(p, POSITION_BLOCK)
        if b not in blocks:
            g = position_generator(seed, b, SALTS["crop_window"])
            blocks[b] = torch.rand(POSITION_BLOCK, 2, dtype=torch.float64, generator=g)
        out.append((float(blocks[b][k, 0]), float(blocks[b][k, 1])))
    return out


def offset(u: float, extent: int, crop: int) -> int:
    """An integer uniform in 0 .. extent - crop from u in [0, 1): the official randint(0, extent - crop + 1)."""
    span = extent - crop + 1
    return min(math.floor(u * span), span - 1)


def windows(mode: str, seed: int, positions: list[int], stored: list[tuple[int, int]], load: int, crop: int,
            names: list[str]) -> list[Window]:  # fmt: skip
    """The window of each image: `stored` (width, height) of the image at each global position, `names` the
    images (a file, a scene) for the error when an image is smaller than the crop (only `crop` can be)."""
    out = []
    for (ux, uy), (w, h), name in zip(crop_uniforms(seed, positions), stored, names, strict=True):
        size = resized_size(mode, w, h, load, crop)
        if min(size) < crop:
            raise DataError(
                f"image '{name}' is {w}x{h}, smaller than the {crop} px crop of data.preprocess={mode}; "
                f"use data.preprocess=resize_and_crop or images of at least {crop}x{crop}"
            )
        out.append(Window(size, offset(ux, size[0], crop), offset(uy, size[1], crop), crop))
    return out
