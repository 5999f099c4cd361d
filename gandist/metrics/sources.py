"""What an evaluation reads: samples from a generator, a run's dataset or an image folder, or
statistics from a file. Each sample source yields any index range [start, stop) in batches of any
size, and sample i is the same whatever the batch size, the number of ranks or the loader workers.

| source | sample i | decoded where |
|---|---|---|
| `GeneratorSource` | G(z_i); z_i is row i % LATENT_CHUNK of latent chunk i // LATENT_CHUNK, drawn from `rng.stream(seed, "eval_latents", j)` | generated on a fixed grid of `gen_batch` (default GEN_PIECE) samples |
| `DatasetSource` | sample i of the run's data stream, read in chunks of REAL_CHUNK from stream position 0 (a source's draw of a chunk depends on where the chunk starts, e.g. its mirror flips) | image folders: loader workers, one chunk per task; in-memory data: here |
| `FolderSource` | the i-th image file (sorted, recursive) as 8-bit RGB, no resize | loader workers |
| `StatsFile` | no samples: mean and covariance from `.npz` | - |
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from gandist.errors import DataError, UserError
from gandist.rng import stream

LATENT_CHUNK = 250  # latents are drawn in chunks of this many rows: part of which z each sample gets
# G runs on pieces [k * GEN_PIECE, (k + 1) * GEN_PIECE) of the sample index, whatever range a rank or a
# batch asks for: float32 kernels can round differently at other batch shapes, so a fixed grid keeps every
# sample bit-identical across world sizes and extraction batches
GEN_PIECE = 50
REAL_CHUNK = 250  # a run's data stream is read in chunks starting at multiples of this position


def _pieces(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(start, stop, size):
        yield a, min(a + size, stop)


def default_workers(n_batches: int) -> int:
    """Decode in loader workers when there is more than a little to decode: up to 4, leaving a core
    to the extractor (2 CPU cores: 1 worker)."""
    if n_batches < 3:
        return 0  # a worker's start (spawn, one torch import: ~2 s of CPU) would cost more than it saves
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class Source:
    """n samples, yielded by index range."""

    n: int = 0
    kind: str = "images"  # "images" | "points"

    def batches(self, start: int, stop: int, batch: int) -> Iterator[torch.Tensor]:
        """Samples start .. stop - 1 in order, in batches of at most `batch`."""
        raise NotImplementedError

    def first(self, k: int) -> torch.Tensor:
        """The first k samples in the training format, on the CPU (pictures of nearest neighbours)."""
        return torch.cat(list(self.batches(0, min(k, self.n), k))).cpu()

    def describe(self) -> dict:
        return {}


# ---------------------------------------------------------------------------------------------------
# Generated samples


def eval_latents(seed: int, start: int, stop: int, z_dim: int) -> torch.Tensor:
    """Latents of samples start .. stop - 1 [stop - start, z_dim]: row i % LATENT_CHUNK of chunk
    i // LATENT_CHUNK, a chunk always drawn whole, so any slicing gives the same rows."""
    out = []
    for j in range(start // LATENT_CHUNK, (stop - 1) // LATENT_CHUNK + 1):
        chunk = torch.randn(LATENT_CHUNK, z_dim, generator=stream(seed, "eval_latents", position=j))
        a, b = max(start, j * LATENT_CHUNK), min(stop, (j + 1) * LATENT_CHUNK)
        out.append(chunk[a - j * LATENT_CHUNK : b - j * LATENT_CHUNK])
    return torch.cat(out) if out else torch.empty(0, z_dim)


class GeneratorSource(Source):
    """n samples of G from the evaluation latents. A style-based G (one with `sample_noise`) draws fresh
    per-pixel noise for every sample (`noise_mode="random"`, the official metrics' randomize_noise=True),
    seeded per generation piece so the values still depend on nothing but the seed; "const" uses the
    fixed noise images stored with G (pictures), "none" no noise."""

    def __init__(
        self, G, z_dim: int, n: int, seed: int, device, kind: str = "images", gen_batch: int = 0,
        noise_mode: str = "random",
    ) -> None:  # fmt: skip
        self.G, self.z_dim, self.n, self.seed, self.device = G, z_dim, n, seed, torch.device(device)
        self.kind, self.gen_batch, self.noise_mode = kind, gen_batch, noise_mode
        self.styled = getattr(G, "sample_noise", None) is not None

    def _generate(self, k: int, z: torch.Tensor) -> torch.Tensor:
        if not self.styled:
            return self.G(z)
        if self.noise_mode != "random":
            return self.G(z, noise_mode=self.noise_mode)
        seed = int(torch.randint(0, 2**62, (), generator=stream(self.seed, "eval_noise", position=k)))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            return self.G(z, noise_mode="random")

    @torch.no_grad()
    def batches(self, start, stop, batch):
        piece = self.gen_batch or GEN_PIECE
        pending: list[torch.Tensor] = []
        have = 0
        for k in range(start // piece, (stop - 1) // piece + 1) if stop > start else ():
            u, v = k * piece, min((k + 1) * piece, self.n)  # always the whole grid piece
            x = self._generate(k, eval_latents(self.seed, u, v, self.z_dim).to(self.device))
            pending.append(x[max(start, u) - u : min(stop, v) - u])
            have += len(pending[-1])
            while have >= batch:
                joined = torch.cat(pending) if len(pending) > 1 else pending[0]
                yield joined[:batch]
                rest = joined[batch:]
                pending, have = ([rest] if len(rest) else []), len(rest)
        if have:
            yield torch.cat(pending) if len(pending) > 1 else pending[0]

    def describe(self):
        noise = {"noise_mode": self.noise_mode} if self.styled else {}
        return {"fake_source": "generator", "seed": self.seed, "latent_chunk": LATENT_CHUNK, **noise}


# ---------------------------------------------------------------------------------------------------
# A run's dataset


class _Chunks(torch.utils.data.Dataset):
    """Item k: the stream chunk starting at position (first + k) * REAL_CHUNK (decoded in a worker)."""

    def __init__(self, data, n: int, first: int, count: int) -> None:
        self.data, self.n, self.first, self.count = data, n, first, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> torch.Tensor:
        j = self.first + k
        return self.data.peek(min(REAL_CHUNK, self.n - j * REAL_CHUNK), position=j * REAL_CHUNK)


class DatasetSource(Source):
    def __init__(self, data, n: int, workers: int | None = None) -> None:
        self.data, self.n, self.kind, self.workers = data, n, data.kind, workers

    def _chunks(self, first: int, last: int) -> Iterator[torch.Tensor]:
        from gandist.data.folder import ImageFolder

        ds = _Chunks(self.data, self.n, first, last - first + 1)
        workers = self.workers if self.workers is not None else default_workers(len(ds))
        if workers and type(self.data) is ImageFolder:  # decoding files is the only part worth a worker
            # spawn, as the training loader: forking after torch's thread pools ran can deadlock
            yield from torch.utils.data.DataLoader(ds, batch_size=None, num_workers=min(workers, len(ds)),
                                                   multiprocessing_context="spawn", prefetch_factor=2)  # fmt: skip
        else:
            yield from (ds[k] for k in range(len(ds)))

    def batches(self, start, stop, batch):
        if stop <= start:
            return
        first, last = start // REAL_CHUNK, (stop - 1) // REAL_CHUNK
        for j, chunk in zip(range(first, last + 1), self._chunks(first, last)):
            lo = max(start - j * REAL_CHUNK, 0)
            hi = min(stop - j * REAL_CHUNK, len(chunk))
            for a, b in _pieces(lo, hi, batch):
                yield chunk[a:b]

    def first(self, k):
        return self.data.peek(min(k, self.n))

    def describe(self):
        """What the samples are, on either side of a comparison (and the metadata of cached statistics)."""
        cfg = self.data.cfg  # 2-D sources have no path or resolution, built-in image sources no path ("")
        return {"dataset": cfg.name, "data_path": getattr(cfg, "path", ""),
                "resolution": getattr(cfg, "resolution", None)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# An image folder, read as it is


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def folder_files(root: str | Path) -> list[Path]:
    """Every image below `root`, sorted by path (the order torch-fidelity and pytorch-fid read)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"'{root}' is not a folder of images" + ("" if root.exists() else " (it does not exist)")
        )
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"'{root}' holds no images (PNG, JPEG, BMP, WebP, PPM, TIFF; searched recursively)")
    return files


class _Files(torch.utils.data.Dataset):
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.files[i]) as im:
                im = im.convert("RGB")  # as torch-fidelity and pytorch-fid: grey and RGBA become RGB
                w, h = im.size
                data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            return f"cannot read image '{self.files[i]}' ({exc})"
        return data.view(h, w, 3).permute(2, 0, 1)


def _collate_same_size(items: list) -> torch.Tensor | str:
    """Stack [3, H, W] images; a problem comes back as its message (raised in the main process, so the
    user sees one line, not a worker traceback)."""
    for it in items:
        if isinstance(it, str):
            return it
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) > 1:
        return "sizes " + ", ".join(f"{s[2]}x{s[1]}" for s in sorted(shapes))
    return torch.stack(items)


class FolderSource(Source):
    """Every image of a folder, 8-bit RGB [N, 3, H, W] at its own size (the extractor resizes). All
    images must have one size, as torch-fidelity and pytorch-fid require."""

    def __init__(self, root: str | Path, workers: int | None = None, limit: int | None = None) -> None:
        self.root = Path(root)
        self.files = folder_files(root)
        if limit:
            self.files = self.files[:limit]
        self.n, self.workers = len(self.files), workers
        self._size: tuple[int, int, int] | None = None

    def batches(self, start, stop, batch):
        ds = _Files(self.files[start:stop])
        n_batches = -(-len(ds) // batch)
        workers = self.workers if self.workers is not None else default_workers(n_batches)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch, num_workers=min(workers, n_batches), collate_fn=_collate_same_size,
            multiprocessing_context="spawn" if workers else None, prefetch_factor=2 if workers else None,
        )  # fmt: skip
        for k, x in enumerate(loader):
            if isinstance(x, str):
                if x.startswith("sizes"):
                    raise DataError(f"images in '{self.root}' differ in size ({x[6:]}, near file "
                                    f"{start + k * batch}); resize them to one size first (gandist prepare)")  # fmt: skip
                raise DataError(x)
            size = tuple(x.shape[1:])
            if self._size is None:
                self._size = size
            elif size != self._size:
                raise DataError(
                    f"images in '{self.root}' differ in size ({self._size[2]}x{self._size[1]} and "
                    f"{size[2]}x{size[1]}); resize them to one size first (gandist prepare)"
                )
            yield x

    def first(self, k):
        return torch.cat(list(self.batches(0, min(k, self.n), k))).float() / 127.5 - 1.0

    def fingerprint(self) -> str:
        """Changes when a file is added, removed, resized or rewritten (count, bytes, newest mtime)."""
        st = [f.stat() for f in self.files]
        return f"{len(st)}:{sum(s.st_size for s in st)}:{max(s.st_mtime_ns for s in st)}"

    def describe(self):
        return {"folder": str(self.root), "n": self.n}


class StatsFile:
    """Mean and covariance from a `.npz` (gandist's or pytorch-fid's); no samples."""

    n: int = 0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"statistics file '{path}' not found")

    def load(self, dim: int | None):
        from gandist.metrics.fid import load_stats

        mu, sigma, meta = load_stats(self.path, dim)
        self.n = int(meta["n"]) if meta.get("n", "").isdigit() else 0
        return mu, sigma, meta

    def describe(self):
        return {"stats_file": str(self.path)}
