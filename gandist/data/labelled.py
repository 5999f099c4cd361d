"""Labelled image sets for the semi-supervised GAN (scikit-learn's digits, MNIST): every training image
labelled, or only a labelled subset, served as one mixed stream with labelled images in front of each batch.
A source hands its training images and labels to `LabelledImages` and says what it holds out (`heldout()`)."""

from __future__ import annotations

import torch

from gandist.config import Section
from gandist.data.base import Batch, DataSource, epoch_indices, mirror
from gandist.errors import DataError
from gandist.rng import stream


def read_label_file(path: str, n: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A label file: one 'index,class' line per labelled image (blank lines and '#' comments skipped), indices
    in [0, n). Returns (indices, classes) as int64 tensors; a bad line is a DataError naming the line and the fix."""
    idx, cls = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = [p.strip() for p in line.replace(",", " ").split()]
            try:
                i, c = (int(p) for p in parts)
            except ValueError:
                raise DataError(f"label file '{path}' line {number}: '{line}' is not 'index,class'; fix the line") from None
            if not 0 <= c < classes:
                raise DataError(
                    f"label file '{path}' line {number} names class {c}, outside the {classes} classes 0-{classes - 1}; "
                    "fix or remove the line"
                )
            if not 0 <= i < n:
                raise DataError(
                    f"label file '{path}' line {number} names digit {i}, outside 0-{n - 1}; fix or remove the line"
                )
            idx.append(i)
            cls.append(c)
    if not idx:
        raise DataError(f"label file '{path}' names no digit; add 'index,class' lines")
    return torch.tensor(idx), torch.tensor(cls)


class LabelledImages(DataSource):
    """Every image labelled (the default), or semi-supervised: the labels of all but a labelled subset dropped
    (-1), and `labelled_batch` labelled images at the front of each batch. `images` [N, C, R, R] in [-1, 1]
    and `labels` [N] are the training set; what a source holds out for testing never enters it."""

    per_class_hint = ""  # what else lets `labels_per_class` fit, after 'use data.labels_per_class<=k'

    def __init__(self, cfg: Section, seed: int, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(cfg, seed)
        self.classes = type(cfg).classes
        self.images, self.labels = images, labels
        self.labelled_position = 0  # labelled images drawn so far (semi-supervised batches)
        self.labelled: torch.Tensor | None = None  # indices into self.images of the labelled subset
        if cfg.label_file:
            self.labelled, self.labelled_classes = self.from_label_file(cfg.label_file)
        elif cfg.labels_per_class:
            self.labelled = self._per_class(cfg.labels_per_class)
            self.labelled_classes = self.labels[self.labelled]

    def from_label_file(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows of self.images, classes) a label file names; its indices count in the training images."""
        return read_label_file(path, len(self.images), self.classes)

    def _per_class(self, k: int) -> torch.Tensor:
        """k training images of each class, chosen by the run's seed (sorted indices into self.images)."""
        order = torch.randperm(len(self.images), generator=stream(self.seed, "labelled_subset"))
        chosen = []
        for c in range(self.classes):
            members = order[self.labels[order] == c]
            if len(members) < k:
                raise DataError(
                    f"data.labels_per_class={k} but the training digits hold only {len(members)} of class {c}; "
                    f"use data.labels_per_class<={len(members)}{self.per_class_hint}"
                )
            chosen.append(members[:k])
        return torch.cat(chosen).sort().values

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def size(self) -> int:
        return len(self.images)

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out images and their labels: [H, C, R, R] in [-1, 1], [H]."""
        raise NotImplementedError

    def _draw(self, position: int, n: int) -> torch.Tensor:
        idx = epoch_indices(len(self.images), self.seed, position, n)
        out = self.images[idx]
        return mirror(out, self.seed, position) if self.cfg.mirror else out

    def _draw_batch(self, position: int, n: int) -> Batch:
        idx = epoch_indices(len(self.images), self.seed, position, n)
        out = self.images[idx]
        x = mirror(out, self.seed, position) if self.cfg.mirror else out
        if self.labelled is None:
            return Batch(x, labels=self.labels[idx])
        return Batch(x, labels=torch.full((n,), -1, dtype=torch.long))

    # -- semi-supervised: one mixed stream, a labelled minibatch in front of every global batch ------------
    # Salimans et al. 2016, Sec. 5: a labelled minibatch from the small labelled subset (cycled in fresh
    # permutations) beside an unlabelled one from all training images. The mixed stream is cut into global
    # batches of N = data.batch_size: sample s is labelled number (s // N) k + s % N when s % N < k
    # (k = data.labelled_batch), else unlabelled number (s // N)(N - k) + s % N - k. `position` and
    # `labelled_position` count the unlabelled and labelled samples served; their sum is the mixed position.
    # Rank r of W takes [r n, (r + 1) n) of each W n samples (base class `shard`), so W ranks, with any
    # micro-batches, serve exactly one process's batches: rank 0 the labelled front, the others unlabelled.

    def _mixed_split(self, s: int) -> tuple[int, int]:
        """(labelled, unlabelled) samples among the first s of the mixed stream."""
        n, k = self.cfg.batch_size, self.cfg.labelled_batch
        labelled = (s // n) * k + min(s % n, k)
        return labelled, s - labelled

    def _mixed(self, s: int, n: int) -> Batch:
        """The mixed-stream samples [s, s + n) in order, labelled ones with their class, others -1."""
        lab0, unl0 = self._mixed_split(s)
        lab1, unl1 = self._mixed_split(s + n)
        rows = epoch_indices(len(self.labelled), self.seed, lab0, lab1 - lab0)  # the labelled subset's own epochs
        x_lab = self.images[self.labelled[rows]]
        if self.cfg.mirror:  # their own flip stream: labelled number q never shares the key of unlabelled q
            x_lab = mirror(x_lab, self.seed, lab0, salt="labelled_mirror")
        unl = self._draw(unl0, unl1 - unl0)
        # the stream's order: where each of the n samples sits (labelled ones first within each global batch)
        is_lab = torch.arange(s, s + n) % self.cfg.batch_size < self.cfg.labelled_batch
        x = torch.empty(n, *unl.shape[1:], dtype=unl.dtype)
        x[is_lab], x[~is_lab] = x_lab, unl
        labels = torch.full((n,), -1, dtype=torch.long)
        labels[is_lab] = self.labelled_classes[rows]
        return Batch(x, labels=labels)

    def next_batch(self, n: int) -> Batch:
        if self.labelled is None:
            return super().next_batch(n)
        s = self.position + self.labelled_position  # the mixed stream's (global) position
        out = self._mixed(s + self.rank * n, n)
        self.labelled_position, self.position = self._mixed_split(s + self.world * n)
        out.x = self._served(out.x)
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "labelled_position": self.labelled_position}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.labelled_position = int(state.get("labelled_position", 0))
