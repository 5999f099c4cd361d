"""`gandist eval` and `gandist fid`: build the strategy, the extractor and the sources, report.

Both join a process group under torchrun (`build_strategy("auto")`) and leave it on every exit path:
a normal return, an error, and SIGTERM (turned into an exception in the main thread, so the `with`
block unwinds and destroys the group; a rank that exits with a live gloo group aborts with
'terminate called without an active exception').
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path


class _Terminated(Exception):
    """SIGTERM (a scheduler's or torchrun's stop) raised in the main thread, so `with` blocks unwind."""


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises _Terminated in the main thread while the block runs (the previous handler is
    restored after). A rank blocked inside a collective sees it when the collective returns."""

    def handler(signum, frame):
        raise _Terminated(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(res: dict, out: str | Path | None) -> None:
    import json

    from gandist.metrics.evaluate import write_result

    if out:
        write_result(res, out)
    mem = f"peak memory {res.get('peak_rss_gib', 0):.2f} GiB (largest worker {res.get('peak_worker_rss_gib', 0):.2f} GiB"
    mem += f", GPU {res['peak_cuda_gib']:.2f} GiB)" if "peak_cuda_gib" in res else ")"
    print(json.dumps(res, indent=1))
    print(f"[gandist] {res.get('seconds', 0):.1f} s, {mem}", file=sys.stderr)


# Fewest samples at which each metric's value means something (below it the value is computed, but is mostly
# noise or bias): the user is told, not refused, since a tiny --n is how one checks that evaluation runs.
MEANINGFUL_N = {
    "fid": (2048, "more samples than Inception's 2048 features, else the covariance is singular; papers use 50000"),
    "kid": (1000, "one subset of KID's size 1000, Binkowski et al. 2018"),
    "is": (5000, "10 splits of 500; Salimans et al. 2016 use 50000"),
    "pr": (1000, "k=3 neighbour radii are noise in small sets; Kynkaanniemi et al. 2019 use 50000"),
    "pr_inception": (1000, "k=3 neighbour radii are noise in small sets; Kynkaanniemi et al. 2019 use 50000"),
}


PROTOCOL_N = 50_000  # generated samples behind the published FIDs (Heusel et al. 2017, StyleGAN) and KIDs
BIASED_BELOW_PROTOCOL = ("fid", "kid")


def small_n_line(metrics: list[str], n: int, label: str = "eval --n") -> str | None:
    """One line naming, for each requested metric, the sample count it needs when `n` is below it; or, for
    FID and KID at a meaningful `n` below the papers' 50,000, that the value is biased upward."""
    short = [f"{m} >= {MEANINGFUL_N[m][0]} ({MEANINGFUL_N[m][1]})" for m in metrics if m in MEANINGFUL_N and n < MEANINGFUL_N[m][0]]  # fmt: skip
    if not short:
        biased = [m for m in metrics if m in BIASED_BELOW_PROTOCOL]
        if biased and n < PROTOCOL_N:
            return (f"[gandist] {label} {n}: {' and '.join(m.upper() for m in biased)} at fewer than {PROTOCOL_N} "
                    f"samples are biased upward against the published values (50,000 generated samples); "
                    f"compare only values taken at the same --n")  # fmt: skip
        return None
    names = ", ".join(m.split()[0] for m in short)
    return f"[gandist] {label} {n}: too few samples for meaningful values of {names}: " + "; ".join(short)


def run_eval(args: argparse.Namespace) -> int:
    from gandist.strategies import build_strategy


    # torchrun: joins the process group; every rank generates and extracts its share, rank 0 reports.
    # The `with` destroys the group on every exit (return, error, SIGTERM).
    with _sigterm_raises(), build_strategy("auto", "auto") as strategy:
        line = small_n_line([m.strip() for m in args.metrics.split(",")], args.n)
        if line and strategy.is_main:
            print(line, file=sys.stderr)
        t0 = time.perf_counter()
        try:
            res, out = _eval(args, strategy)
            # the whole command: loading the generator and the extractor too (the first digits eval trains
            # the classifier, minutes on a CPU, which the metrics' own clock does not see)
            res = {**res, "metric_seconds": res.get("seconds", 0.0), "seconds": time.perf_counter() - t0}
        except _Terminated as exc:
            print(f"[gandist] eval {exc}; nothing written", file=sys.stderr)
            return 143
        if strategy.is_main:
            _report(res, out)
    return 0


def _eval(args: argparse.Namespace, strategy):
    from gandist.metrics.evaluate import build_extractors, evaluate, evaluate_sources, folder_stats_path
    from gandist.metrics.extractors import build_extractor
    from gandist.metrics.sources import IMAGE_SUFFIXES, FolderSource

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    path = Path(args.checkpoint)
    is_folder = path.is_dir() and not (path / "checkpoints").is_dir() and not path.name.isdigit() and any(
        p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*"))  # fmt: skip
    if is_folder:  # a folder of generated images against a folder of reals (--data) or statistics
        # the extractor some requested metric reads (`--metrics pr` alone: VGG-16 only)
        ex, build = build_extractors(metrics, args.extractor if args.extractor != "auto" else "inception", "images",
                                     "", strategy.device, args.inception, args.extractor_impl, args.vgg16)  # fmt: skip
        fake = FolderSource(path, args.workers)  # every image of the folder
        real = FolderSource(args.data, args.workers, limit=args.n_real) if args.data else None
        ref = args.ref_stats or (folder_stats_path(real, ex) if real is not None else None)
        if real is None and args.ref_stats:
            from gandist.metrics.sources import StatsFile

            real = StatsFile(args.ref_stats)
        res = evaluate_sources(fake, real, metrics, ex, strategy, args.batch or 0, None, path, ref,
                               is_order=args.is_order, build=build)  # fmt: skip
        return {"fakes": str(path), **res}, args.out or path / "metrics.jsonl"
    from gandist.generate import load_generator

    gen = load_generator(args.checkpoint)
    gen.G.to(strategy.device)
    run_dir = gen.path.parent.parent
    extra = {}
    family = type(gen.cfg.model)
    if family.has_classes or "accuracy" in metrics:  # a family whose D classifies reports its accuracy
        import time

        from gandist.errors import UserError
        from gandist.metrics.evaluate import peak_memory
        from gandist.objectives.base import objective_class

        if not family.has_classes:
            raise UserError(
                f"classifier accuracy is a semi-supervised GAN metric; '{gen.path}' holds a {gen.family()} model "
                "(drop 'accuracy' from --metrics)"
            )
        t0 = time.perf_counter()
        extra = objective_class(family.objective).checkpoint_metrics(gen.path)
        metrics = [m for m in metrics if m != "accuracy"]
        if not metrics:
            res = {"checkpoint": str(gen.path), "step": gen.step, **extra,
                   "seconds": time.perf_counter() - t0, **peak_memory()}  # fmt: skip
            return res, args.out or run_dir / "metrics.jsonl"
    extractor = args.extractor
    if args.extractor_impl != "auto":
        extractor = build_extractor(extractor, gen.kind, gen.cfg.data.name, strategy.device, args.inception,
                                    args.extractor_impl)  # fmt: skip
    res = evaluate(gen.G, gen.cfg, gen.kind, metrics, n=args.n, n_real=args.n_real, seed=args.seed,
                   extractor=extractor, inception=args.inception, out_dir=run_dir, data_path=args.data,
                   reference_stats=args.ref_stats, strategy=strategy, batch=args.batch, workers=args.workers,
                   noise_mode=args.noise_mode, is_order=args.is_order, vgg16=args.vgg16)  # fmt: skip
    return {"checkpoint": str(gen.path), "step": gen.step, **extra, **res}, args.out or run_dir / "metrics.jsonl"


def run_fid(args: argparse.Namespace) -> int:
    from gandist.strategies import build_strategy

    with _sigterm_raises(), build_strategy("auto", "auto") as strategy:
        try:
            res = _fid(args, strategy)
        except _Terminated as exc:
            print(f"[gandist] fid {exc}; nothing written", file=sys.stderr)
            return 143
        if strategy.is_main:
            _report(res, args.out)
            print(f"FID: {res['fid']:.6f}")
    return 0


def _fid_side(arg: str, args, strategy, ex):
    """(source, statistics cache path) for one argument of `gandist fid`."""
    from gandist.metrics.evaluate import folder_stats_path
    from gandist.metrics.sources import FolderSource, GeneratorSource, StatsFile
    from gandist.train.checkpoint import resolve_checkpoint

    p = Path(arg)
    if p.suffix == ".npz":
        return StatsFile(p), None, {"stats_file": str(p)}
    if not p.exists():
        from gandist.errors import UserError

        raise UserError(
            f"'{arg}' does not exist: give an image folder, a .npz statistics file or a checkpoint"
        )
    if (p / "checkpoints").is_dir() or (p.is_dir() and p.name.isdigit()):
        from gandist.generate import load_generator

        gen = load_generator(resolve_checkpoint(p))
        if gen.kind != "images":
            from gandist.errors import UserError

            raise UserError(
                f"'{arg}' generates 2-D points; FID on Inception features needs images (use eval)"
            )
        gen.G.to(strategy.device)
        src = GeneratorSource(gen.G, gen.cfg.model.z_dim, args.n, args.seed, strategy.device)
        return src, None, {"checkpoint": str(gen.path), "step": gen.step, "seed": args.seed, "n": args.n}
    src = FolderSource(p, args.workers)
    return src, folder_stats_path(src, ex), src.describe()


def _fid(args: argparse.Namespace, strategy) -> dict:
    import time

    from gandist.metrics.evaluate import auto_batch, extract_side, peak_memory
    from gandist.metrics.extractors import build_extractor
    from gandist.metrics.fid import frechet_distance, load_stats, save_stats
    from gandist.metrics.sources import StatsFile

    t0 = time.perf_counter()
    for arg in (args.a, args.b):  # both inputs checked before the extractor loads or a side's extraction starts
        if Path(arg).suffix == ".npz":
            load_stats(arg)  # keys and shapes here; the feature width once the extractor is known
        elif not Path(arg).exists():
            from gandist.errors import UserError

            raise UserError(f"'{arg}' does not exist: give an image folder, a .npz statistics file or a checkpoint")
    both_stats = Path(args.a).suffix == ".npz" and Path(args.b).suffix == ".npz"
    ex = None if both_stats else build_extractor("inception", "images", "", strategy.device, args.inception,
                                                 args.extractor_impl)  # fmt: skip
    batch = auto_batch(strategy.device, args.batch or 0, ex)
    if ex is not None:  # a statistics file's width too, before either side's extraction starts
        for arg in (args.a, args.b):
            if Path(arg).suffix == ".npz":
                load_stats(arg, ex.dim)
    stats, described = [], []
    for i, arg in enumerate((args.a, args.b)):
        src, cache, desc = (
            _fid_side(arg, args, strategy, ex) if ex else (StatsFile(arg), None, {"stats_file": arg})
        )
        cache = None if args.no_cache or i == 0 else cache  # B is the reference: its statistics are cached
        dim = stats[0][0].shape[0] if stats else (ex.dim if ex else None)
        if isinstance(src, StatsFile):
            mu, sigma, _ = src.load(dim)
        elif cache is not None and cache.is_file():
            mu, sigma, _ = load_stats(cache, ex.dim)
            desc = {**desc, "stats_file": str(cache)}
        else:
            if src.n < 2:
                from gandist.errors import UserError

                raise UserError(f"FID needs at least 2 images per side; '{arg}' has {src.n}")
            side = extract_side(src, ex, strategy, batch, True, False, desc="A" if i == 0 else "B")
            mu, sigma = side.stats.numpy()
            meta = {**desc, "n": src.n, **ex.describe()}
            if strategy.is_main and cache is not None:
                save_stats(cache, mu, sigma, **meta)
                desc = {**desc, "stats_file": str(cache)}
            if strategy.is_main and i == 0 and args.save_stats:
                save_stats(args.save_stats, mu, sigma, **meta)
        stats.append((mu, sigma))
        described.append(desc)
    fid = frechet_distance(*stats[0], *stats[1])
    res = {"fid": fid, "a": described[0], "b": described[1], **(ex.describe() if ex else {}), "batch": batch}
    return {**res, "seconds": time.perf_counter() - t0, "world_size": strategy.world_size, **peak_memory()}
