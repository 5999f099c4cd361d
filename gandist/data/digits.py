"""scikit-learn's 8x8 handwritten digits (1797 images, shipped with scikit-learn: no download)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gandist.data.base import DATASETS
from gandist.data.config import DigitsData
from gandist.data.labelled import LabelledImages, read_label_file
from gandist.errors import DataError
from gandist.registry import register
from gandist.rng import position_generator

CLASSES = 10
_SPLIT_SEED = 20160610  # fixed: which digits are held out is part of the dataset's definition, not of a run

_CACHE: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def bundled_digits_file() -> Path | None:
    """scikit-learn's copy of the digits (`sklearn/datasets/data/digits.csv.gz`: 64 grey levels and the label
    per line), found without importing scikit-learn; None if this scikit-learn keeps it elsewhere."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as scikit-learn's `load_digits` gives them: images [N, 8, 8] (0..16, float64) and labels.
    The file is read as `load_digits` reads it (gzip, `np.loadtxt`), which saves importing scikit-learn and
    SciPy (about 0.9 s of every process that trains on the digits); `load_digits` itself is the fallback."""
    path = bundled_digits_file()
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def load_digits_tensor(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as [1797, 1, R, R] in [-1, 1] (bilinear upsampling of the 0..16 grey levels) and labels."""
    if resolution not in _CACHE:
        images, labels = read_digits()
        x = torch.tensor(images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8] in [0, 1]
        if resolution != 8:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
        _CACHE[resolution] = ((x.clamp(0, 1) * 2 - 1).contiguous(), torch.tensor(labels))
    return _CACHE[resolution]


def split_indices(n: int, holdout: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, held-out indices) of n digits: the last `holdout` of one fixed permutation."""
    order = torch.randperm(n, generator=position_generator(_SPLIT_SEED, 0))
    return order[: n - holdout].sort().values, order[n - holdout :].sort().values


@register(DATASETS, "digits")
class Digits(LabelledImages):
    """Every digit labelled (the default), or semi-supervised: `holdout` digits never served, the labels of
    all but a labelled subset dropped (-1), and `labelled_batch` labelled digits at the front of each batch."""

    per_class_hint = " or lower data.holdout"

    def __init__(self, cfg: DigitsData, seed: int) -> None:
        images, labels = load_digits_tensor(cfg.resolution)
        self.train_idx, self.heldout_idx = split_indices(len(images), cfg.holdout)
        self.all_images, self.all_labels = images, labels
        super().__init__(cfg, seed, images[self.train_idx], labels[self.train_idx])

    def from_label_file(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A label file's indices count in all 1797 digits; naming a held-out one is an error."""
        idx, cls = read_label_file(path, len(self.all_images), self.classes)
        position = torch.full((len(self.all_images),), -1, dtype=torch.long)
        position[self.train_idx] = torch.arange(len(self.train_idx))
        held = position[idx] < 0
        if bool(held.any()):
            raise DataError(
                f"label file '{path}' labels digit {int(idx[held][0])}, which data.holdout={self.cfg.holdout} "
                "holds out for testing; remove the line or lower data.holdout"
            )
        return position[idx], cls

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out digits and their labels: [H, 1, R, R], [H]."""
        return self.all_images[self.heldout_idx], self.all_labels[self.heldout_idx]
