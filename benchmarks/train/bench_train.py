"""Training throughput per resolution: images/s, seconds per kimg and peak memory of whole training steps
(every phase, the gradient penalty included), eager vs torch.compile, same batch, same run.

Each (family, resolution, mode) runs in a fresh subprocess, so peak memory is its own (CUDA: the
allocator's peak; CPU: the process's peak resident set) and compile caches do not leak between rows. A
phase at resolution r is measured as the stable phase of a network grown to r: the same blocks, widths
and batch as r in a progressive run (a fade-in additionally runs the previous toRGB/fromRGB, a few 1x1
convolutions). The data is one fixed batch on the device: the loaders have their own benchmark
(`benchmarks/data/bench_loaders.py`).

    python benchmarks/train/bench_train.py                       # GPU: PGGAN at full width, 64..1024, eager + compile
    python benchmarks/train/bench_train.py --smoke               # CPU: tiny widths, 8 and 16 px (CI)

Writes `results/train-<family>-<device>-<date>.{csv,json,md}` with provenance; each row carries the
median and p20/p80 of per-step times and, for compile rows, the speedup over eager measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# The official per-resolution minibatches of PGGAN's one-GPU preset (pggan_1024.yaml).
PGGAN_BATCH = {4: 16, 8: 16, 16: 16, 32: 16, 64: 16, 128: 16, 256: 14, 512: 6, 1024: 3}


def _config(family: str, resolution: int, batch: int, mode: str, precision: str, smoke: bool, device: str):
    from gandist.config import load_config

    widths = ["model.fmap_base=64", "model.fmap_max=8", "model.z_dim=16"] if smoke else []
    group = min(4, batch)
    return load_config(None, [
        "name=bench", f"model.name={family}", *widths, f"model.mbstd_group={group if batch % group == 0 else batch}",
        "loss.name=wgan-gp", "loss.gp_weight=10", "loss.drift=0.001", "optim.lr_g=0.001", "optim.lr_d=0.001",
        "optim.beta1=0.0", "optim.beta2=0.99", "data.name=procedural", f"data.resolution={resolution}",
        f"data.batch_size={batch}", "data.size=16", f"train.precision={precision}",
        f"train.compile={'true' if mode == 'compile' else 'false'}", f"train.device={device}",
        "train.progress=false", "health.enabled=false", "train.steps=1000000",
    ])  # fmt: skip


def run_one(spec: dict) -> dict:
    """Time `spec['steps']` training steps after `spec['warmup']` (compile happens in the warm-up)."""
    import torch

    from gandist.data.base import Batch
    from gandist.train.loop import Trainer

    cfg = _config(spec["family"], spec["resolution"], spec["batch"], spec["mode"], spec["precision"],
                  spec["smoke"], spec["device"])  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, Path(d), log_enabled=False)
        cuda = t.device.type == "cuda"
        fixed = t.data.peek(spec["batch"]).to(t.device)
        t.data.next_batch = lambda n: Batch(fixed[:n])

        def sync():
            if cuda:
                torch.cuda.synchronize()

        for _ in range(spec["warmup"]):
            t.train_step()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(spec["steps"]):
            t0 = time.perf_counter()
            t.train_step()
            sync()
            times.append(time.perf_counter() - t0)
        peak = (
            torch.cuda.max_memory_allocated()
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
    images = spec["batch"]  # real images shown per step (one D step per G step)
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    med = statistics.median(times)
    return {**spec, "median_s": med, "p20_s": q[0], "p80_s": q[3], "img_per_s": images / med,
            "sec_per_kimg": med * 1000 / images, "peak_mem_gib": peak / 2**30,
            "peak_mem_kind": "cuda max_memory_allocated" if cuda else "process peak RSS"}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="pggan", choices=["pggan"])
    p.add_argument("--resolutions", default="64,128,256,512,1024")
    p.add_argument(
        "--batch", type=int, default=0, help="images per step (default: the official per-resolution batch)"
    )
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--smoke", action="store_true", help="CPU, tiny widths, 8 px eager and compiled, 16 px eager, 3 steps"
    )
    p.add_argument("--out", default=str(HERE.parent / "results"))
    p.add_argument(
        "--one", default=None, help=argparse.SUPPRESS
    )  # internal: run one spec (JSON) and print its row
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return []
    if args.smoke:  # both modes at 8 px (compile with the penalty's eager path), eager at 16
        args.resolutions, args.modes, args.precision, args.steps, args.warmup, args.device = (
            "8,16",
            "eager,compile",
            "fp32",
            3,
            2,
            "cpu",
        )
    from provenance import provenance

    prov = provenance()
    rows: list[dict] = []
    for res in [int(r) for r in args.resolutions.split(",")]:
        for mode in args.modes.split(","):
            if args.smoke and mode == "compile" and res != 8:
                continue
            spec = {"family": args.family, "resolution": res, "batch": args.batch or PGGAN_BATCH.get(res, 16),
                    "mode": mode, "precision": args.precision, "steps": args.steps, "warmup": args.warmup,
                    "smoke": args.smoke, "device": args.device}  # fmt: skip
            env = dict(
                os.environ,
                PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
            )
            r = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                               env=env, timeout=3600)  # fmt: skip
            if r.returncode != 0:
                rows.append({**spec, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]})
                print(f"[bench_train] {res}px {mode}: failed: {rows[-1]['error']}", file=sys.stderr)
                continue
            row = json.loads(r.stdout.strip().splitlines()[-1])
            eager = next(
                (x for x in rows if x["resolution"] == res and x["mode"] == "eager" and "error" not in x),
                None,
            )
            row["speedup_vs_eager"] = eager["median_s"] / row["median_s"] if eager else 1.0
            rows.append({**row, **{k: prov[k] for k in ("device", "torch", "triton", "commit", "date")}})
            print(f"[bench_train] {res}px {mode}: {row['img_per_s']:.1f} img/s, {row['sec_per_kimg']:.1f} s/kimg, "
                  f"peak {row['peak_mem_gib']:.2f} GiB", file=sys.stderr)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "smoke" if args.smoke else prov["device"].split(":")[0].replace(" ", "_")
    stem = out / f"train-{args.family}-{device}-{prov['date'][:10]}"
    keys = sorted({k for r in rows for k in r})
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    stem.with_suffix(".json").write_text(json.dumps({"provenance": prov, "rows": rows}, indent=1))
    lines = [f"# {args.family} training throughput ({prov['device']})", "",
             f"`{prov['command']}` at {prov['commit']}, {prov['date']}, torch {prov['torch']}; precision {args.precision}; "
             "steps include every phase and the gradient penalty; the data is one fixed batch on the device.", "",
             "| resolution | batch | mode | img/s | s/kimg | p20-p80 step ms | peak GiB | vs eager |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['resolution']} | {r['batch']} | {r['mode']} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['resolution']} | {r['batch']} | {r['mode']} | {r['img_per_s']:.1f} | {r['sec_per_kimg']:.1f} | "
                     f"{1000 * r['p20_s']:.1f}-{1000 * r['p80_s']:.1f} | {r['peak_mem_gib']:.2f} | {r['speedup_vs_eager']:.2f}x |")  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
