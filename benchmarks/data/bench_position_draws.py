"""Cost of drawing the 2-D mixtures per sample position (blocks of 64 positions, one generator each) against the
previous draw (one generator per batch, keyed by the batch's first position, which made rank r's share differ
from one process's batch). Both are timed in the same process, alternating, on one thread.

    python benchmarks/data/bench_position_draws.py [--sizes 128,256,2000] [--repeats 200] [--offset 37]

Prints a markdown table: median and p20/p80 microseconds per draw, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gandist.config import make_section
from gandist.data.base import DATASETS, load_sources
from gandist.rng import position_generator


def batch_keyed(src, position: int, n: int) -> torch.Tensor:
    """The previous `GaussianMixture2D._draw`: one generator per batch."""
    g = position_generator(src.seed, position)
    which = torch.randint(len(src.modes), (n,), generator=g)
    noise = torch.randn(n, 2, generator=g, dtype=torch.float64) * src.std
    return (src.modes[which] + noise).float()


def _quantiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=10)
    return statistics.median(xs), q[1], q[7]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,256,2000")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--source", default="ring", choices=("ring", "grid"))
    ap.add_argument("--offset", type=int, default=0, help="shift every start (e.g. 37: unaligned batches)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_sources()
    src = DATASETS[args.source](make_section("data", name=args.source), seed=2)
    print(f"batches at positions i * n + {args.offset}\n")
    print(f"| {args.source} samples | batch-keyed us (p20-p80) | per-position us (p20-p80) | ratio |")
    print("|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        times = {"old": [], "new": []}
        for i in range(args.repeats):
            position = i * n + args.offset  # training draws consecutive batches from position 0
            for name in ("old", "new"):
                t0 = time.perf_counter()
                if name == "old":
                    batch_keyed(src, position, n)
                else:
                    src._draw(position, n)
                times[name].append((time.perf_counter() - t0) * 1e6)
        (mo, lo, ho), (mn, ln, hn) = _quantiles(times["old"]), _quantiles(times["new"])
        print(f"| {n} | {mo:.1f} ({lo:.1f}-{ho:.1f}) | {mn:.1f} ({ln:.1f}-{hn:.1f}) | {mn / mo:.2f} |")
    print(f"\ntorch {torch.__version__}, one thread, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
