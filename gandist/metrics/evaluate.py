"""Evaluate a generator: sample, extract features, compute metrics, record how.

Sample i's latent depends only on (seed, i): latents come in chunks of CHUNK, chunk j drawn from a
generator seeded with (seed, j). Under torchrun every rank takes the chunks j = rank (mod world),
generates and extracts them, features are all-gathered and put back in global order, and rank 0
computes the metrics, so a distributed evaluation equals the single-process one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from gandist.errors import UserError
from gandist.metrics.extractors import Extractor, build_extractor
from gandist.metrics.fid import feature_stats, frechet_distance, load_stats, save_stats

CHUNK = 250
METRICS = ("fid", "is", "kid", "pr", "nn", "modes", "parzen")


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> DistInfo:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()


def latent_chunk(seed: int, j: int, n: int, z_dim: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed * 1_000_003 + j))


def _gather_rows(local: list[tuple[int, torch.Tensor]], n_chunks: int, info: DistInfo) -> torch.Tensor:
    """Concatenate chunk results [n_j, ...] from every rank in global chunk order."""
    if info.world == 1:
        return torch.cat([t for _, t in sorted(local, key=lambda x: x[0])])
    # Every rank holds chunks j = rank, rank + world, ...; pad to the same count, gather, reorder.
    per_rank = -(-n_chunks // info.world)
    sample = local[0][1] if local else None
    shape = torch.tensor(list(sample.shape[1:]) if sample is not None else [], dtype=torch.long)
    width = int(shape.prod()) if sample is not None else 0
    width_t = torch.tensor([width], dtype=torch.long)
    dist.all_reduce(width_t, op=dist.ReduceOp.MAX)
    width = int(width_t)
    buf = torch.zeros(per_rank, CHUNK, width, dtype=torch.float64)
    counts = torch.zeros(per_rank, dtype=torch.long)
    for k, (_, t) in enumerate(sorted(local, key=lambda x: x[0])):
        buf[k, : len(t)] = t.reshape(len(t), -1).double()
        counts[k] = len(t)
    bufs = [torch.zeros_like(buf) for _ in range(info.world)]
    cnts = [torch.zeros_like(counts) for _ in range(info.world)]
    dist.all_gather(bufs, buf)  # one collective for the features, one for the chunk sizes
    dist.all_gather(cnts, counts)
    rows = []
    for j in range(n_chunks):
        r, k = j % info.world, j // info.world
        rows.append(bufs[r][k, : int(cnts[r][k])])
    return torch.cat(rows)


def generate_and_extract(
    G, z_dim: int, n: int, seed: int, extractor: Extractor, device, info: DistInfo, keep_samples: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Features [n, D], probs [n, K] or None, and the first `keep_samples` samples (for pictures)."""
    from tqdm import tqdm

    n_chunks = -(-n // CHUNK)
    feats, probs, kept = [], [], []
    mine = range(info.rank, n_chunks, info.world)
    for j in tqdm(
        mine, desc="generate + extract", unit="chunk", disable=info.rank != 0 or len(mine) < 4, leave=False
    ):
        m = min(CHUNK, n - j * CHUNK)
        with torch.no_grad():
            x = G(latent_chunk(seed, j, m, z_dim).to(device))
        f, p = extractor(x)
        feats.append((j, f))
        if p is not None:
            probs.append((j, p))
        if j * CHUNK < keep_samples:
            kept.append((j, x.detach().cpu()))
    all_f = _gather_rows(feats, n_chunks, info)
    all_p = _gather_rows(probs, n_chunks, info) if extractor.has_probs else None
    shown = (
        torch.cat([t for _, t in sorted(kept, key=lambda x: x[0])])[:keep_samples] if kept else torch.empty(0)
    )
    return all_f, all_p, shown


def real_features(data, n: int, extractor: Extractor, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of the first n real samples of the stream (seeded), split over ranks like the fakes."""
    from tqdm import tqdm

    n_chunks = -(-n // CHUNK)
    feats = []
    mine = range(info.rank, n_chunks, info.world)
    for j in tqdm(
        mine, desc="real features", unit="chunk", disable=info.rank != 0 or len(mine) < 4, leave=False
    ):
        m = min(CHUNK, n - j * CHUNK)
        feats.append((j, extractor(data.peek(m, position=j * CHUNK))[0]))
    return _gather_rows(feats, n_chunks, info), data.peek(min(n, 2000))


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
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
    data_path: str | None = None,
    reference_stats: str | Path | None = None,
) -> dict[str, Any]:
    """Compute `metrics` for generator G (a callable z -> samples) of a run with config `cfg`.
    Returns a dict of values plus how they were computed; meaningful on rank 0 (all ranks get it)."""
    from gandist.data import build_dataset

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    if "modes" in metrics and cfg.data.name not in ("ring", "grid"):
        raise UserError("metric 'modes' is defined for the 2-D mixtures (data.name ring or grid)")
    info = DistInfo.current()
    t0 = time.perf_counter()
    data_cfg = cfg.data
    if data_path:
        import dataclasses

        data_cfg = dataclasses.replace(cfg.data, path=data_path)
    data = build_dataset(data_cfg, seed=seed)
    ex = (
        extractor
        if isinstance(extractor, Extractor)
        else build_extractor(extractor, kind, cfg.data.name, device, inception)
    )
    n_real = n_real or min(n, getattr(data, "size", None) or n)
    keep = 16 if "nn" in metrics else 0
    ff, fp, shown = generate_and_extract(G, cfg.model.z_dim, n, seed, ex, device, info, keep)
    rf, real_samples = real_features(data, n_real, ex, info)
    result: dict[str, Any] = {"n_fake": n, "n_real": n_real, "seed": seed, **ex.describe()}
    if info.rank != 0:
        return result
    if "fid" in metrics:
        if reference_stats is None:
            files = getattr(data, "files", None)  # image folders: a changed set of files changes the key
            fingerprint = f"{len(files)}:{sum(f.stat().st_size for f in files)}" if files else ""
            reference_stats = default_stats_path(cfg.data.name, data_cfg, ex.name, n_real, seed, fingerprint)
        mu_f, s_f = feature_stats(ff)
        if reference_stats and Path(reference_stats).is_file():
            mu_r, s_r, meta = load_stats(reference_stats)
            result["fid_reference"] = {"stats_file": str(reference_stats), **meta}
        else:
            mu_r, s_r = feature_stats(rf)
            ref_meta = {"dataset": cfg.data.name, "data_path": data_cfg.path, "resolution": data_cfg.resolution,
                        "n": n_real, "extractor": ex.name, "resize": ex.resize}  # fmt: skip
            result["fid_reference"] = ref_meta
            if reference_stats:
                save_stats(reference_stats, mu_r, s_r, **ref_meta)
                result["fid_reference"]["stats_file"] = str(reference_stats)
        result["fid"] = frechet_distance(mu_f, s_f, mu_r, s_r)
    if "is" in metrics:
        if fp is None:
            raise UserError(f"metric 'is' needs class probabilities; extractor {ex.name} has none")
        from gandist.metrics.isc import inception_score

        result["is"], result["is_std"] = inception_score(fp, splits=min(10, n))
    if "kid" in metrics:
        from gandist.metrics.kid import kernel_inception_distance

        result["kid"], result["kid_std"] = kernel_inception_distance(
            ff, rf, subsets=100, subset_size=min(1000, n, n_real)
        )
    if "pr" in metrics:
        from gandist.metrics.precision_recall import precision_recall

        result.update(precision_recall(rf, ff, k=3))
    if "modes" in metrics:
        from gandist.metrics.modes import mode_coverage

        result.update(mode_coverage(ff, cfg.data.name))
    if "parzen" in metrics:
        from gandist.metrics.parzen import parzen_log_likelihood

        fake = ff if kind == "points" else None
        if fake is None:
            raise UserError(
                "metric 'parzen' is computed on 2-D points (a pixel-space Parzen estimate says little)"
            )
        pz = parzen_log_likelihood(fake, rf)
        result.update(parzen_ll=pz["mean"], parzen_se=pz["se"], parzen_sigma=pz["sigma"])
    if "nn" in metrics:
        if kind != "images":
            raise UserError("metric 'nn' draws images; this run generates 2-D points")
        from gandist.metrics.neighbours import nearest_neighbours_figure

        out = Path(out_dir or ".") / "nearest_neighbours.png"
        real_imgs = real_samples
        rfe, _ = ex(real_imgs)
        sf, _ = ex(shown)
        nn_res = nearest_neighbours_figure(shown, real_imgs, out, k=5, fake_feats=sf, real_feats=rfe)
        result["nn_figure"] = nn_res["figure"]
        result["nn_min_pixel_distance"] = float(np.min(nn_res["pixel_distances"][:, 0]))
    result["seconds"] = time.perf_counter() - t0
    return result


def default_stats_path(
    dataset: str, data_cfg, extractor: str, n_real: int, seed: int, fingerprint: str = ""
) -> Path:
    """Where a dataset's reference statistics are cached: keyed by everything they depend on."""
    import hashlib

    from gandist.metrics.extractors import cache_dir

    where = str(Path(data_cfg.path).resolve()) if data_cfg.path else ""
    key = hashlib.sha256(
        f"{dataset}|{where}|{data_cfg.resolution}|{data_cfg.channels}|{extractor}|{n_real}|{seed}|{fingerprint}".encode()
    ).hexdigest()[:16]
    return cache_dir() / "stats" / f"{dataset}-{data_cfg.resolution}px-{extractor}-n{n_real}-{key}.npz"


def write_result(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(result) + "\n")
