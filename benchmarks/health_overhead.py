"""Cost of the training-health monitor on the quickstart: seconds per generator step with the monitor
off and on, interleaved repeats, median and p20/p80, reported as a ratio against the same run's
baseline.

    python benchmarks/health_overhead.py [--steps 400] [--repeats 5] [--out benchmarks/results/health_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from provenance import provenance  # noqa: E402


def time_run(overrides: list[str], steps: int) -> float:
    from gandist.config import load_config
    from gandist.train.loop import Trainer

    cfg = load_config(
        "quickstart",
        [
            f"train.steps={steps}",
            "train.progress=false",
            "train.sample_every=100000",
            "train.ckpt_every=100000",
            *overrides,
        ],
    )
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, Path(d), log_enabled=False)
        for _ in range(20):  # warm-up steps, not timed
            t.train_step()
        t0 = time.perf_counter()
        while t.step < steps:
            stats = t.train_step()
            for cb in t.callbacks:
                cb.on_step(t, stats)
        return (time.perf_counter() - t0) / (steps - 20)


def quantiles(xs: list[float]) -> dict:
    qs = statistics.quantiles(xs, n=5) if len(xs) > 1 else [xs[0]] * 4
    return {"median": statistics.median(xs), "p20": qs[0], "p80": qs[3]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/health_overhead.json")
    args = p.parse_args()
    off, on = [], []
    for _ in range(args.repeats):  # interleaved so drifts in machine load hit both alike
        off.append(time_run(["health.enabled=false"], args.steps))
        on.append(time_run(["health.enabled=true"], args.steps))
    res = {
        "benchmark": "health monitor overhead on configs/quickstart.yaml (defaults: every 25, probe every 100)",
        "sec_per_step_off": quantiles(off),
        "sec_per_step_on": quantiles(on),
        "overhead_ratio_median": statistics.median(on) / statistics.median(off) - 1.0,
        "raw": {"off": off, "on": on},
        **provenance(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(
        f"monitor off {res['sec_per_step_off']['median'] * 1e3:.2f} ms/step, "
        f"on {res['sec_per_step_on']['median'] * 1e3:.2f} ms/step: overhead {100 * res['overhead_ratio_median']:+.1f}%"
    )


if __name__ == "__main__":
    main()
