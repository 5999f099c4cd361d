"""Training throughput per resolution: images/s, seconds per kimg and peak memory of whole training steps
(every phase, the gradient penalty included), eager vs torch.compile (PGGAN, DCGAN) and the fused Triton
layer epilogue vs the reference ops vs torch.compile (StyleGAN), same batch, same run.

Each (family, resolution, mode) runs in a fresh subprocess, so peak memory is its own (CUDA: the
allocator's peak; CPU: the process's peak resident set) and compile caches do not leak between rows. A
phase at resolution r is measured as the stable phase of a network grown to r: the same blocks, widths
and batch as r in a progressive run (a fade-in additionally runs the previous toRGB/fromRGB, a few 1x1
convolutions). The data is one fixed batch on the device: the loaders have their own benchmark
(`benchmarks/data/bench_loaders.py`).

    python benchmarks/train/bench_train.py                       # GPU: PGGAN at full width, 64..1024, eager + compile
    python benchmarks/train/bench_train.py --family stylegan     # GPU: StyleGAN, reference / fused / compile
    python benchmarks/train/bench_train.py --family dcgan --resolutions 64   # GPU: DCGAN 64^2, eager + compile
    python benchmarks/train/bench_train.py --smoke               # CPU: tiny widths, 8 and 16 px (CI)
    python benchmarks/train/bench_train.py --smoke --family stylegan

StyleGAN modes: `reference` (eager, the pure-torch epilogue), `fused` (eager, the Triton epilogue; on CPU
the Triton interpreter, a correctness check only), `compile` (torch.compile over the reference ops) and
`compile-fused` (torch.compile around the fused op). Compiled rows run the R1 pass eager (compile cannot
differentiate twice). Lazy R1 runs every 16 steps: the timed window is a whole number of intervals, and
images/s and s/kimg come from the mean step time over it (the throughput a run sees), beside the median
and p20/p80 of single steps. Model FLOPs per image (convolutions and matrix products of G and D, forward,
backward and the regularisation passes at their interval; `torch.utils.flop_counter`'s formulas) are counted once per
resolution in the eager baseline; MFU = FLOPs/image x images/s over the device's dense bf16 peak (GPUs in
`PEAK_BF16` only; none on CPU).

Writes `results/train-<family>-<device>-<date>.{csv,json,md}` with provenance; each row carries the
mean, median and p20/p80 of per-step times and the speedup over the family's baseline (eager / reference)
measured in the same run.
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
# StyleGAN's 8-GPU minibatches (NVlabs/stylegan train.py; stylegan_1024.yaml), on one device.
STYLEGAN_BATCH = {4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 32, 256: 32, 512: 32, 1024: 32}
# DCGAN (Radford et al. 2016): batch 128 at 64^2.
DCGAN_BATCH = {8: 128, 16: 128, 32: 128, 64: 128, 128: 128}
SMOKE_BATCH = 8  # --smoke: every family and resolution, so the harness check takes seconds
FAMILIES = {
    "dcgan": {"batch": DCGAN_BATCH, "modes": "eager,compile", "steps": 20},
    "pggan": {"batch": PGGAN_BATCH, "modes": "eager,compile", "steps": 20},
    "stylegan": {"batch": STYLEGAN_BATCH, "modes": "reference,fused,compile,compile-fused", "steps": 32},
}
R1_INTERVAL = 16  # StyleGAN's lazy R1 (stylegan_*.yaml)
# Dense bf16 tensor-core peaks (vendor data sheets, SXM parts, without sparsity), FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def _family_keys(family: str, mode: str, smoke: bool) -> list[str]:
    if family == "dcgan":  # the paper's widths (ngf = ndf = 64) and loss
        return ["model.g_width=8", "model.d_width=8", "model.z_dim=16"] if smoke else []
    if family == "pggan":  # the paper's loss: WGAN-GP lambda 10 + drift, every step
        widths = ["model.fmap_base=64", "model.fmap_max=8", "model.z_dim=16"] if smoke else []
        return [*widths, "loss.name=wgan-gp", "loss.gp_weight=10", "loss.drift=0.001"]
    widths = ["model.fmap_base=64", "model.fmap_max=8", "model.z_dim=16", "model.w_dim=16",
              "model.mapping_width=16"] if smoke else []  # fmt: skip
    impl = "triton" if mode in ("fused", "compile-fused") else "reference"
    return [*widths, f"model.epilogue_impl={impl}", "loss.name=nonsaturating", "loss.r1_gamma=10",
            f"loss.reg_interval={R1_INTERVAL}"]  # fmt: skip


def _config(family: str, resolution: int, batch: int, mode: str, precision: str, smoke: bool, device: str):
    from gandist.config import load_config

    group = min(4, batch)
    mbstd = [] if family == "dcgan" else [f"model.mbstd_group={group if batch % group == 0 else batch}"]
    return load_config(None, [
        "name=bench", f"model.name={family}", *_family_keys(family, mode, smoke), *mbstd,
        "optim.lr_g=0.001", "optim.lr_d=0.001",
        "optim.beta1=0.0", "optim.beta2=0.99", "data.name=procedural", f"data.resolution={resolution}",
        f"data.batch_size={batch}", "data.size=16", f"train.precision={precision}",
        f"train.compile={'true' if mode.startswith('compile') else 'false'}", f"train.device={device}",
        "train.progress=false", "health.enabled=false", "train.steps=1000000",
    ])  # fmt: skip


def _count_flops(t, steps: int) -> float:
    """Model FLOPs of `steps` training steps (every phase due in them): convolutions and matrix products,
    forward and backward, double backward included, with torch's per-op formulas (`flop_registry`).
    A plain dispatch mode: FlopCounterMode's module tracker refuses `autograd.grad` (the R1 pass)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += formula(*args, **kwargs, out_val=out)
            return out

    with Count():
        for _ in range(steps):
            t.train_step()
    return float(Count.total)


