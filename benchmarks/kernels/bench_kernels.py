"""Kernel benchmarks: the fused Triton ops against the eager reference and torch.compile(reference).

For every op, StyleGAN layer shape (4^2 .. 1024^2, N 32..4, C 512..16) and pass (fwd, bwd, fwd+bwd):
median and p20/p80 time, effective GB/s (the bytes an ideal fused kernel must move), that as a share
of a device-to-device copy of the same bytes measured in the same run, and speedups over eager and
compiled references. Writes a CSV and a JSON (with provenance) and prints a table.

    python benchmarks/kernels/bench_kernels.py                       # GPU: full sweep
    python benchmarks/kernels/bench_kernels.py --ops styled_epilogue --res 64 256 1024
    TRITON_INTERPRET=1 python benchmarks/kernels/bench_kernels.py --smoke   # CPU: tiny shapes, harness check
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import provenance  # noqa: E402

# StyleGAN2 config-f channel counts per resolution (capped to 512), batch shrinking as planes grow.
STYLEGAN_LAYERS = {4: (32, 512), 8: (32, 512), 16: (32, 512), 32: (32, 512), 64: (32, 256), 128: (16, 128),
                   256: (8, 64), 512: (4, 32), 1024: (4, 16)}  # fmt: skip
SMOKE_LAYERS = {4: (2, 8), 8: (2, 4)}
OPS = ("adain", "noise_bias_act", "styled_epilogue", "gradient_penalty")
PASSES = ("fwd", "bwd", "fwd+bwd")


def make_case(op: str, n: int, c: int, r: int, dtype, device):
    from gandist import kernels as K

    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*s, grad=True):
        return torch.randn(*s, generator=g, device=device, dtype=dtype).requires_grad_(grad)

    x = rnd(n, c, r, r)
    if op == "adain":
        args = (x, rnd(n, c), rnd(n, c))
        return args, K.adain, K.adain_reference
    if op == "noise_bias_act":
        args = (x, rnd(n, 1, r, r, grad=False), rnd(c), rnd(c))
        return args, K.noise_bias_act, K.noise_bias_act_reference
    if op == "styled_epilogue":
        args = (x, rnd(n, 1, r, r, grad=False), rnd(c), rnd(c), rnd(n, c), rnd(n, c))
        return args, K.styled_epilogue, K.styled_epilogue_reference
    if op == "gradient_penalty":
        return (x,), K.gradient_penalty, K.gradient_penalty_reference
    raise ValueError(op)


def ideal_bytes(op: str, n: int, c: int, r: int, elem: int, which: str) -> int:
    """Bytes an ideal fused kernel reads and writes (the big tensors only)."""
    act, noise = n * c * r * r * elem, n * r * r * elem
    fwd = {
        "adain": 2 * act,
        "noise_bias_act": 2 * act + noise,
        "styled_epilogue": 2 * act + noise,
        "gradient_penalty": act,
    }[op]
    bwd = {
        "adain": 3 * act,
        "noise_bias_act": 3 * act + noise,
        "styled_epilogue": 3 * act + noise,
        "gradient_penalty": 2 * act,
    }[op]
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[which]


def timer(fn, device, warmup: int, rep: int) -> tuple[float, float, float]:
    """(median, p20, p80) in milliseconds."""
    if device.type == "cuda":
        import triton.testing

        return tuple(triton.testing.do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.5, 0.2, 0.8]))
    for _ in range(2):
        fn()
    ts = []
    t_end = time.perf_counter() + rep / 1000
    while len(ts) < 5 or (time.perf_counter() < t_end and len(ts) < 200):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(ts, n=5)
    return statistics.median(ts), q[0], q[3]


def pass_fn(op, f, args, which: str, device):
    """A closure running one pass of op f on args."""
    kw = {"center": 1.0} if op == "gradient_penalty" else {}
    out = f(*args, **kw)
    dy = torch.randn_like(out)
    leaves = [a for a in args if a.requires_grad]
    if which == "fwd":

        def run():
            with torch.no_grad():
                f(*args, **kw)
    elif which == "bwd":

        def run():
            torch.autograd.grad(out, leaves, dy, retain_graph=True)
    else:

        def run():
            torch.autograd.grad(f(*args, **kw), leaves, dy)

    return run


def copy_bandwidth(nbytes: int, device, warmup: int, rep: int) -> float:
    """GB/s of a device-to-device copy moving `nbytes` (read + write), measured now."""
    half = max(nbytes // 2, 1024)
    src = torch.empty(half // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms, _, _ = timer(lambda: dst.copy_(src), device, warmup, rep)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def providers(device, smoke: bool, with_compile: bool):
    out = ["triton", "eager"]
    if with_compile or (device.type == "cuda" and not smoke):
        out.append("compile")
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    p.add_argument("--res", nargs="+", type=int, default=None, help="resolutions (default: 4..1024)")
    p.add_argument("--passes", nargs="+", default=list(PASSES), choices=PASSES)
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument(
        "--smoke", action="store_true", help="tiny shapes on CPU (Triton interpreter): checks the harness"
    )
    p.add_argument("--with-compile", action="store_true", help="also time torch.compile(reference) on CPU")
    p.add_argument("--warmup", type=int, default=25)
    p.add_argument("--rep", type=int, default=100, help="milliseconds of timed repetitions per measurement")
    p.add_argument("--out", default="benchmarks/results", help="folder for kernels-<device>-<date>.csv/.json")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.smoke:
        dtype, args.rep, args.warmup = torch.float32, 5, 1
    layers = SMOKE_LAYERS if args.smoke else STYLEGAN_LAYERS
    if args.res:
        layers = {r: layers.get(r, STYLEGAN_LAYERS.get(r, (4, 16))) for r in args.res}
    prov = provenance()
    rows: list[dict] = []
    for op in args.ops:
        for r, (n, c) in sorted(layers.items()):
            case_args, fused, ref = make_case(op, n, c, r, dtype, device)
            fns = {
                "triton": lambda *a, f=fused, **k: f(*a, impl="triton", **k),
                "eager": ref,
            }
            if "compile" in providers(device, args.smoke, args.with_compile):
                fns["compile"] = torch.compile(ref, dynamic=False)
            for which in args.passes:
                nbytes = ideal_bytes(op, n, c, r, case_args[0].element_size(), which)
                copy_gbps = copy_bandwidth(nbytes, device, args.warmup, args.rep)
                times = {}
                for name, f in fns.items():
                    times[name] = timer(
                        pass_fn(op, f, case_args, which, device), device, args.warmup, args.rep
                    )
                for name, (med, p20, p80) in times.items():
                    gbps = nbytes / (med * 1e-3) / 1e9
                    rows.append({
                        "op": op, "pass": which, "provider": name, "N": n, "C": c, "H": r, "W": r,
                        "dtype": str(dtype).replace("torch.", ""), "median_ms": med, "p20_ms": p20, "p80_ms": p80,
                        "GBps": gbps, "copy_GBps": copy_gbps, "pct_of_copy": 100 * gbps / copy_gbps,
                        "speedup_vs_eager": times["eager"][0] / med,
                        "speedup_vs_compile": times["compile"][0] / med if "compile" in times else None,
                        "device": prov["device"], "torch": prov["torch"], "triton": prov["triton"],
                        "commit": prov["commit"], "date": prov["date"],
                    })  # fmt: skip
    print_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "smoke" if args.smoke else prov["device"].split(":")[0].replace(" ", "_")
    stem = out / f"kernels-{tag}-{prov['date'][:10]}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    stem.with_suffix(".json").write_text(json.dumps({"provenance": prov, "rows": rows}, indent=1))
    print(f"wrote {stem}.csv and {stem}.json")
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'op':16} {'pass':8} {'shape':>18} {'provider':8} {'median ms':>10} {'p20-p80':>17} {'GB/s':>8} {'%copy':>6} {'x eager':>8} {'x compile':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        shape = f"{r['N']}x{r['C']}x{r['H']}x{r['W']}"
        xc = f"{r['speedup_vs_compile']:.2f}" if r["speedup_vs_compile"] else "-"
        print(f"{r['op']:16} {r['pass']:8} {shape:>18} {r['provider']:8} {r['median_ms']:10.4f} "
              f"{r['p20_ms']:8.4f}-{r['p80_ms']:<8.4f} {r['GBps']:8.1f} {r['pct_of_copy']:6.1f} "
              f"{r['speedup_vs_eager']:8.2f} {xc:>9}")  # fmt: skip


if __name__ == "__main__":
    main()
