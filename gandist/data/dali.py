"""DALI image source (`data.loader: dali`): decode, resize, mirror and normalise inside a DALI pipeline.

Which file goes into which batch is decided here, in Python, by the same stateless stream as every
other source (global position p -> epoch permutation of the sorted file list, seeded), and handed to
DALI through `fn.external_source` together with each sample's output size and mirror flag. So:

* sharding: rank r of W takes positions [s*B*W + r*B, s*B*W + (r+1)*B) of step s: disjoint shards,
  together covering every epoch, one pipeline per rank;
* resume: the whole state is the position; a rebuilt pipeline continues the identical sequence;
* resolution: the output size of batch k comes from `resolution_at(k)`, a function of the batch
  index. DALI prefetches `prefetch_queue_depth` batches ahead, so a size decided from the trainer's
  *current* state would land that many batches late; a size that is a function of the batch index is
  exact. `set_resolution(res, from_batch)` changes the schedule and returns the first batch that
  will really have the new size (never one already prefetched).

Decoding runs on the GPU (`device="mixed"`, nvJPEG) when the pipeline has a device, on CPU threads
with `device_id=None`. Output: float [N, C, R, R] in [-1, 1], on the pipeline's device.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gandist.data.base import Batch, DataSource, epoch_indices, mirror_flags
from gandist.data.config import FolderData
from gandist.data.folder import dataset_files
from gandist.errors import DataError


def _dali():
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
    except ImportError:
        raise DataError(
            "data.loader=dali needs NVIDIA DALI: pip install -e '.[dali]' (or use data.loader=torch)"
        ) from None
    return dali, fn, types


class DaliFolder(DataSource):
    whole_batches = True
    def __init__(self, cfg: FolderData, seed: int, rank: int = 0, world: int = 1, device_id: int | None = None,
                 prefetch: int = 2, resolution_at: Callable[[int], int] | None = None) -> None:  # fmt: skip
        super().__init__(cfg, seed)
        self.files, self.native = self._list_files(cfg)
        self.rank, self.world = rank, world
        # this rank's batch: data.batch_size is the global batch, split over the ranks
        self.batch = cfg.batch_size // world
        self.device_id = device_id  # the GPU to decode on (from the strategy); None decodes on CPU threads
        self.prefetch = prefetch
        self.channels = cfg.channels or 3
        self._schedule: list[tuple[int, int]] = [(0, cfg.resolution)]  # (from batch, resolution), sorted
        if resolution_at is not None:
            self._fixed_schedule = resolution_at
        else:
            self._fixed_schedule = None
        self.batches_served = 0  # batches handed to the trainer by this pipeline
        self._pipe = None
        self._pipe_start = 0  # position (this rank's samples) at which the current pipeline started
        self._requested = 0  # batches DALI has asked the callback for (>= served: the prefetch)
        self._lock = (
            threading.Lock()
        )  # the callback runs on a DALI thread: schedule and request count move together

    def _list_files(self, cfg) -> tuple[list[Path], float]:
        """(the files, the stored resolution of a prepared dataset, whose resize is skipped; -1 if unknown)."""
        return dataset_files(cfg.path, cfg.verify), _native(Path(cfg.path))

    # -- schedule ------------------------------------------------------------------------------
    def resolution_at(self, batch: int) -> int:
        if self._fixed_schedule is not None:
            return int(self._fixed_schedule(batch))
        res = self._schedule[0][1]
        for start, r in self._schedule:
            if batch >= start:
                res = r
        return res

    def set_resolution(self, resolution: int, from_batch: int | None = None) -> int:
        """Switch to `resolution` from batch `from_batch` (default: as soon as possible). Batches DALI
        has already prefetched keep their size; returns the first batch that will have the new one."""
        with self._lock:
            first = max(
                from_batch if from_batch is not None else 0, self._batch_of(self._requested_position())
            )
            self._schedule = [(s, r) for s, r in self._schedule if s < first] + [(first, resolution)]
        return first

    def _requested_position(self) -> int:
        return self._pipe_start + self._requested * self.batch

    def _batch_of(self, position: int) -> int:
        return position // self.batch

    # -- DataSource interface -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        r = self.resolution_at(self._batch_of(self.position))
        return (self.channels, r, r)

    @property
    def size(self) -> int:
        return len(self.files)

    def global_positions(self, position: int, n: int) -> list[int]:
        """This rank's local sample positions [position, position + n) -> global stream positions."""
        b = self.batch
        out = []
        for p in range(position, position + n):
            step, k = divmod(p, b)
            out.append(step * b * self.world + self.rank * b + k)
        return out

    def indices(self, position: int, n: int) -> list[int]:
        return [
            epoch_indices(len(self.files), self.seed, g, 1)[0] for g in self.global_positions(position, n)
        ]

    def _source(self, info):
        """DALI external_source callback: encoded bytes, output size and mirror flag per sample."""
        b = self.batch
        batch = self._batch_of(self._pipe_start) + info.iteration
        with self._lock:
            self._requested = info.iteration + 1
            r = float(self.resolution_at(batch))
        pos = batch * b
        idx = self.indices(pos, b)
        positions = self.global_positions(pos, b)
        data = [np.fromfile(self.files[i], dtype=np.uint8) for i in idx]
        if self.cfg.mirror:  # decided per global stream position, as the torch loaders' `mirror`
            flips = mirror_flags(self.seed, positions)
        else:
            flips = [False] * b
        return [data, [np.array(int(f), dtype=np.int32) for f in flips], *self._geometry(idx, positions, r)]

    # Whether `_geometry` adds crop windows (anchor, shape) to the resize of every sample.
    windowed = False

    def _geometry(self, idx: list[int], positions: list[int], r: float) -> list[list[np.ndarray]]:
        """Per sample of the batch: the resize target (height, width), whether to resize at all and, when
        `windowed`, the (x, y) anchor and (width, height) of the crop after it."""
        sizes = [np.array([r, r], dtype=np.float32) for _ in idx]
        resize = [np.array(r != self.native, dtype=np.bool_) for _ in idx]
        return [sizes, resize]

    def _build(self):
        dali, fn, types = _dali()
        mixed = self.device_id is not None
        channels = self.channels
        windowed = self.windowed
        # Lanczos-3 for the load resize (as the torch loader's PIL LANCZOS); bicubic for CycleGAN's jitter, the
        # Keys a = -0.5 kernel of PIL's BICUBIC that the official code resizes with (see DaliUnpaired)
        interp = types.INTERP_CUBIC if windowed else types.INTERP_LANCZOS3
        kinds = [types.UINT8, types.INT32, types.FLOAT, types.BOOL]  # bytes, flip, resize to, resize or not
        if windowed:
            kinds += [types.INT32, types.INT32]  # the crop's (x, y) anchor and (width, height)

        @dali.pipeline_def(enable_conditionals=True)
        def graph():
            encoded, flips, sizes, resize, *window = fn.external_source(
                source=self._source, num_outputs=len(kinds), batch=True, batch_info=True, dtype=kinds
            )
            images = fn.decoders.image(encoded, device="mixed" if mixed else "cpu",
                                       output_type=types.GRAY if channels == 1 else types.RGB)  # fmt: skip
            if resize:  # per sample: only when the target differs from the stored size
                images = fn.resize(images, size=sizes, interp_type=interp, antialias=True)
            if windowed:  # integer anchor and shape: absolute pixels; a window past the edge is an error
                images = fn.slice(images, window[0], window[1], axis_names="WH")
            # mirror + HWC -> CHW, still uint8: 4x fewer bytes to hand over than float
            return fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW", mirror=flips)

        pipe = graph(batch_size=self.batch, num_threads=self.cfg.dali_threads, device_id=self.device_id,
                     prefetch_queue_depth=self.prefetch, seed=self.seed)  # fmt: skip
        pipe.build()
        return pipe

    def _ensure_pipeline(self) -> None:
        if (
            self._pipe is None
            or self._pipe_start + self.batches_served * self.batch != self.position
        ):
            self._pipe = self._build_at(self.position)

    def _build_at(self, position: int):
        if position % self.batch:
            raise DataError(
                "the DALI source serves whole batches; its position must be a multiple of data.batch_size"
            )
        self._pipe_start, self.batches_served, self._requested = position, 0, 0
        return self._build()

    def sample(self, n: int) -> torch.Tensor:
        if n != self.batch:
            return self.peek(n, self.position)  # off-size requests (pictures, evaluation) bypass the pipeline
        self._ensure_pipeline()
        (out,) = self._pipe.run()
        self.batches_served += 1
        self.position += n
        return _to_torch(out)

    def next_batch(self, n: int) -> Batch:
        """The next batch from the pipeline (box-filtered to the served resolution, if one is set)."""
        return Batch(self._served(self.sample(n)))

    def _draw(self, position: int, n: int) -> torch.Tensor:
        """Off-pipeline reads (evaluation, reference grids) decode with PIL, as the torch loader does."""
        from gandist.data.folder import load_image

        r = self.resolution_at(self._batch_of(position))
        imgs = torch.stack([load_image(self.files[i], r, self.channels) for i in self.indices(position, n)])
        return imgs.float() / 127.5 - 1.0

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self._pipe = None  # rebuilt at the restored position on the next batch


