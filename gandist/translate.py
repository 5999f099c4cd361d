"""`gandist translate CKPT --direction AtoB|BtoA IN OUT`: a CycleGAN generator on one image or a folder.

Each input is read as training reads it without the jitter (`gandist.data.folder.load_image`, as
`data.preprocess: none`: RGB or greyscale, centre-cropped to a square and resized to the run's resolution; the
official test script likewise resizes to the crop size and neither crops nor flips), translated, and written as
PNG: OUT is a file for one input, a folder (mirroring IN's subfolders) for a folder of inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from gandist.config import Config, registered
from gandist.errors import UserError
from gandist.load import load_network

DIRECTIONS = {"AtoB": "G_AB", "BtoA": "G_BA"}


def load_translator(path: str | Path, direction: str) -> tuple[nn.Module, int, int]:
    """(the generator for `direction`, the run's resolution, its channels); a one-line UserError for a
    checkpoint of another family."""
    if direction not in DIRECTIONS:
        raise UserError(f"--direction {direction}: use AtoB or BtoA")
    def refuse(cfg: Config, p: Path) -> None:
        if not type(cfg.model).translates:
            names = [n for n, c in registered("model").items() if c.translates]
            labels = " or ".join(registered("model")[n].label or n for n in names)
            raise UserError(
                f"translate needs a {labels} checkpoint (model.name={' or '.join(names)}); '{p}' holds a "
                f"{cfg.model.name} model: use gandist generate {p} for it"
            )

    loaded = load_network(path, DIRECTIONS[direction], refuse)
    return loaded.net, loaded.cfg.data.resolution, loaded.shape[0]


def _inputs(src: Path) -> list[Path]:
    from gandist.data.folder import IMAGE_SUFFIXES

    if src.is_file():
        if src.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(
                f"'{src}' is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}); give an image or a folder"
            )
        return [src]
    if not src.exists():
        raise UserError(f"'{src}' does not exist; give an image file or a folder of images")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(
            f"folder '{src}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); give a folder of images"
        )
    return files


def translate(path: str | Path, direction: str, src: str | Path, dst: str | Path, progress: bool = True,
              batch: int = 8) -> list[Path]:  # fmt: skip
    """Translate the image `src` (written to the file `dst`) or every image below the folder `src` (written
    under the folder `dst` with the same relative paths, as .png). Returns the files written."""
    from tqdm import tqdm

    from gandist.data.folder import load_image
    from gandist.viz import save_image

    G, resolution, channels = load_translator(path, direction)
    src, dst = Path(src), Path(dst)
    files = _inputs(src)
    single = src.is_file()
    if single and dst.suffix.lower() != ".png":
        raise UserError(f"OUT '{dst}': one input image is written to one .png file; name OUT something.png")
    outs = [dst if single else (dst / f.relative_to(src)).with_suffix(".png") for f in files]
    with tqdm(total=len(files), unit="img", desc=direction, disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(files), batch):
            x = (
                torch.stack([load_image(f, resolution, channels) for f in files[i : i + batch]]).float()
                / 127.5
                - 1
            )
            with torch.no_grad():
                y = G(x)
            for img, out in zip(y, outs[i : i + batch]):
                save_image(img, out)
            bar.update(len(x))
    return outs
