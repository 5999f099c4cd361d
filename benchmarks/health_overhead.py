"""Cost of the training-health monitor on the quickstart, as a ratio against a baseline measured in the
same run. One trainer alternates blocks of generator steps with the monitor on and off (ABBA order),
so both arms share the process, the model state and the machine's load; the monitor's full cost is
included (per-step gradient norms, the statistics it keeps, its periodic evaluation and diversity probe).
The monitor is driven through its own interface (observe each step, update where due), with the
settings, probe sampler and reference batch the loop hands it.

    python benchmarks/health_overhead.py [--blocks 40] [--block-steps 50] [--out benchmarks/results/health_overhead.json]
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


def quantiles(xs: list[float]) -> dict:
    qs = statistics.quantiles(xs, n=5)
    return {"median": statistics.median(xs), "p20": qs[0], "p80": qs[3]}


def main() -> None:

    import torch

    from gandist.config import flat_dict, load_config
    from gandist.rng import stream
    from gandist.strategies import strategy_from_config
    from gandist.train.health import HealthMonitor
    from gandist.train.loop import Trainer

    p = argparse.ArgumentParser()
    p.add_argument("--blocks", type=int, default=40, help="blocks per arm")
    p.add_argument("--block-steps", type=int, default=50)
    p.add_argument("--out", default="benchmarks/results/health_overhead.json")
    args = p.parse_args()
    total = 2 * args.blocks * args.block_steps + 50
    cfg = load_config("quickstart", [f"train.steps={total}", "train.progress=false"])
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, Path(d), strategy_from_config(cfg.train), log_enabled=False)
        n = cfg.health.diversity_n
        z = torch.randn(n, cfg.model.z_dim, generator=stream(cfg.train.seed, "health_probe")).to(t.device)
        monitor = HealthMonitor(
            cfg.health,
            flat_dict(cfg),
            sample=lambda: t.sample_net()(z),
            reference=t.data.peek(n, position=0),
            echo=False,
        )
        for _ in range(50):  # warm-up, not timed
            t.train_step()
        times: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(2 * args.blocks):
            arm = "on" if (i % 4) in (1, 2) else "off"  # off on on off | off on on off ...
            t.health = monitor if arm == "on" else None  # t.health: the phases compute gradient norms
            t0 = time.perf_counter()
            pending = []
            # as the loop does: statistics stay on the device and are read at log points (both arms,
            # every 50 steps) and, with the monitor, at its evaluation and probe points too
            for _ in range(args.block_steps):
                pending.append((t.step + 1, t.train_step()))
                due = arm == "on" and monitor.due(t.step)
                if due or t.step % cfg.train.log_every == 0:
                    read = t._read(pending)
                    pending.clear()
                    if arm == "on":
                        for step, host in read:
                            monitor.observe(step, host)
                    if due:
                        monitor.update(t.step)
            times[arm].append((time.perf_counter() - t0) / args.block_steps)
    off, on = times["off"], times["on"]
    res = {
        "benchmark": "health monitor overhead on configs/quickstart.yaml (health defaults: evaluate every 25 steps, diversity probe every 100)",
        "sec_per_step_off": quantiles(off),
        "sec_per_step_on": quantiles(on),
        "overhead_ratio_median": statistics.median(on) / statistics.median(off) - 1.0,
        "blocks_per_arm": args.blocks,
        "steps_per_block": args.block_steps,
        "raw_sec_per_step": times,
        **provenance(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(
        f"monitor off {res['sec_per_step_off']['median'] * 1e3:.2f} ms/step "
        f"(p20 {res['sec_per_step_off']['p20'] * 1e3:.2f}, p80 {res['sec_per_step_off']['p80'] * 1e3:.2f}), "
        f"on {res['sec_per_step_on']['median'] * 1e3:.2f} ms/step "
        f"(p20 {res['sec_per_step_on']['p20'] * 1e3:.2f}, p80 {res['sec_per_step_on']['p80'] * 1e3:.2f}): "
        f"overhead {100 * res['overhead_ratio_median']:+.1f}%"
    )


if __name__ == "__main__":
    main()
