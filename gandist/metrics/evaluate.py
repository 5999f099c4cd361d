"""Evaluate generated samples: plan, extract fakes, extract reals (or read cached statistics), compute
each metric, record how.

Streaming: the samples pass through in batches of `batch` (sized per device, `metrics.batch` to
override) and only what a requested metric needs stays: the running mean and covariance for FID, the
per-split sums for IS, the features [N, D] themselves only for KID, precision/recall and the 2-D
metrics. Sample i is the same whatever the batch, the generation batch, the loader workers or the
number of ranks (see `sources`), and the extractor gives it the same features (bit for bit on CPU), so
results do not depend on any of them beyond the order in which the float64 statistics merge (~1e-15
relative in the statistics; the FID of rank-deficient covariances carries it through the square roots
of rounding-level eigenvalues: 8.8e-10 relative measured between 1 and 2 ranks on 1000 vs 1000).

Distributed: the strategy says which rank of how many this is; rank r takes samples
[r N / W, (r + 1) N / W) of each side; statistics and IS sums are merged over ranks, features are
gathered in sample order, and every rank computes the same values (rank 0 reports).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandist.errors import UserError
from gandist.metrics.entries import IS_SPLITS, METRICS, check_request, feature_plan, reads
from gandist.metrics.extractors import Extractor, build_extractor, extractor_name
from gandist.metrics.sources import DatasetSource, GeneratorSource, Source, StatsFile
from gandist.metrics.stats import RunningStats, merge_over_ranks

METRIC_NAMES = tuple(METRICS)
CPU_BATCH = 32  # small extractors (digits, points, modules): fewer Python round trips per sample
CUDA_BATCH = 256  # ~4 GiB of Inception activations at 299x299 in fp32: large enough to fill an H100


def auto_batch(device: torch.device, requested: int = 0, extractor: Extractor | None = None) -> int:
    """The extraction batch: `requested` (metrics.batch) if > 0, else sized for the device (and, on the
    CPU, for the extractor: `Extractor.cpu_batch`)."""
    if requested < 0:
        raise UserError(
            f"metrics.batch={requested}: use a positive batch size, or 0 for the device's default"
        )
    if requested:
        return requested
    if torch.device(device).type == "cuda":
        return CUDA_BATCH
    return getattr(extractor, "cpu_batch", 0) or CPU_BATCH


# ---------------------------------------------------------------------------------------------------
# 1. plan


@dataclass
class Plan:
    metrics: list[str]
    needs: frozenset[str]
    batch: int

    @classmethod
    def make(cls, metrics, kind: str, dataset: str | None, extractor: Extractor, batch: int) -> Plan:
        metrics = list(metrics)
        check_request(metrics, kind, dataset, extractor.has_probs)
        needs = frozenset().union(*(METRICS[m].needs for m in metrics)) if metrics else frozenset()
        return cls(metrics, needs, batch)

    def min_samples(self) -> int:
        return max((METRICS[m].min_samples for m in self.metrics), default=1)


# ---------------------------------------------------------------------------------------------------
# 2./3. extraction of one side


@dataclass
class Side:
    n: int
    stats: RunningStats | None = None
    feats: torch.Tensor | None = None  # [n, D] float32 on the CPU, in sample order
    probs: torch.Tensor | None = None  # [n, K] float64 class probabilities on the CPU, in sample order
    inception_score: tuple[float, float] | None = None


def _rank_range(n: int, strategy) -> tuple[int, int]:
    return strategy.rank * n // strategy.world_size, (strategy.rank + 1) * n // strategy.world_size


def _gather_rows(local: torch.Tensor, n: int, strategy) -> torch.Tensor:
    """Every rank's rows [n_r, D] concatenated in rank order (= sample order), on every rank."""
    if strategy.world_size == 1:
        return local
    per = -(-n // strategy.world_size)
    buf = torch.zeros(per, local.shape[1], dtype=local.dtype, device=strategy.device)
    buf[: len(local)] = local.to(strategy.device)
    parts = strategy.all_gather(buf)  # one collective for every rank's features
    counts = [
        (r + 1) * n // strategy.world_size - r * n // strategy.world_size for r in range(strategy.world_size)
    ]
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).cpu()


