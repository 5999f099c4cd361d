"""An image folder (PNG/JPEG/..., searched recursively) through PIL and torchvision: the baseline loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gandist.data.base import DATASETS, DataSource, epoch_indices, mirror
from gandist.data.config import FolderData
from gandist.errors import DataError
from gandist.registry import register

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff", ".npy"}


def scan_images(root: str | Path) -> list[Path]:
    """Every image file below `root`, sorted by relative path (a stable order on every machine)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data.path '{root}' does not exist; point data.path at a folder of images")
    if not root.is_dir():
        raise DataError(f"data.path '{root}' is not a folder; point data.path at a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"data.path '{root}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}, searched recursively)"
        )
    return files


def dataset_files(root: str | Path, verify: str = "size") -> list[Path]:
    """The images of a folder: a prepared dataset's manifest (verified) or a recursive scan."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        from gandist.data.prepare import verify_manifest

        manifest = verify_manifest(root, full=verify == "full")
        return [root / f["file"] for f in manifest["files"]]
    return scan_images(root)


def load_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    """Decode, convert to RGB/L (gandist.data.pixels, shared with prepare), centre-crop to a square and
    resize (Lanczos): uint8 [C, R, R]."""
    from PIL import UnidentifiedImageError

    if path.suffix == ".npy":  # prepared lossless data: uint8 [R, R, 3]
        import numpy as np

        arr = torch.from_numpy(np.load(path, allow_pickle=False))
        img = arr.permute(2, 0, 1).contiguous()
        if img.shape[1] != resolution:
            img = torch.nn.functional.interpolate(img[None].float(), size=(resolution, resolution), mode="bicubic",
                                                  antialias=True)[0].round().clamp(0, 255).to(torch.uint8)  # fmt: skip
        return img.float().mean(0, keepdim=True).round().to(torch.uint8) if channels == 1 else img
    from gandist.data.pixels import load_square

    try:
        arr = load_square(path, resolution, channels)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image '{path}' ({exc}); remove or replace the file") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def decode_image(path: Path, channels: int) -> np.ndarray:
    """The stored pixels, uint8 [H, W, channels], at the file's own size and aspect ratio (the conversion of
    `load_image`, without its square crop and resize): what CycleGAN's jitter resizes and crops."""
    from PIL import UnidentifiedImageError

    if path.suffix == ".npy":  # prepared lossless data: uint8 [R, R, 3]
        arr = np.load(path, allow_pickle=False)
        if channels == 1:  # the channel mean, as load_image reads a prepared array
            return arr.astype(np.float64).mean(2, keepdims=True).round().astype(np.uint8)
        return arr
    from gandist.data.pixels import open_image, to_uint8

    try:
        with open_image(path) as im:
            return to_uint8(im, channels)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image '{path}' ({exc}); remove or replace the file") from None


class _Images(Dataset):
    def __init__(self, files: list[Path], resolution: int, channels: int) -> None:
        self.files, self.resolution, self.channels = files, resolution, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_image(self.files[i], self.resolution, self.channels)


class _StreamBatches(Sampler):
    """Infinite batches of indices continuing the stream from a given position."""

    def __init__(self, n_items: int, seed: int, start: int, batch: int) -> None:
        self.n_items, self.seed, self.start, self.batch = n_items, seed, start, batch

    def __iter__(self):
        pos = self.start
        while True:
            yield epoch_indices(self.n_items, self.seed, pos, self.batch)
            pos += self.batch


@register(DATASETS, "folder")
class ImageFolder(DataSource):
    def __init__(self, cfg: FolderData, seed: int) -> None:
        super().__init__(cfg, seed)
        self.files = dataset_files(cfg.path, cfg.verify)
        self.dataset = _Images(self.files, cfg.resolution, cfg.channels or 3)
        self._iter = None
        self._iter_position = -1

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.cfg.channels or 3, self.cfg.resolution, self.cfg.resolution)

    @property
    def size(self) -> int:
        return len(self.files)

    def _load(self, position: int, n: int) -> torch.Tensor:
        if self.cfg.num_workers > 0 and n == self.cfg.batch_size:
            # Worker processes prefetch ahead; the stream position stays the count of consumed samples.
            if self._iter is None or self._iter_position != position:
                loader = DataLoader(
                    self.dataset,
                    batch_sampler=_StreamBatches(len(self.files), self.seed, position, n),
                    num_workers=self.cfg.num_workers,
                    # spawn, not fork: forking a process whose torch/OpenMP thread pools have run can
                    # deadlock the children; spawned workers pay a one-off start-up instead
                    multiprocessing_context="spawn",
                    persistent_workers=False,
                )
                self._iter = iter(loader)
            batch = next(self._iter)
            self._iter_position = position + n
            return batch
        return torch.stack([self.dataset[i] for i in epoch_indices(len(self.files), self.seed, position, n)])

    def _draw(self, position: int, n: int) -> torch.Tensor:
        out = self._load(position, n).float() / 127.5 - 1.0
        return mirror(out, self.seed, position) if self.cfg.mirror else out