def _breakdown(t, steps: int, cuda: bool) -> dict:
    """Where the time of `steps` training steps goes (torch.profiler): each phase (Dmain, Dreg, Gmain, ...),
    convolutions (forward and backward, self time of the conv ops), the fused epilogue op (forward and
    backward, with their kernels) and the epilogue's forward scope (any impl; its reference backward is
    spread over generic autograd ops and cannot be told apart). Milliseconds per step: device time on
    CUDA, CPU time elsewhere."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    import gandist.families.stylegan.networks as sg

    run_phase, epilogue = t.run_phase, getattr(sg, "styled_epilogue", None)

    def phase(ph):
        with record_function(f"phase:{ph.name}"):
            return run_phase(ph)

    def scoped_epilogue(*args, **kwargs):
        with record_function("scope:epilogue_fwd"):
            return epilogue(*args, **kwargs)

    t.run_phase = phase
    sg.styled_epilogue = scoped_epilogue
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=activities) as prof:
            for _ in range(steps):
                t.train_step()
            if cuda:
                torch.cuda.synchronize()
    finally:
        t.run_phase, sg.styled_epilogue = run_phase, epilogue
    total, self_time = (
        ("device_time_total", "self_device_time_total") if cuda else ("cpu_time_total", "self_cpu_time_total")
    )
    out: dict[str, float] = {"conv_ms": 0.0, "fused_epilogue_ms": 0.0}
    for e in prof.key_averages():
        if e.key.startswith(("phase:", "scope:")):
            out[e.key.split(":", 1)[1] + "_ms"] = getattr(e, total) / 1000 / steps
        elif "convolution" in e.key:
            out["conv_ms"] += getattr(e, self_time) / 1000 / steps
        elif e.key in ("gandist::plane_epilogue", "gandist::plane_epilogue_backward"):
            out["fused_epilogue_ms"] += getattr(e, total) / 1000 / steps
    return out


def run_one(spec: dict) -> dict:
    """Time `spec['steps']` training steps after `spec['warmup']` (compile happens in the warm-up)."""
    import torch

    from gandist.data.base import Batch
    from gandist.strategies import strategy_from_config
    from gandist.train.loop import Trainer

    cfg = _config(spec["family"], spec["resolution"], spec["batch"], spec["mode"], spec["precision"],
                  spec["smoke"], spec["device"])  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, Path(d), strategy_from_config(cfg.train), log_enabled=False)
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
        flop_steps = max(p.interval for p in t.phases)  # one whole regularisation interval
        flops = _count_flops(t, flop_steps) if spec.get("count_flops") else None
        breakdown = _breakdown(t, flop_steps, cuda) if spec.get("profile") else {}
    images = spec["batch"]  # real images shown per step (one D step per G step)
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    med, mean = statistics.median(times), statistics.fmean(times)
    return {**spec, "median_s": med, "mean_s": mean, "p20_s": q[0], "p80_s": q[3], "img_per_s": images / mean,
            "sec_per_kimg": mean * 1000 / images, "peak_mem_gib": peak / 2**30,
            "flops_per_img": flops / (flop_steps * images) if flops is not None else None, **breakdown,
            "peak_mem_kind": "cuda max_memory_allocated" if cuda else "process peak RSS"}  # fmt: skip


def run_row(spec: dict, timeout: float) -> dict:
    """Run one spec in a fresh process (its own peak memory and compile caches): its row, or the spec with
    an `error` (the last line of stderr, or the timeout)."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])
    )
    try:
        r = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                           env=env, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    if r.returncode != 0:
        return {**spec, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _mfu(row: dict, device: str) -> float | None:
    peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    if peak is None or not row.get("flops_per_img"):
        return None
    return row["flops_per_img"] * row["img_per_s"] / peak


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="pggan", choices=list(FAMILIES))
    p.add_argument("--resolutions", default="64,128,256,512,1024")
    p.add_argument(
        "--batch", type=int, default=0, help="images per step (default: the official per-resolution batch)"
    )
    p.add_argument(
        "--modes",
        default=None,
        help="default: pggan eager,compile; stylegan reference,fused,compile,compile-fused",
    )
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument(
        "--steps", type=int, default=0, help="timed steps (default: pggan 20, stylegan 32 = 2 R1 intervals)"
    )
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--smoke", action="store_true", help="CPU, tiny widths, batch 8, 8 px eager and compiled, 16 px eager, 3 steps"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile one regularisation interval per row: ms per step by phase, convolutions, epilogue",
    )
    p.add_argument("--out", default=str(HERE.parent / "results"))
    p.add_argument(
        "--one", default=None, help=argparse.SUPPRESS
    )  # internal: run one spec (JSON) and print its row
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return []
    fam = FAMILIES[args.family]
    args.modes = args.modes or fam["modes"]
    args.steps = args.steps or fam["steps"]
    if args.smoke:  # PGGAN: both modes at 8 px (compile with the penalty's eager path), eager at 16;
        # StyleGAN: reference and fused (the Triton interpreter) at 8 px, reference at 16
        modes = "reference,fused" if args.family == "stylegan" else "eager,compile"
        args.resolutions, args.modes, args.precision, args.steps, args.warmup, args.device = (
            "8,16",
            modes,
            "fp32",
            3,
            2,
            "cpu",
        )
        args.batch = args.batch or SMOKE_BATCH  # the full minibatches (256 at 8 px for StyleGAN) are minutes
    baseline = args.modes.split(",")[0]
    from provenance import provenance

    prov = provenance()
    rows: list[dict] = []
    for res in [int(r) for r in args.resolutions.split(",")]:
        for mode in args.modes.split(","):
            if args.smoke and mode != baseline and res != 8:
                continue
            spec = {"family": args.family, "resolution": res, "batch": args.batch or fam["batch"].get(res, 16),
                    "mode": mode, "precision": args.precision, "steps": args.steps, "warmup": args.warmup,
                    "smoke": args.smoke, "device": args.device, "count_flops": mode == baseline,
                    "profile": args.profile}  # fmt: skip
            row = run_row(spec, timeout=3600)
            if "error" in row:
                rows.append(row)
                print(f"[bench_train] {res}px {mode}: failed: {row['error']}", file=sys.stderr)
                continue
            base = next(
                (x for x in rows if x["resolution"] == res and x["mode"] == baseline and "error" not in x),
                None,
            )
            # the eager baseline counted the model FLOPs; every mode runs the same model
            if row.get("flops_per_img") is None and base is not None:
                row["flops_per_img"] = base["flops_per_img"]
            row["speedup_vs_eager"] = base["mean_s"] / row["mean_s"] if base else 1.0
            row["mfu"] = _mfu(row, prov["device"])
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
             "steps include every phase and the gradient penalty (lazy: a whole number of intervals timed, img/s "
             "from the mean step); the data is one fixed batch on the device.", "",
             f"| resolution | batch | mode | img/s | s/kimg | p20-p80 step ms | peak GiB | GFLOP/img | MFU | vs {baseline} |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['resolution']} | {r['batch']} | {r['mode']} | failed: {r['error']} | | | | | | |"
            )
            continue
        gflop = f"{r['flops_per_img'] / 1e9:.3g}" if r.get("flops_per_img") else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        lines.append(f"| {r['resolution']} | {r['batch']} | {r['mode']} | {r['img_per_s']:.1f} | {r['sec_per_kimg']:.1f} | "
                     f"{1000 * r['p20_s']:.1f}-{1000 * r['p80_s']:.1f} | {r['peak_mem_gib']:.2f} | {gflop} | {mfu} | "
                     f"{r['speedup_vs_eager']:.2f}x |")  # fmt: skip
    parts = sorted({k for r in rows for k in r if k.endswith("_ms")})
    if parts:  # --profile: where a step's time goes
        unit = "device" if any(r.get("peak_mem_kind", "").startswith("cuda") for r in rows) else "CPU"
        lines += ["", f"Time per step by part ({unit} ms; phases overlap the op classes; profiled over one "
                  "regularisation interval):", "",
                  "| resolution | mode | " + " | ".join(k[:-3] for k in parts) + " |",
                  "|---|---|" + "---|" * len(parts)]  # fmt: skip
        for r in rows:
            if "error" not in r:
                cells = " | ".join(f"{r[k]:.2f}" if k in r else "" for k in parts)
                lines.append(f"| {r['resolution']} | {r['mode']} | {cells} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
