"""Semi-supervised GAN vs the same D trained on the labelled digits alone (issue 17's measurable answer).

For each seed, trains `sgan_digits.yaml` twice through the one training loop, loss.mode=semi and
loss.mode=supervised (same D, same labelled subset, same steps and optimiser), and reports D's accuracy on
the 497 held-out digits; then the mean and the spread (sample standard deviation, min-max) per mode.

    OMP_NUM_THREADS=1 python benchmarks/quality/sgan_digits.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from gandist.cli_args import Seeds
from gandist.config import load_config
from gandist.families.sgan.objective import accuracy
from gandist.strategies import strategy_from_config
from gandist.train.loop import Trainer


def heldout_accuracy(mode: str, seed: int, overrides: list[str]) -> tuple[float, float]:
    cfg = load_config(
        "sgan_digits", [f"loss.mode={mode}", f"train.seed={seed}", "train.progress=false", *overrides]
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, d, strategy_from_config(cfg.train), log_enabled=False)
        t.train(progress=False)
    x, y = t.data.heldout()
    return accuracy(t.nets["D"], x, y, cfg.model.classes), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=Seeds(), default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        row = {"seed": seed}
        for mode in ("semi", "supervised"):
            row[mode], row[f"{mode}_s"] = heldout_accuracy(mode, seed, args.overrides)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for mode in ("semi", "supervised"):
        acc = [r[mode] for r in rows]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(
            f"{mode:>10}: mean {statistics.mean(acc):.4f}  sd {sd:.4f}  min {min(acc):.4f}  max {max(acc):.4f}"
        )
    wins = [r["semi"] - r["supervised"] for r in rows]
    print(f"semi - supervised per seed: {', '.join(f'{w:+.4f}' for w in wins)}")


if __name__ == "__main__":
    main()