def extract_side(
    source: Source, extractor: Extractor, strategy, batch: int, stats: bool, feats: bool,
    is_splits: int = 0, desc: str = "", is_order: str = "shuffled", probs: bool = False,
) -> Side:  # fmt: skip
    """Stream this rank's share of `source` through `extractor`, keeping only what is asked for."""
    from tqdm import tqdm

    from gandist.metrics.isc import IS_SHUFFLE_SEED, ISAccumulator

    n = source.n
    start, stop = _rank_range(n, strategy)
    run, kept, kept_probs = None, [], []
    seed = IS_SHUFFLE_SEED if is_order == "shuffled" else None  # torch-fidelity's splits, or improved-gan's
    isc = ISAccumulator(n, extractor.classes, is_splits, seed) if is_splits else None
    pos = start
    with tqdm(total=stop - start, desc=desc, unit="img", disable=not strategy.is_main or stop - start < 4 * batch,
              leave=False, file=sys.stderr) as bar:  # fmt: skip
        for x in source.batches(start, stop, batch):
            f, logits = extractor.extract(x)
            if stats:
                run = run or RunningStats(f.shape[1], f.device)
                run.update(f)
            if feats:
                kept.append(f.float().cpu())
            if probs and logits is not None:
                kept_probs.append(torch.softmax(logits.double(), dim=1).cpu())
            if isc is not None:
                isc.update(logits, pos)
            pos += len(x)
            bar.update(len(x))
    if pos != stop:
        raise UserError(f"{desc}: expected {stop - start} samples, read {pos - start}")
    side = Side(n)
    if stats:
        run = run or RunningStats(extractor.dim or 1, extractor.device)
        side.stats = merge_over_ranks(run, strategy)
    if feats:
        local = torch.cat(kept) if kept else torch.zeros(0, extractor.dim, dtype=torch.float32)
        side.feats = _gather_rows(local, n, strategy)
    if probs and extractor.has_probs:
        local = torch.cat(kept_probs) if kept_probs else torch.zeros(0, extractor.classes, dtype=torch.float64)
        side.probs = _gather_rows(local, n, strategy)
    if isc is not None:
        isc.reduce(strategy)
        side.inception_score = isc.score()
    return side


# ---------------------------------------------------------------------------------------------------
# 4. context the metrics read