def _native(root: Path) -> float:
    manifest = root / "manifest.json"
    return float(json.loads(manifest.read_text())["resolution"]) if manifest.is_file() else -1.0


class DaliUnpaired(DaliFolder):
    """Unpaired trainA/ and trainB/ folders through one DALI pipeline over both file lists: the file at each
    stream position is the torch loader's (`gandist.data.unpaired`: A, B, A, B, ... in per-domain epoch
    orders), so both loaders serve the same images in the same order, and shards stay disjoint (a rank's
    block of an even batch starts at an even position: pairs are never split across ranks)."""

    _twin = None  # the torch loader of the same folders, for off-pipeline reads (`_draw`)

    def _list_files(self, cfg) -> tuple[list[Path], float]:
        from gandist.data.unpaired import domain_files

        a, b = domain_files(Path(cfg.path))
        self.counts = (len(a), len(b))
        native = {_native(Path(cfg.path) / name) for name in ("trainA", "trainB")}
        return a + b, native.pop() if len(native) == 1 else -1.0

    @property
    def size(self) -> int:
        return min(self.counts)

    @property
    def windowed(self) -> bool:
        return self.cfg.preprocess != "none"

    def _geometry(self, idx: list[int], positions: list[int], r: float) -> list[list[np.ndarray]]:
        """CycleGAN's jitter (`gandist.data.jitter`): the windows the torch loader cuts at the same global
        positions. DALI's INTERP_CUBIC is the Keys a = -0.5 kernel of PIL's BICUBIC, but keeps a float
        intermediate between its two passes (PIL rounds to 8 bits) and repeats the edge pixels where the kernel
        overhangs the image (PIL renormalises the taps inside): the windows are the same, their values a mean
        0.2 and at most 6 of 255 levels from PIL's on photographs (scikit-learn's china and flower samples at
        32-256 px, resized by 286 / 256), up to ~15 on pixel noise (tests/test_cyclegan_jitter.py)."""
        if not self.windowed:
            return super()._geometry(idx, positions, r)
        from gandist.data.jitter import windows

        cfg = self.cfg
        stored = [self._stored_size(i) for i in idx]
        wins = windows(cfg.preprocess, self.seed, positions, stored, cfg.load, cfg.resolution,
                       [str(self.files[i]) for i in idx])  # fmt: skip
        return [
            [np.array(w.size[::-1], dtype=np.float32) for w in wins],  # DALI's size: (height, width)
            [np.array(w.size != s, dtype=np.bool_) for w, s in zip(wins, stored)],
            [np.array([w.left, w.top], dtype=np.int32) for w in wins],
            [np.array([w.crop, w.crop], dtype=np.int32) for w in wins],
        ]

    def _stored_size(self, i: int) -> tuple[int, int]:
        """(width, height) of file i as decoded: a prepared dataset's resolution, or the image's header with
        its EXIF orientation applied (both DALI's decoder and gandist.data.pixels apply it)."""
        if self.native > 0:
            return int(self.native), int(self.native)
        from PIL import Image

        with Image.open(self.files[i]) as im:  # the header only: nothing is decoded
            w, h = im.size
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the axes
        return (h, w) if turned else (w, h)

    def _draw(self, position: int, n: int) -> torch.Tensor:
        """Off-pipeline reads (evaluation, pictures): the torch loader's images at the same global positions,
        jitter and flips included."""
        from gandist.data.unpaired import UnpairedFolders

        if self._twin is None:
            self._twin = UnpairedFolders(self.cfg, self.seed)
        out = [self._twin._draw_batch(g - g % 2, 2).x[g % 2] for g in self.global_positions(position, n)]
        return torch.stack(out)

    def indices(self, position: int, n: int) -> list[int]:
        from gandist.data.unpaired import domain_indices

        out = []
        for g in self.global_positions(position, n):
            domain, pair = g % 2, g // 2
            out.append(domain_indices(self.counts[domain], self.seed, domain, pair, 1)[0] + domain * self.counts[0])
        return out

    def next_batch(self, n: int) -> Batch:
        batch = super().next_batch(n)
        batch.domain = (torch.arange(n) % 2).to(batch.x.device)
        return batch


def _to_torch(tl) -> torch.Tensor:
    """DALI uint8 CHW batch -> float [-1, 1] torch tensor (the torch loader's exact formula)."""
    if type(tl).__name__.endswith("GPU"):
        from nvidia.dali.plugin.pytorch import feed_ndarray

        t = tl.as_tensor()
        out = torch.empty(t.shape(), dtype=torch.uint8, device="cuda")
        feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream())
    else:
        out = torch.from_numpy(np.array(tl.as_tensor()))  # one copy: DALI reuses its buffers
    return out.float() / 127.5 - 1.0
