"""MNIST (LeCun et al. 1998) from local files, never downloaded: the IDX files as distributed (each also
gzipped), or train/ and test/ folders of images with a labels.csv each.

IDX: a big-endian header of two zero bytes, the element type (0x08, unsigned byte) and the number of
dimensions, then each dimension as an unsigned 32-bit integer, then the data, one byte per element in row-major
order. Images have the magic number 0x00000803 (2051) and dimensions [N, rows, cols]; labels 0x00000801 (2049)
and [N]. Every way a file can be wrong (absent, wrong magic number, a size that disagrees with its header,
image and label counts that differ, a label outside 0-9, images of another size) is one DataError line that
names the file and the fix.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from gandist.data.base import DATASETS
from gandist.data.config import MnistData
from gandist.data.labelled import LabelledImages
from gandist.errors import DataError, first_few
from gandist.registry import register

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
UBYTE = 0x08
# the two sets as MNIST distributes them: (images, labels) file names; the image variant: <part>/labels.csv
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
LABELS_CSV = "labels.csv"


def find_idx(root: Path, name: str) -> Path | None:
    """`name` in `root` as distributed, gzipped, or with its last dash a dot (train-images.idx3-ubyte, as some
    mirrors unpack it); None if none is there."""
    head, tail = name.split("-idx")
    dotted = f"{head}.idx{tail}"
    for candidate in (name, f"{name}.gz", dotted, f"{dotted}.gz"):
        if (root / candidate).is_file():
            return root / candidate
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped or not) whose magic number must be `magic`."""
    what = "images" if magic == IMAGES_MAGIC else "labels"
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # the gzip signature, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read '{path}' ({exc}); copy the file again") from None
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "no magic number (shorter than 4 bytes)" if found is None else f"magic number 0x{found:08x} ({found})"
        raise DataError(
            f"'{path}' has {shown}, not 0x{magic:08x} ({magic}) of IDX {what}; point data.path at MNIST's files "
            "(train-images-idx3-ubyte holds the images, train-labels-idx1-ubyte the labels)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"'{path}' ends inside its header ({len(raw)} bytes); the file is truncated: copy it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        shape = " x ".join(map(str, dims)) + (f" = {math.prod(dims)}" if ndim > 1 else "")
        raise DataError(f"'{path}' holds {len(raw) - header} bytes of data but its header announces {shape}; the "
                        "file is truncated or damaged: copy it again")  # fmt: skip
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_image_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The images a folder's labels.csv names ('file,label' lines, a 'file,label' header allowed), as uint8
    [N, H, W] greyscale and int64 labels [N], and what to call the set in messages."""
    from gandist.data.folder import decode_image

    csv = folder / LABELS_CSV
    images, labels, named = [], [], set()
    for number, line in enumerate(csv.read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, _, label = line.rpartition(",")
        try:
            y = int(label)
        except ValueError:
            if number == 1:  # a header line
                continue
            raise DataError(f"'{csv}' line {number}: '{line}' is not 'file,label'; fix the line") from None
        f = folder / name.strip()
        if not f.is_file():
            raise DataError(f"'{csv}' line {number} names '{f}', which does not exist; fix or remove the line")
        images.append(decode_image(f, 1)[..., 0])
        labels.append(y)
        named.add(f.resolve())
    if not images:
        raise DataError(f"'{csv}' names no image; add 'file,label' lines")
    from gandist.data.folder import IMAGE_SUFFIXES

    unnamed = sorted(q.name for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.resolve() not in named)
    if unnamed:  # the images and the labels must be one set, as the IDX pair's counts
        raise DataError(f"'{folder}' holds {len(unnamed)} image(s) that '{csv}' gives no label ({first_few(unnamed)}), against "
                        f"{len(images)} labelled; label them in {LABELS_CSV} or move them out")  # fmt: skip
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise DataError(f"the images '{csv}' names differ in size ({', '.join(sorted(map(str, sizes)))}); "
                        "give them one size")  # fmt: skip
    return np.stack(images), np.array(labels, dtype=np.int64), str(csv)


def read_set(root: Path, part: str) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST's `part` ('train' or 'test') under `root`: uint8 images [N, H, W], labels [N], and the file that
    names the labels (for messages). The IDX files first, else `root/<part>/labels.csv` with its images."""
    image_name, label_name = FILES[part]
    image_file, label_file = find_idx(root, image_name), find_idx(root, label_name)
    if image_file is None and label_file is None and (root / part / LABELS_CSV).is_file():
        return read_image_folder(root / part)
    if image_file is None or label_file is None:
        if not root.is_dir():
            raise DataError(f"data.path '{root}' is not a folder; point data.path at the folder holding MNIST's "
                            f"{image_name} and {label_name}")  # fmt: skip
        missing = label_name if image_file is not None else image_name
        raise DataError(
            f"data.path '{root}' holds no {missing} (nor .gz) for MNIST's {part} set; put the IDX files there "
            f"(or {part}/{LABELS_CSV} with its images): gandist never downloads MNIST"
        )
    images, labels = read_idx(image_file, IMAGES_MAGIC), read_idx(label_file, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"'{image_file}' holds {len(images)} images but '{label_file}' holds {len(labels)} labels; "
                        f"the two must be one set: copy both again")  # fmt: skip
    return images, labels.astype(np.int64), str(label_file)


def load_set(root: Path, part: str, resolution: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's `part` as served: images [N, 1, R, R] in [-1, 1] (2 v / 255 - 1) and labels [N] int64."""
    images, labels, source = read_set(root, part)
    _, rows, cols = images.shape
    if rows != cols:
        raise DataError(f"MNIST's {part} images under '{root}' are {rows}x{cols} px; give square images")
    if rows != resolution:
        raise DataError(f"MNIST's {part} images under '{root}' are {rows}x{cols} px but data.resolution={resolution}; "
                        f"set data.resolution={rows}")  # fmt: skip
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"'{source}' gives image {i} the label {labels[i]}, outside the {classes} classes "
                        f"0-{classes - 1}; point data.path at MNIST's own label files")  # fmt: skip
    x = torch.from_numpy(images.copy()).float().div_(255).mul_(2).sub_(1)  # 0..255 -> [-1, 1]
    return x[:, None].contiguous(), torch.from_numpy(labels)


@register(DATASETS, "mnist")
class Mnist(LabelledImages):
    """MNIST's 60,000 training digits, every one labelled or semi-supervised (a labelled subset, the rest -1);
    its 10,000 test digits are the held-out set, read when first asked for and never served in training."""

    def __init__(self, cfg: MnistData, seed: int) -> None:
        self.root = Path(cfg.path)
        if not self.root.exists():
            raise DataError(
                f"data.path '{self.root}' does not exist; point it at the folder holding MNIST's "
                "train-images-idx3-ubyte and its three sibling files: gandist never downloads MNIST"
            )
        images, labels = load_set(self.root, "train", cfg.resolution, type(cfg).classes)
        super().__init__(cfg, seed, images, labels)
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """MNIST's test digits and their labels: [10000, 1, 28, 28] in [-1, 1], [10000]."""
        if self._test is None:
            self._test = load_set(self.root, "test", self.cfg.resolution, self.classes)
        return self._test