@dataclass
class EvalContext:
    fake: Side
    real: Side | None
    real_stats_np: tuple[np.ndarray, np.ndarray] | None
    extractor: Extractor
    dataset: str | None
    fake_source: Source
    real_source: Any
    out_dir: str | Path | None
    is_splits: int = IS_SPLITS
    extra: dict = field(default_factory=dict)

    @property
    def fake_stats(self):
        return self.fake.stats.numpy()

    @property
    def real_stats(self):
        return self.real_stats_np

    @property
    def fake_feats(self):
        return self.fake.feats

    @property
    def fake_probs(self):
        return self.fake.probs

    @property
    def real_feats(self):
        return self.real.feats

    @property
    def inception_score(self):
        return self.fake.inception_score


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process and of its largest child (loader workers), and the peak
    CUDA allocation, in GiB."""
    kib = 1024.0**2  # ru_maxrss is in KiB on Linux
    out = {
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
        "peak_worker_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 1024.0**3
    return {k: round(v, 3) for k, v in out.items()}


def evaluate_sources(
    fake: Source,
    real: Source | StatsFile | None,
    metrics: list[str] | tuple[str, ...],
    extractor: Extractor,
    strategy=None,
    batch: int = 0,
    dataset: str | None = None,
    out_dir: str | Path | None = None,
    reference_stats: str | Path | None = None,
    real_meta: dict | None = None,
    is_order: str = "shuffled",
    build: Callable[[str], Extractor] | None = None,
) -> dict[str, Any]:
    """Metrics of the samples of `fake` against `real` (a source, a statistics file, or None when no
    metric needs reals). `reference_stats`: where the reals' statistics are cached (read if present,
    written if not). A metric defined on other features than `extractor`'s (`entries.feature_plan`: `pr` on
    images reads VGG-16 fc2) reads those of `build(name)` (default: `build_extractor` with the weights found
    in the environment or the cache), both sides extracted once more. Returns the values and how they were
    computed, on every rank."""
    from gandist.strategies import Strategy

    strategy = strategy or Strategy(extractor.device)
    t0 = time.perf_counter()
    plan = Plan.make(metrics, fake.kind, dataset, extractor, auto_batch(strategy.device, batch, extractor))
    need_real = plan.needs & {"real_stats", "real_feats", "samples"}
    if need_real and real is None:
        raise UserError(
            f"metric(s) {', '.join(plan.metrics)} need real samples or statistics; none were given"
        )
    if isinstance(real, StatsFile) and plan.needs & {"real_feats", "samples"}:
        wants = [m for m in plan.metrics if METRICS[m].needs & {"real_feats", "samples"}]
        raise UserError(
            f"metric(s) {', '.join(wants)} need real samples, not only a statistics file ({real.path})"
        )
    n_min = plan.min_samples()
    for what, src in (("generated", fake), ("real", real if need_real else None)):
        if isinstance(src, Source) and src.n < n_min:
            raise UserError(f"{what} samples: {src.n}, but {', '.join(plan.metrics)} need at least {n_min}")
    if "fid" in plan.metrics and fake.n < 2:
        raise UserError(f"FID needs at least 2 generated samples, got {fake.n}")
    if is_order not in ("shuffled", "consecutive"):
        raise UserError(f"Inception Score split order '{is_order}' unknown; use shuffled or consecutive")
    groups = feature_plan(plan.metrics, extractor, fake.kind)
    own = groups.pop(extractor.key)  # the metrics that read `extractor`; the rest, by the extractor they read
    others = {key: (build or _default_build(fake.kind, dataset, strategy.device))(key) for key in groups}

    described = extractor.describe() if own or not others else {}  # an extractor no metric read is not named
    result: dict[str, Any] = {"n_fake": fake.n, **fake.describe(), **described, "batch": plan.batch}
    contexts = {}
    if own:
        contexts[extractor.key] = _own_context(fake, real, own, extractor, strategy, plan.batch, dataset, out_dir,
                                               reference_stats, real_meta, is_order, result)  # fmt: skip
    for key, ex in others.items():
        contexts[key] = _other_context(fake, real, groups[key], ex, strategy, batch, dataset, out_dir, result)
    # 4. metrics, in the order asked
    for name in plan.metrics:
        if name == "nn" and not strategy.is_main:
            continue  # a picture: rank 0 draws it
        result.update(METRICS[name].compute(contexts[reads(name, extractor, fake.kind)]))
    # 5. provenance
    result.update(seconds=time.perf_counter() - t0, world_size=strategy.world_size, device=str(strategy.device),
                  **peak_memory())  # fmt: skip
    return result


def _needs(names: list[str]) -> frozenset[str]:
    return frozenset().union(*(METRICS[m].needs for m in names))


def _default_build(kind: str, dataset: str | None, device) -> Callable[[str], Extractor]:
    return lambda key: build_extractor(key, kind, dataset or "", device)


def build_extractors(
    metrics, name: str, kind: str, data_name: str, device="cpu", inception: str | None = None,
    impl: str = "auto", vgg16: str | None = None,
) -> tuple[Extractor, Callable[[str], Extractor]]:  # fmt: skip
    """(the evaluation's extractor, the builder of those its metrics defined on other features read). The
    evaluation's is `name` (auto: the data source's) unless no metric reads it and all read one other
    (`--metrics pr` on images: VGG-16), so no weights file is needed that no requested metric reads."""

    def build(key: str) -> Extractor:
        return build_extractor(key, kind, data_name, device, inception, impl, vgg16)

    key = extractor_name(name, kind, data_name)
    plan = feature_plan([m for m in metrics if m in METRICS], key, kind)
    if not plan[key] and len(plan) == 2:
        key = list(plan)[1]
    return build(key), build


def _own_context(fake, real, names, extractor, strategy, batch, dataset, out_dir, reference_stats, real_meta,
                 is_order, result) -> EvalContext:  # fmt: skip
    """2./3. Both sides through the evaluation's extractor, keeping what `names` need (the reals' statistics
    from a file, or cached, when that is all they read); what was read from where goes into `result`."""
    needs = _needs(names)
    is_splits = min(IS_SPLITS, fake.n) if "fake_logits" in needs else 0
    # 2. fakes
    fake_side = extract_side(fake, extractor, strategy, batch, "fake_stats" in needs, "fake_feats" in needs,
                             is_splits, desc="generated", is_order=is_order, probs="fake_probs" in needs)  # fmt: skip
    # 3. reals: cached statistics when that is all the metrics read
    real_side, real_np = None, None
    if needs & {"real_stats", "real_feats", "samples"}:
        cached = reference_stats and Path(reference_stats).is_file() and not (needs & {"real_feats"})
        if isinstance(real, StatsFile) or cached:
            sf = real if isinstance(real, StatsFile) else StatsFile(reference_stats)
            mu, sigma, meta = sf.load(fake_side.stats.dim if fake_side.stats is not None else None)
            real_np = (mu, sigma)
            result["n_real"] = sf.n or meta.get("n")
            result["fid_reference"] = {"stats_file": str(sf.path), **meta}
        else:
            real_side = extract_side(real, extractor, strategy, batch, "real_stats" in needs,
                                     "real_feats" in needs, desc="real")  # fmt: skip
            result["n_real"] = real.n
            if real_side.stats is not None:
                real_np = real_side.stats.numpy()
                ref_meta = {**(real_meta or real.describe()), "n": real.n, "extractor": extractor.name,
                            "resize": extractor.resize}  # fmt: skip
                result["fid_reference"] = ref_meta
                if reference_stats and strategy.is_main:
                    from gandist.metrics.fid import save_stats

                    save_stats(reference_stats, *real_np, **ref_meta)
                    result["fid_reference"] = {**ref_meta, "stats_file": str(reference_stats)}
    return EvalContext(fake_side, real_side, real_np, extractor, dataset, fake, real, out_dir, is_splits,
                       extra={"is_order": is_order})  # fmt: skip


def _other_context(fake, real, names, ex, strategy, batch, dataset, out_dir, result) -> EvalContext:
    """Both sides through `ex`, the extractor metrics `names` are defined on, keeping their features (and
    statistics or probabilities if they need them); `ex` is recorded per metric (`<metric>_extractor`)."""
    needs = _needs(names)
    b = auto_batch(strategy.device, batch, ex)
    fake_side = extract_side(fake, ex, strategy, b, "fake_stats" in needs, "fake_feats" in needs,
                             desc=f"generated ({ex.name})", probs="fake_probs" in needs)  # fmt: skip
    real_side = None
    if needs & {"real_stats", "real_feats"}:
        real_side = extract_side(real, ex, strategy, b, "real_stats" in needs, "real_feats" in needs,
                                 desc=f"real ({ex.name})")  # fmt: skip
        result["n_real"] = real.n
    real_np = real_side.stats.numpy() if real_side is not None and real_side.stats is not None else None
    for name in names:
        result[f"{name}_extractor"] = {**ex.describe(), "batch": b}
    return EvalContext(fake_side, real_side, real_np, ex, dataset, fake, real, out_dir, 0)


# ---------------------------------------------------------------------------------------------------
# A run's generator against the run's data


def evaluate(
    G,
    cfg,
    kind: str,
    metrics: list[str] | tuple[str, ...],
    n: int = 10000,
    n_real: int | None = None,
    seed: int = 0,
    extractor: str | Extractor = "auto",
    inception: str | None = None,
    device: torch.device | str | None = None,
    out_dir: str | Path | None = None,
    data_path: str | None = None,
    reference_stats: str | Path | None = None,
    strategy=None,
    batch: int | None = None,
    gen_batch: int = 0,
    workers: int | None = None,
    noise_mode: str = "random",
    is_order: str = "shuffled",
    vgg16: str | None = None,
) -> dict[str, Any]:
    """Compute `metrics` for generator G (z [B, z_dim] -> samples) of a run with config `cfg`, against
    the run's data (a style-based G with `noise_mode` noise, fresh per sample by default). `strategy` says
    where and on which rank (default: one process on `device`, or on the CPU); `batch`: the extraction batch (default cfg.metrics.batch, 0 = sized for the device).
    `inception`, `vgg16`: the weights files (default cfg.metrics.inception / vgg16, else found)."""
    from gandist.data import build_dataset
    from gandist.strategies import Strategy

    if strategy is None:
        strategy = Strategy(torch.device(device) if device is not None else torch.device("cpu"))
    if batch is None:
        batch = int(getattr(getattr(cfg, "metrics", None), "batch", 0) or 0)
    check_request(list(metrics), kind, cfg.data.name, True)
    data_cfg = dataclasses.replace(cfg.data, path=data_path) if data_path else cfg.data
    data = build_dataset(data_cfg, seed=seed)
    section = getattr(cfg, "metrics", None)
    inception = inception or getattr(section, "inception", "") or None
    vgg16 = vgg16 or getattr(section, "vgg16", "") or None
    if isinstance(extractor, Extractor):
        ex, build = extractor, lambda key: build_extractor(key, kind, cfg.data.name, strategy.device, inception,
                                                           vgg16=vgg16)  # fmt: skip
    else:
        ex, build = build_extractors(metrics, extractor, kind, cfg.data.name, strategy.device, inception,
                                     vgg16=vgg16)  # fmt: skip
    n_real = n_real or min(n, getattr(data, "size", None) or n)
    fake = GeneratorSource(G, cfg.model.z_dim, n, seed, strategy.device, kind, gen_batch, noise_mode)
    real = DatasetSource(data, n_real, workers)
    needs = frozenset().union(*(METRICS[m].needs for m in metrics if m in METRICS))
    if reference_stats is None and "real_stats" in needs:
        files = getattr(data, "files", None)  # image folders: a changed set of files changes the key
        fingerprint = f"{len(files)}:{sum(f.stat().st_size for f in files)}" if files else ""
        reference_stats = default_stats_path(cfg.data.name, data_cfg, ex, n_real, seed, fingerprint)
    res = evaluate_sources(fake, real, metrics, ex, strategy, batch, cfg.data.name, out_dir, reference_stats,
                           real.describe(), is_order, build)  # fmt: skip
    return {"seed": seed, **res}


def stats_key(extractor: Extractor) -> str:
    """What of the extractor the cached statistics depend on: name, resize, the values its implementation
    gives (`describe()['values']`) and the weights file."""
    d = extractor.describe()
    w = d.get("weights")
    wid = f"{w}:{Path(w).stat().st_size}:{Path(w).stat().st_mtime_ns}" if w and Path(w).is_file() else ""
    return f"{d['extractor']}|{d['resize']}|{d.get('values', d.get('impl', ''))}|{wid}"


def default_stats_path(
    dataset: str, data_cfg, extractor: Extractor | str, n_real: int, seed: int, fingerprint: str = ""
) -> Path:
    """Where a dataset's reference statistics are cached: keyed by everything they depend on."""
    import hashlib

    from gandist.metrics.extractors import cache_dir

    name = extractor if isinstance(extractor, str) else extractor.name
    ex_key = extractor if isinstance(extractor, str) else stats_key(extractor)
    path = getattr(data_cfg, "path", "")
    where = str(Path(path).resolve()) if path else ""
    res, channels = getattr(data_cfg, "resolution", 0), getattr(data_cfg, "channels", 0)
    key = hashlib.sha256(
        f"{dataset}|{where}|{res}|{channels}|{ex_key}|{n_real}|{seed}|{fingerprint}".encode()
    ).hexdigest()[:16]
    return cache_dir() / "stats" / f"{dataset}-{res}px-{name}-n{n_real}-{key}.npz"


def folder_stats_path(source, extractor: Extractor) -> Path:
    """Where an image folder's statistics are cached (`gandist fid`, `gandist eval --data`): keyed by
    the folder, its files (count, bytes, newest mtime) and the extractor; beside the datasets' ones."""
    import hashlib

    from gandist.metrics.extractors import cache_dir

    key = hashlib.sha256(f"{source.root.resolve()}|{source.fingerprint()}|{stats_key(extractor)}".encode())
    return (
        cache_dir()
        / "stats"
        / f"folder-{source.root.resolve().name}-{extractor.name}-n{source.n}-{key.hexdigest()[:16]}.npz"
    )


def write_result(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(result) + "\n")


METRICS_NAMES = METRIC_NAMES
