"""Unpaired two-domain data for image-to-image translation (CycleGAN, Zhu et al. 2017).

A batch of n images interleaves the domains, A, B, A, B, ... with `domain` 0, 1, 0, 1, ...: n / 2 images of
each, and the position counts images of both. The A and B streams follow their own permutations (different
salts), so A image i is not shown beside B image i even when both domains hold the same number of images:
the pairing is never seen in training.

| source | domains | known answer |
|---|---|---|
| `unpaired` | data.path/trainA and data.path/trainB (the horse2zebra layout), any format `prepare` reads; `data.loader: torch` or `dali` | none |
| `shapes` | procedural discs, boxes and triangles in colour scheme A and scheme B | scene i in both schemes |

Each image is jittered as the official CycleGAN code does (`data.preprocess`, `gandist.data.jitter`): by
default resized to `data.load_size` (0: resolution * 286 / 256, so 286 for 256 px) with PIL's BICUBIC, cropped
to `data.resolution` at a random offset and flipped at random (`data.mirror`). The offsets and flips of the
image at global position p are functions of (seed, p) alone. The shapes are drawn at the resized size (they
are defined in continuous coordinates: no filter). `data.preprocess: none` serves the images as every other
source does: centre square, Lanczos to `data.resolution`. `pairs` (the known answer) is never jittered.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from gandist.data.base import DATASETS, Batch, DataSource, mirror
from gandist.data.config import ShapesData, UnpairedData
from gandist.data.folder import dataset_files, decode_image, load_image
from gandist.data.jitter import Window, windows
from gandist.errors import DataError
from gandist.registry import register
from gandist.rng import position_generator, stream


@functools.lru_cache(maxsize=8)
def _order(n_items: int, seed: int, epoch: int, domain: int) -> tuple[int, ...]:
    g = stream(seed, "domain_order", 2 * epoch + domain)  # one permutation per (epoch, domain)
    return tuple(torch.randperm(n_items, generator=g).tolist())


def domain_indices(n_items: int, seed: int, domain: int, pair: int, n: int) -> list[int]:
    """Items of one domain at pair positions [pair, pair + n): a fresh permutation per epoch and domain."""
    out = []
    for p in range(pair, pair + n):
        epoch, offset = divmod(p, n_items)
        out.append(_order(n_items, seed, epoch, domain)[offset])
    return out


class UnpairedSource(DataSource):
    """Subclasses give `counts` (images per domain) and `_images(domain, indices)` -> [k, C, R, R] in [-1, 1]."""

    counts: tuple[int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.cfg.channels or 3, self.cfg.resolution, self.cfg.resolution)

    @property
    def size(self) -> int:
        return min(self.counts)

    @property
    def jitter(self) -> bool:
        return self.cfg.preprocess != "none"

    def _images(self, domain: int, indices: list[int], positions: list[int] | None = None) -> torch.Tensor:
        """Images `indices` of `domain`, [k, C, R, R] in [-1, 1]: jittered by the windows of the global stream
        `positions` they are served at, or (None) as stored at data.resolution."""
        raise NotImplementedError

    def _windows(self, positions: list[int], stored: list[tuple[int, int]], names: list[str]) -> list[Window]:
        cfg = self.cfg
        return windows(cfg.preprocess, self.seed, positions, stored, cfg.load, cfg.resolution, names)

    def _draw_batch(self, position: int, n: int) -> Batch:
        assert position % 2 == 0 and n % 2 == 0, (
            f"unpaired batches come in pairs (position {position}, n {n})"
        )
        pair, m = position // 2, n // 2
        at = (list(range(position, position + n, 2)), list(range(position + 1, position + n, 2)))  # A, B
        a = self._images(0, domain_indices(self.counts[0], self.seed, 0, pair, m), at[0])
        b = self._images(1, domain_indices(self.counts[1], self.seed, 1, pair, m), at[1])
        x = torch.stack([a, b], dim=1).reshape(n, *a.shape[1:])  # A, B, A, B, ...
        if self.cfg.mirror:
            x = mirror(x, self.seed, position)
        return Batch(x, domain=torch.arange(n) % 2)

    def _draw(self, position: int, n: int) -> torch.Tensor:
        return self._draw_batch(position - position % 2, n + n % 2).x[:n]


def crop_window(pixels: np.ndarray, window: Window) -> torch.Tensor:
    """uint8 [H, W, C] -> uint8 [C, crop, crop]: resized to the window's size with PIL's BICUBIC (the official
    `transforms.Resize(..., BICUBIC)` on a PIL image; skipped at the stored size, as PIL itself skips it), then
    the window cut out."""
    h, w = pixels.shape[:2]
    if window.size != (w, h):
        from PIL import Image

        im = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        pixels = np.asarray(im.resize(window.size, Image.Resampling.BICUBIC))
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    c = window.crop
    out = pixels[window.top : window.top + c, window.left : window.left + c]
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()


def domain_files(root: Path, verify: str = "size") -> tuple[list[Path], list[Path]]:
    """The images of root/trainA and root/trainB (each a folder or a prepared dataset); a DataError naming
    the fix when either is missing."""
    files = []
    for name in ("trainA", "trainB"):
        if not (root / name).is_dir():
            raise DataError(
                f"data.path '{root}' has no {name}/ folder; unpaired data needs {root}/trainA and "
                f"{root}/trainB (the horse2zebra layout)"
            )
        files.append(dataset_files(root / name, verify))
    return files[0], files[1]


@register(DATASETS, "unpaired")
class UnpairedFolders(UnpairedSource):
    def __init__(self, cfg: UnpairedData, seed: int) -> None:
        super().__init__(cfg, seed)
        self.files = list(domain_files(Path(cfg.path), cfg.verify))
        self.counts = (len(self.files[0]), len(self.files[1]))

    def _images(self, domain: int, indices: list[int], positions: list[int] | None = None) -> torch.Tensor:
        c, r = self.cfg.channels or 3, self.cfg.resolution
        files = [self.files[domain][i] for i in indices]
        if positions is None or not self.jitter:
            return torch.stack([load_image(f, r, c) for f in files]).float() / 127.5 - 1.0
        arrays = [decode_image(f, c) for f in files]
        wins = self._windows(positions, [(a.shape[1], a.shape[0]) for a in arrays], [str(f) for f in files])
        return torch.stack([crop_window(a, w) for a, w in zip(arrays, wins)]).float() / 127.5 - 1.0


# Colour schemes of the shapes data (RGB in [0, 1]): background, first and second shape colour. Scheme B
# changes every colour, so the identity map is wrong at every pixel; each scheme is a pixel-wise function of
# the other, so a translator that keeps shape and position can be exact.
SCHEMES = (
    ((0.10, 0.15, 0.45), (0.95, 0.25, 0.20), (0.95, 0.85, 0.20)),  # A: navy ground, red and yellow shapes
    ((0.85, 0.85, 0.80), (0.45, 0.20, 0.65), (0.10, 0.55, 0.30)),  # B: light grey ground, purple and green
)
# Between A's shape colours only the green channel differs (red 0.25, yellow 0.85); B's first shape colour has
# the lower green too (purple 0.20, green 0.55), so the right translation keeps that order. With B's two shape
# colours the other way round, the order-keeping translation was the swapped one (discs purple, boxes green),
# which D tells from B only by which kind of shape wears which colour: on an AMD EPYC 3 of 3 seeds of
# cyclegan_shapes learned the swap.
_SHAPES_SEED = 20170330  # fixed: scene i is part of the dataset's definition, not of a run


def shapes_scene(index: int, resolution: int) -> torch.Tensor:
    """Scene `index`: a label map [R, R] (0 ground, 1 first colour, 2 second colour) of 1-3 discs, boxes or
    triangles at random places and sizes; discs and triangles take the first colour, boxes the second."""
    g = position_generator(_SHAPES_SEED, index)
    r = resolution
    ys, xs = torch.meshgrid(torch.linspace(0, 1, r), torch.linspace(0, 1, r), indexing="ij")
    label = torch.zeros(r, r, dtype=torch.long)
    for _ in range(int(torch.randint(1, 4, (), generator=g))):
        # the colour follows the kind (discs and triangles the first, boxes the second): with a free choice the
        # two shape colours could swap in translation and still match B's distribution, so the answer would not
        # be unique
        kind = int(torch.randint(3, (), generator=g))
        colour = 2 if kind == 1 else 1
        cx, cy = (0.2 + 0.6 * torch.rand(2, generator=g)).tolist()
        size = 0.1 + 0.15 * float(torch.rand((), generator=g))
        if kind == 0:
            mask = (xs - cx) ** 2 + (ys - cy) ** 2 < size**2
        elif kind == 1:
            mask = ((xs - cx).abs() < size) & ((ys - cy).abs() < size)
        else:  # an upright triangle: inside below the apex and within the widening sides
            mask = (ys - cy < size) & ((xs - cx).abs() < (ys - cy + size) / 2)
        label[mask] = colour
    return label


def paint(label: torch.Tensor, scheme: int) -> torch.Tensor:
    """Label map [R, R] -> image [3, R, R] in [-1, 1] in colour scheme 0 (A) or 1 (B)."""
    palette = torch.tensor(SCHEMES[scheme]) * 2 - 1  # [3 labels, 3 channels]
    return palette[label].permute(2, 0, 1).contiguous()


@register(DATASETS, "shapes")
class Shapes(UnpairedSource):
    """Scenes 0 .. count-1 in both schemes, unpaired; `pairs` serves scenes from `count` on (never in training)."""

    def __init__(self, cfg: ShapesData, seed: int) -> None:
        super().__init__(cfg, seed)
        self.counts = (cfg.count, cfg.count)

    def _images(self, domain: int, indices: list[int], positions: list[int] | None = None) -> torch.Tensor:
        r = self.cfg.resolution
        if positions is None or not self.jitter:
            out = torch.stack([paint(shapes_scene(i, r), domain) for i in indices])
        else:  # a scene is stored at data.resolution and drawn afresh at the size it is resized to
            wins = self._windows(positions, [(r, r)] * len(indices), [f"shapes scene {i}" for i in indices])
            out = torch.stack([
                paint(shapes_scene(i, w.size[0]), domain)[:, w.top : w.top + r, w.left : w.left + r]
                for i, w in zip(indices, wins)
            ])  # fmt: skip
        return out.mean(dim=1, keepdim=True) if self.shape[0] == 1 else out

    def pairs(self, n: int, start: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The known answer: n scenes painted in scheme A and in scheme B, [n, C, R, R] each, from scene
        `start` (default: the first scene training never shows)."""
        start = self.cfg.count if start is None else start
        idx = list(range(start, start + n))
        return self._images(0, idx), self._images(1, idx)
