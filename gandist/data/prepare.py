"""`gandist prepare SRC DST --resolution R`: turn a folder of images into a training dataset.

Every file under SRC (recursively; FFHQ's and CelebA-HQ's nested layouts included) is validated:
truncated, corrupt, empty and non-image files are listed in the report and skipped, never a crash.
Every image mode Pillow opens becomes 8-bit RGB (16-bit and float data scaled, alpha over white, EXIF
rotation applied: gandist.data.pixels); each image is centre-cropped to a square and resized
with a recorded filter (Lanczos by default). DST receives

  images/<shard>/<index>.jpg|.npy   one file per kept image (index = position of its source in the sorted scan)
  manifest.json                     count, resolution, format, filter, quality, every file's sha256 and source
  report.txt                        the skipped files and why

Work runs in parallel processes with a progress bar. A journal (DST/.journal.jsonl, one line per
finished source) lets a rerun resume where an interrupted one stopped. Training checks the manifest
against the files and refuses a dataset that does not match it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gandist.errors import DataError, first_few
from gandist.jsonl import read_jsonl

MANIFEST = "manifest.json"
JOURNAL = ".journal.jsonl"
FILTERS = ("lanczos", "bicubic", "bilinear", "box")
SHARD = 1000  # files per subfolder: keeps directory listings fast at 70k images


@dataclass(frozen=True)
class Options:
    resolution: int
    fmt: str = "jpeg"  # jpeg | npy (lossless uint8 HWC)
    quality: int = 95
    filter: str = "lanczos"


def scan(src: Path) -> list[Path]:
    """Every regular file below src, sorted by relative path (non-images are validated out, not filtered)."""
    if not src.is_dir():
        raise DataError(f"source '{src}' is not a folder of images")
    return sorted(
        (p for p in src.rglob("*") if p.is_file() and not p.name.startswith(".")),
        key=lambda p: str(p.relative_to(src)),
    )


def out_name(index: int, fmt: str) -> str:
    return f"images/{index // SHARD:05d}/{index:08d}.{'jpg' if fmt == 'jpeg' else 'npy'}"


def convert(path: Path, opts: Options) -> np.ndarray:
    """Decode, validate, RGB (gandist.data.pixels: every mode scaled to 8 bits, alpha over white), centre-crop,
    resize: uint8 [R, R, 3]. Raises ValueError with the reason."""
    from PIL import UnidentifiedImageError

    from gandist.data.pixels import PixelError, load_square

    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        return load_square(path, opts.resolution, 3, opts.filter)
    except PixelError:
        raise
    except UnidentifiedImageError:
        raise ValueError("not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"corrupt or truncated image ({exc})") from None


def _process(job: tuple[int, str, str, Options]) -> dict[str, Any]:
    index, src, dst, opts = job
    try:
        arr = convert(Path(src), opts)
    except ValueError as exc:
        return {"index": index, "source": src, "skipped": str(exc)}
    name = out_name(index, opts.fmt)
    target = Path(dst) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    if opts.fmt == "jpeg":
        from PIL import Image

        Image.fromarray(arr).save(
            buf, format="JPEG", quality=opts.quality, subsampling=0 if opts.quality >= 90 else 2
        )
    else:
        np.save(buf, arr)
    data = buf.getvalue()
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return {
        "index": index,
        "source": src,
        "file": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }


def prepare(
    src: str | Path, dst: str | Path, opts: Options, workers: int | None = None, progress: bool = True
) -> dict:
    """Build (or finish building) the dataset; returns the manifest."""
    src, dst = Path(src), Path(dst)
    if opts.filter not in FILTERS:
        raise DataError(f"unknown resize filter '{opts.filter}'; valid: {', '.join(FILTERS)}")
    if opts.fmt not in ("jpeg", "npy"):
        raise DataError(f"unknown format '{opts.fmt}'; valid: jpeg, npy")
    if opts.resolution < 1:
        raise DataError("--resolution must be positive")
    if not src.is_dir():
        raise DataError(f"source '{src}' is not a folder of images")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        # the output would be scanned as input by the next prepare: the data set doubles each time
        raise DataError(f"destination '{dst}' is inside the source '{src}'; choose a DST outside SRC")
    files = scan(src)
    if not files:
        raise DataError(
            f"source '{src}' holds no files (searched recursively); point SRC at a folder of images"
        )
    if dst.is_dir() and not (dst / JOURNAL).exists():  # a folder prepare did not start: the user's
        others = sorted(q.name for q in dst.iterdir())
        if others:
            raise DataError(
                f"destination '{dst}' holds files prepare did not write ({first_few(others)}) and preparing would overwrite "
                "some of them; choose a new or empty folder for DST"
            )
    dst.mkdir(parents=True, exist_ok=True)
    settings = {"resolution": opts.resolution, "format": opts.fmt, "quality": opts.quality, "filter": opts.filter,
                "source": str(src.resolve())}  # fmt: skip
    journal = dst / JOURNAL
    done: dict[int, dict] = {}
    # append-only: a line torn by the interruption is dropped (that file is simply redone), damage elsewhere is an error
    records = read_jsonl(journal, repair=True)
    if records:
        if records[0].get("settings") != settings:
            raise DataError(
                f"'{dst}' holds a dataset prepared with other settings ({json.dumps(records[0])}); choose another DST"
            )
        for rec in records[1:]:
            if "skipped" in rec or (dst / rec["file"]).is_file():
                done[rec["index"]] = rec
    else:
        journal.write_text(json.dumps({"settings": settings}) + "\n")
    jobs = [(i, str(p), str(dst), opts) for i, p in enumerate(files) if i not in done]
    from tqdm import tqdm

    bar = tqdm(total=len(files), initial=len(done), unit="img", disable=not progress, desc="prepare")
    pool = None if workers == 1 or len(jobs) < 16 else ProcessPoolExecutor(workers or os.cpu_count())
    try:
        results = map(_process, jobs) if pool is None else pool.map(_process, jobs, chunksize=8)
        with open(journal, "a") as jf:
            for rec in results:
                done[rec["index"]] = rec
                jf.write(json.dumps(rec) + "\n")
                jf.flush()
                bar.update(1)
    finally:
        if pool is not None:  # shut the workers down: a live pool thread makes later fork()s deadlock-prone
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    kept = [done[i] for i in sorted(done) if "file" in done[i]]
    skipped = [done[i] for i in sorted(done) if "skipped" in done[i]]
    report = [f"prepared {len(kept)} images at {opts.resolution}x{opts.resolution} ({opts.fmt}, {opts.filter}) from {src}",
              f"skipped {len(skipped)} files:"] + [f"  {r['source']}: {r['skipped']}" for r in skipped]  # fmt: skip
    (dst / "report.txt").write_text("\n".join(report) + "\n")
    if not kept:  # no manifest: an empty dataset must not look prepared
        raise DataError(
            f"no usable images in '{src}': all {len(skipped)} files were skipped (reasons in {dst / 'report.txt'})"
        )
    manifest = {**settings, "count": len(kept), "skipped": len(skipped),
                "files": [{"file": r["file"], "sha256": r["sha256"], "bytes": r["bytes"], "source": r["source"]} for r in kept]}  # fmt: skip
    tmp = dst / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, dst / MANIFEST)
    return manifest


def verify_manifest(root: str | Path, full: bool = False) -> dict:
    """Check a prepared dataset against its manifest: the listed files exist with the listed sizes (and,
    with full=True, checksums), and no unlisted image files are present. Raises DataError otherwise."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"'{root}': unreadable {MANIFEST} ({exc}); rerun gandist prepare") from None
    listed = {f["file"]: f for f in manifest.get("files", [])}
    if len(listed) != manifest.get("count"):
        raise DataError(f"'{root}': {MANIFEST} count {manifest.get('count')} != {len(listed)} listed files")
    on_disk = {
        str(p.relative_to(root))
        for p in (root / "images").rglob("*")
        if p.is_file() and not p.name.endswith(".tmp")
    }
    missing = sorted(set(listed) - on_disk)
    extra = sorted(on_disk - set(listed))
    if missing or extra:
        what = (f"{len(missing)} listed files are missing (e.g. {missing[0]})" if missing else "") + (
            f"{'; ' if missing else ''}{len(extra)} files are not in the manifest (e.g. {extra[0]})"
            if extra
            else ""
        )
        raise DataError(f"dataset '{root}' does not match its manifest: {what}; rerun gandist prepare")
    for name, rec in listed.items():
        p = root / name
        if p.stat().st_size != rec["bytes"]:
            raise DataError(
                f"dataset '{root}': {name} has {p.stat().st_size} bytes, the manifest says {rec['bytes']}"
            )
        if full and hashlib.sha256(p.read_bytes()).hexdigest() != rec["sha256"]:
            raise DataError(f"dataset '{root}': {name} does not match its checksum")
    return manifest
