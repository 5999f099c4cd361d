"""The `data` section of each data source: its keys, their ranges and its checks (torch-free).

The sources live beside this file (`synthetic.py`, `digits.py`, `mnist.py`, `folder.py`, `dali.py`,
`unpaired.py`) and register under the same names in `gandist.data.base.DATASETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gandist.config import Config, ConfigError, NamedSection, one_of, register_section, setting


@dataclass
class DataSection(NamedSection):
    kind: ClassVar[str] = "images"  # "images" ([N, C, H, W] in [-1, 1]) or "points" ([N, 2])
    # What a data source is, declared here and read through the registry instead of its name:
    classes: ClassVar[int] = 0  # labelled classes (0 = unlabelled)
    domains: ClassVar[int] = 1  # image domains in a batch (2: unpaired A/B for translation)
    known_modes: ClassVar[bool] = False  # a mixture with known modes (the `modes` metric)
    digit_channels: ClassVar[int] = 0  # channels that each show one digit (the digits classifier reads them)
    default_metrics: ClassVar[tuple[str, ...]] = ("fid",)  # metrics.names=auto
    extractor: ClassVar[str] = "inception"  # metrics.extractor=auto
    dali: ClassVar[str] = ""  # the DALI source of loader=dali (a class in gandist/data/dali.py; "" = none)
    batch_size: int = setting(64, gt=0)  # samples per step (per D step: k batches per generator step)


@register_section("data", "ring")
@dataclass
class RingData(DataSection):
    """8 Gaussians on the unit circle, std 0.01 (VEEGAN)."""

    kind: ClassVar[str] = "points"
    known_modes: ClassVar[bool] = True
    default_metrics: ClassVar[tuple[str, ...]] = ("modes", "fid")
    extractor: ClassVar[str] = "points"


@register_section("data", "grid")
@dataclass
class GridData(DataSection):
    """25 Gaussians on {-4, -2, 0, 2, 4}^2, std 0.05 (VEEGAN / PacGAN)."""

    kind: ClassVar[str] = "points"
    known_modes: ClassVar[bool] = True
    default_metrics: ClassVar[tuple[str, ...]] = ("modes", "fid")
    extractor: ClassVar[str] = "points"


@dataclass
class ImageData(DataSection):
    resolution: int = setting(16, ge=4)  # image side in pixels
    channels: int = setting(0, ge=0)  # 0 = the dataset's own (digits 1, procedural/folder 3)
    mirror: bool = False  # random horizontal flips


@dataclass
class LabelledData(ImageData):
    """Labelled images (digits, MNIST) that semi-supervised training can keep only some labels of: the labels
    of `labels_per_class` training images per class (chosen by train.seed) or of those a label file names, with
    `labelled_batch` labelled images in front of every batch (gandist/data/labelled.py)."""

    classes: ClassVar[int] = 10

    # keep the labels of this many training digits per class (chosen by train.seed), drop the others' (0 = all)
    labels_per_class: int = setting(0, ge=0)
    # or name the labelled digits in a file: one 'index,class' line per digit
    label_file: str = ""
    # labelled digits at the front of every batch (drawn from the labelled subset); the rest are unlabelled (-1)
    labelled_batch: int = setting(0, ge=0)

    @property
    def semi_supervised(self) -> bool:
        return bool(self.labels_per_class or self.label_file)

    def check(self, cfg: Config) -> None:
        if self.labels_per_class and self.label_file:
            raise ConfigError("data.labels_per_class and data.label_file both pick the labelled digits; set one")
        if self.semi_supervised and not 0 < self.labelled_batch < self.batch_size:
            raise ConfigError(
                f"data.labelled_batch={self.labelled_batch} must be between 1 and data.batch_size - 1 "
                f"({self.batch_size - 1}) when only some digits are labelled"
            )
        if self.labelled_batch and not self.semi_supervised:
            raise ConfigError(
                "data.labelled_batch is set but every digit is labelled; set data.labels_per_class or data.label_file"
            )
        if self.label_file and not Path(self.label_file).is_file():
            raise ConfigError(
                f"data.label_file '{self.label_file}' does not exist; point it at a file of 'index,class' lines"
            )


@register_section("data", "digits")
@dataclass
class DigitsData(LabelledData):
    """scikit-learn's 1797 handwritten 8x8 digits, upsampled. For semi-supervised training a fixed share
    is held out (never served) and only a labelled subset of the rest keeps its labels (a label file's
    indices count in the 1797 digits)."""

    digit_channels: ClassVar[int] = 1
    # class coverage beside FID (gandist/metrics/coverage.py)
    default_metrics: ClassVar[tuple[str, ...]] = ("fid", "is", "kid", "classes")
    extractor: ClassVar[str] = "digits"  # the digit classifier's features (gandist.metrics.extractors)

    # digits held out for testing: the last `holdout` of one fixed permutation, never served in training
    holdout: int = setting(0, ge=0)

    @property
    def has_heldout(self) -> bool:
        """Whether the source has held-out images to test a classifier on (`heldout()`)."""
        return bool(self.holdout)

    def check(self, cfg: Config) -> None:
        if self.resolution not in (8, 16, 32, 64):
            raise ConfigError(f"data.resolution={self.resolution}: digits are served at 8, 16, 32 or 64 px")
        if self.channels not in (0, 1):
            raise ConfigError(f"data.channels={self.channels}: digits are greyscale (use 0 or 1)")
        if self.holdout >= 1797:
            raise ConfigError(f"data.holdout={self.holdout} leaves no training digits; use at most 1796")
        super().check(cfg)


@register_section("data", "mnist")
@dataclass
class MnistData(LabelledData):
    """MNIST (LeCun et al. 1998) read from data.path, never downloaded: the four IDX files as distributed
    (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each
    also as .gz), or train/ and test/ folders of images, each with a labels.csv of 'file,label' lines. Training
    serves the 60,000 training digits; the 10,000 test digits are the held-out set (`heldout()`), never served
    in training. Pixels v in 0..255 are served as 2 v / 255 - 1 in [-1, 1]; a label file's indices count in
    the training digits."""

    # the files' own size: MNIST's 28x28 (a set of another size, e.g. a 32 px IDX export, sets its own)
    resolution: int = setting(28, ge=4)
    path: str = ""  # the folder holding the IDX files (or train/ and test/ with labels.csv)

    @property
    def has_heldout(self) -> bool:
        return True  # the test set (its absence is a DataError when it is read)

    def check(self, cfg: Config) -> None:
        if not self.path:
            raise ConfigError(
                "data.name=mnist needs data.path=<folder holding train-images-idx3-ubyte and its three sibling "
                "files>; gandist never downloads MNIST"
            )
        if self.channels not in (0, 1):
            raise ConfigError(f"data.channels={self.channels}: MNIST is greyscale (use 0 or 1)")
        super().check(cfg)


# The digits classifier reads 16 px digits (gandist/metrics/extractors.py): 32 px box-filters down to it
# exactly; 8 px would be read from upsampled blur it never saw, 64 px is beyond PacGAN's protocol.
STACKED_RESOLUTIONS = (16, 32)


@register_section("data", "stacked_digits")
@dataclass
class StackedDigitsData(ImageData):
    """Stacked digits (Stacked MNIST, Metz et al. 2017, with scikit-learn's digits): three digits drawn
    independently as the R, G and B channels, 10^3 = 1000 modes; the mode of a sample is 100 r + 10 g + b."""

    known_modes: ClassVar[bool] = True  # the 1000 digit triples (the `modes` metric)
    digit_channels: ClassVar[int] = 3
    default_metrics: ClassVar[tuple[str, ...]] = ("fid", "modes")
    extractor: ClassVar[str] = "digits"  # each channel read by the digits classifier (gandist/metrics/stacked.py)

    def check(self, cfg: Config) -> None:
        if self.resolution not in STACKED_RESOLUTIONS:
            raise ConfigError(
                f"data.resolution={self.resolution}: the digits classifier that counts stacked-digit modes reads "
                f"{' or '.join(map(str, STACKED_RESOLUTIONS))} px; set data.resolution to one of them"
            )
        if self.channels not in (0, 3):
            raise ConfigError(f"data.channels={self.channels}: stacked digits have 3 channels (use 0 or 3)")
        if self.mirror:
            raise ConfigError("data.mirror=true flips digits, which changes the digit a channel shows (and its "
                              "mode); set data.mirror=false")  # fmt: skip


@register_section("data", "procedural")
@dataclass
class ProceduralData(ImageData):
    """Synthetic RGB images at any resolution: gradients with discs and boxes."""

    size: int = setting(10000, gt=0)  # number of distinct images

    def check(self, cfg: Config) -> None:
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"data.channels={self.channels}: procedural images have 1 or 3 channels")


@register_section("data", "folder")
@dataclass
class FolderData(ImageData):
    """A folder of PNG/JPEG images (searched recursively) or a dataset written by `gandist prepare`."""

    dali: ClassVar[str] = "DaliFolder"

    path: str = ""  # root of the images
    num_workers: int = setting(0, ge=0)  # DataLoader worker processes (loader=torch)
    loader: str = setting("torch", choices=("torch", "dali"))  # torch: PIL workers; dali: DALI pipeline
    # (GPU decode when CUDA is used)
    verify: str = setting("size", choices=("size", "full"))  # prepared datasets: check files against
    # manifest.json by size, or full (sha256)
    dali_threads: int = setting(2, gt=0)  # DALI CPU threads per process

    def check(self, cfg: Config) -> None:
        if not self.path:
            raise ConfigError("data.name=folder needs data.path=<folder of images>")
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"data.channels={self.channels}: use 1 (greyscale) or 3 (RGB)")
        root = Path(self.path)
        if not root.exists():
            raise ConfigError(f"data.path '{root}' does not exist; point data.path at a folder of images")
        if not root.is_dir():
            raise ConfigError(f"data.path '{root}' is not a folder; point data.path at a folder of images")
        manifest = root / "manifest.json"
        if manifest.is_file():  # a prepared dataset: never train above the resolution it holds
            import json

            try:
                prepared = int(json.loads(manifest.read_text())["resolution"])
            except (ValueError, KeyError, TypeError):
                return  # a damaged manifest is reported, with its file, when the source is built
            if self.resolution > prepared:
                raise ConfigError(
                    f"data.resolution={self.resolution} is above the {prepared} px that data.path '{root}' holds; "
                    f"set data.resolution<={prepared} or prepare the images again with --resolution {self.resolution}"
                )


# CycleGAN's jitter modes, the official `--preprocess` (gandist/data/jitter.py has what each does)
PREPROCESS = ("resize_and_crop", "scale_width_and_crop", "crop", "none")
# the official load_size 286 for crop_size 256 (pytorch-CycleGAN-and-pix2pix options/base_options.py):
# data.load_size=0 resizes to resolution * 286 / 256, rounded (36 for 32 px, 143 for 128 px)
LOAD_PER_CROP = (286, 256)


def default_load_size(resolution: int) -> int:
    """resolution * 286 / 256 rounded half up: 286 for 256 px, 36 for 32 px."""
    num, den = LOAD_PER_CROP
    return (resolution * num + den // 2) // den


@dataclass
class UnpairedSection(ImageData):
    """Two image domains A and B, unpaired: every batch interleaves A, B, A, B, ... (domain 0, 1, ...)."""

    domains: ClassVar[int] = 2

    mirror: bool = True  # random horizontal flips: on, as the official code (no_flip false)
    # the random resize-and-crop of the official code: resize to data.load_size, crop data.resolution
    preprocess: str = "resize_and_crop"  # resize_and_crop, scale_width_and_crop, crop or none (no jitter)
    load_size: int = setting(0, ge=0)  # the side resized to before the crop; 0 = resolution * 286 / 256

    @property
    def load(self) -> int:
        """The load size in pixels: data.load_size, or 0 for `default_load_size(data.resolution)`."""
        return self.load_size or default_load_size(self.resolution)

    def check(self, cfg: Config) -> None:
        self._check_preprocess()
        if self.batch_size % 2:
            raise ConfigError(
                f"data.batch_size={self.batch_size}: unpaired batches hold one image of each domain per pair; "
                "use an even batch size (2 = the paper's one image per domain)"
            )
        if cfg.train.micro_batch % 2:
            raise ConfigError(f"train.micro_batch={cfg.train.micro_batch} must be even: a micro-batch keeps "
                              "its A and B images together")  # fmt: skip
        if self.resolution % 4:
            raise ConfigError(f"data.resolution={self.resolution}: CycleGAN's generators downsample twice; "
                              "use a multiple of 4")  # fmt: skip

    def _check_preprocess(self) -> None:
        mode = self.preprocess
        if mode == "scale_width":
            raise ConfigError("data.preprocess=scale_width keeps each image's aspect ratio (the official code "
                              "trains one image at a time); batches here are square: use "
                              "data.preprocess=scale_width_and_crop")  # fmt: skip
        one_of("data.preprocess", mode, PREPROCESS)
        if mode in ("crop", "none") and self.load_size:
            raise ConfigError(f"data.load_size={self.load_size} is not used by data.preprocess={mode}; remove it "
                              "or use data.preprocess=resize_and_crop")  # fmt: skip
        if mode in ("resize_and_crop", "scale_width_and_crop") and self.load < self.resolution:
            raise ConfigError(
                f"data.load_size={self.load_size} is smaller than the {self.resolution} px crop (data.resolution); "
                f"set data.load_size>={self.resolution}, or 0 for resolution * 286 / 256 = {default_load_size(self.resolution)}"
            )


@register_section("data", "unpaired")
@dataclass
class UnpairedData(UnpairedSection):
    """Unpaired image folders in the standard layout: data.path/trainA and data.path/trainB (horse2zebra),
    any image format `gandist prepare` reads (or a prepared dataset in each)."""

    dali: ClassVar[str] = "DaliUnpaired"

    path: str = ""  # the folder holding trainA/ and trainB/
    loader: str = setting("torch", choices=("torch", "dali"))  # torch: PIL; dali: one DALI pipeline (GPU decode
    # when CUDA is used) over both folders
    verify: str = setting("size", choices=("size", "full"))  # prepared datasets in trainA/trainB: check by size or sha256
    dali_threads: int = setting(2, gt=0)  # DALI CPU threads per process

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        if not self.path:
            raise ConfigError("data.name=unpaired needs data.path=<folder holding trainA/ and trainB/>")
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"data.channels={self.channels}: use 1 (greyscale) or 3 (RGB)")


@register_section("data", "shapes")
@dataclass
class ShapesData(UnpairedSection):
    """Procedural shapes in two colour schemes: domain A and domain B draw the same kind of scenes, unpaired
    in training; the paired answer (scene i in both schemes) is known for scenes training never sees."""

    count: int = setting(2000, gt=0)  # distinct scenes per domain in training
