"""The measuring steps of `benchmarks/gpu_check.py`, each run in a process of its own.

A step appends one JSON object a line to `<work>/<step>.jsonl` as soon as it has measured it (flushed),
so a step cut at its budget keeps what it had; `{"skip": reason}` says why a step measured nothing.
Every step reuses the harness that owns its figures: the kernel tests' inputs and tolerance table
(`tests/kernel_utils.py`), `benchmarks/kernels/bench_kernels.py`, `benchmarks/train/bench_train.py`,
`benchmarks/data/bench_loaders.py` and `benchmarks/metrics/bench_fid.py`.

Sizes: `gpu` (the StyleGAN shapes and full-width networks), `dry` (the same code on the CPU at toy
sizes, Triton interpreted) and `tiny` (the smallest dry run, for CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (
    "tests",
    "benchmarks/metrics",
    "benchmarks/data",
    "benchmarks/train",
    "benchmarks/kernels",
    "benchmarks",
):
    sys.path.insert(0, str(ROOT / _p))

SIZES = {
    "gpu": {
        "copy_bytes": 2 << 30,  # 2 GiB moved (1 GiB read, 1 GiB written): far above the 50 MB L2
        "gemm_n": 8192,
        "correctness_res": [4, 1024, 64, 256, 16, 512, 128, 32, 8],  # extremes first: a cut drops the middle
        "throughput_ops": ["adain", "noise_bias_act", "styled_epilogue", "gradient_penalty"],
        "throughput_res": [32, 64, 256, 1024],  # the targets start at 32^2 (compile) and 64^2 (copy)
        "throughput_passes": ["fwd", "fwd+bwd"],
        "throughput_rep": ["--warmup", "10", "--rep", "50"],
        # (family, resolution, batch, modes): the first mode is the row's baseline. StyleGAN's batch at
        # 1024^2 is 8, not the 8-GPU total of 32, so one 80 GB card holds it with the R1 pass.
        "train": [
            ("stylegan", 256, 32, ["reference", "fused"]),
            ("stylegan", 1024, 8, ["reference", "fused"]),
            ("pggan", 256, 14, ["eager"]),
            ("pggan", 1024, 3, ["eager"]),
            ("dcgan", 64, 128, ["eager", "compile"]),
        ],  # fmt: skip
        "train_steps": 16,  # one lazy-R1 interval
        "count_flops": True,
        "train_warmup": 3,
        "train_precision": "bf16",
        "data_res": [256, 1024],
        "data_workers": 8,
        "data_repeats": 3,
        "fid_tools": ["gandist", "torch-fidelity"],
        "fid_n": 500,
        "fid_res": 64,
    },
    "dry": {
        "copy_bytes": 64 << 20,
        "gemm_n": 256,
        "correctness_res": [4, 8],
        "throughput_ops": ["adain", "noise_bias_act", "styled_epilogue", "gradient_penalty"],
        "compile_ops": ["styled_epilogue"],  # inductor on 2 CPU cores: tens of seconds per op
        "throughput_res": [4],
        "throughput_passes": ["fwd", "fwd+bwd"],
        "throughput_rep": [],
        "train": [
            ("stylegan", 8, 4, ["reference", "fused"]),
            ("pggan", 8, 4, ["eager"]),
            ("dcgan", 16, 8, ["eager"]),  # compile on the CPU: inductor's C++ build, minutes on 2 cores
        ],
        "train_steps": 3,
        "train_warmup": 2,
        "count_flops": True,
        "train_precision": "fp32",
        "data_res": [8],
        "data_workers": 2,
        "data_repeats": 2,
        "fid_tools": ["gandist", "torch-fidelity"],
        "fid_n": 6,
        "fid_res": 32,
    },
}
SIZES["tiny"] = {
    **SIZES["dry"],
    "correctness_res": [4],
    "throughput_ops": ["styled_epilogue", "gradient_penalty"],  # one plane op, one reduction
    "compile_ops": [],
    "throughput_passes": ["fwd+bwd"],
    "train": [("stylegan", 8, 4, ["reference", "fused"]), ("dcgan", 8, 8, ["eager"])],
    "count_flops": False,  # the count runs a whole R1 interval (16 steps) more
    "train_steps": 2,
    "train_warmup": 1,
    "data_repeats": 1,
    "fid_tools": ["gandist"],  # torch-fidelity's own start on the CPU costs as much again
}
PROV_KEYS = ("device", "torch", "triton", "commit", "date")


class Step:
    """What a step function gets: its size table, device, folders, deadline and `emit`."""

    def __init__(self, name: str, size: str, work: Path, deadline: float):
        import torch
        from provenance import provenance

        self.name, self.size, self.work, self.deadline = name, size, work, deadline
        self.s = SIZES[size]
        self.dry = size != "gpu"
        self.device = torch.device("cuda" if torch.cuda.is_available() and not self.dry else "cpu")
        self.prov = provenance()
        self.path = work / f"{name}.jsonl"

    def emit(self, row: dict) -> None:
        row = {"step": self.name, **row, **{k: self.prov[k] for k in PROV_KEYS}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()
                 if k not in PROV_KEYS and not isinstance(v, (dict, list))}  # fmt: skip
        print(f"[{self.name}] " + " ".join(f"{k}={v}" for k, v in shown.items() if k != "step"), flush=True)

    def left(self) -> float:
        return self.deadline - time.time()

    def rows_of(self, step: str) -> list[dict]:
        path = self.work / f"{step}.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []

    def measured(self, key: str) -> float | None:
        """A figure of the environment step (copy_GBps, gemm_TFLOPs), if it ran."""
        return next((r[key] for r in self.rows_of("env") if r.get(key)), None)


# ---------------------------------------------------------------------------------------------------
# 1. Environment and the two ceilings


def env(st: Step) -> None:
    import torch
    from bench_kernels import copy_bandwidth, timer

    row = {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "driver": None, "sms": None,
           "gpu_mem_gib": None, "cpu_count": os.cpu_count()}  # fmt: skip
    if st.device.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        row.update(
            sms=p.multi_processor_count, gpu_mem_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}"
        )
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)  # fmt: skip
            row["driver"] = q.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            pass
    warmup, rep = (25, 200) if st.device.type == "cuda" else (1, 50)
    row["copy_GBps"] = copy_bandwidth(st.s["copy_bytes"], st.device, warmup, rep)
    n = st.s["gemm_n"]
    a = torch.randn(n, n, device=st.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=st.device, dtype=torch.bfloat16)
    med, p20, p80 = timer(lambda: a @ b, st.device, warmup, rep)
    row.update(gemm_n=n, gemm_TFLOPs=2 * n**3 / (med * 1e-3) / 1e12, gemm_TFLOPs_p20=2 * n**3 / (p80 * 1e-3) / 1e12,
               gemm_TFLOPs_p80=2 * n**3 / (p20 * 1e-3) / 1e12)  # fmt: skip
    st.emit(row)


# ---------------------------------------------------------------------------------------------------
# 2. Kernel correctness: forward, backward and double backward vs the float64 reference


def _derivatives(f, args: list, dy, v: list):
    """f's output; its first derivatives (the kernels' backward: no graph); and the derivatives of
    <first derivatives, v> (the double-backward route: create_graph=True, then backward again)."""
    import torch

    leaves = [t.detach().requires_grad_(True) for t in args]
    with torch.no_grad():
        out = f(*leaves)
    first = torch.autograd.grad(f(*leaves), leaves, dy)
    graph = torch.autograd.grad(f(*leaves), leaves, dy, create_graph=True)
    dot = sum((g * w).sum() for g, w in zip(graph, v) if g.requires_grad)
    second = (
        torch.autograd.grad(dot, leaves, allow_unused=True) if torch.is_tensor(dot) else [None] * len(leaves)
    )
    second = [torch.zeros_like(t) if s is None else s for s, t in zip(second, leaves)]
    return out, first, second


def _kernel_cases(K):
    """(label, fused, reference, argument names) for every kernel in gandist.kernels."""
    from kernel_utils import OP_ARGS

    cases = [(op, getattr(K, op), getattr(K, op + "_reference"), names) for op, names in OP_ARGS.items()]
    for label, center in (("gradient_penalty/wgan-gp", 1.0), ("gradient_penalty/r1", 0.0)):
        cases.append((label, lambda g, impl="auto", c=center: K.gradient_penalty(g, c, impl=impl),
                      lambda g, c=center: K.gradient_penalty_reference(g, c), ["x"]))  # fmt: skip
    return cases


def correctness(st: Step) -> None:
    import torch
    from bench_kernels import SMOKE_LAYERS, STYLEGAN_LAYERS
    from kernel_utils import epilogue_inputs, tolerance_ratio

    from gandist import kernels as K

    layers = SMOKE_LAYERS if st.dry else STYLEGAN_LAYERS  # (N, C) per resolution
    for res in st.s["correctness_res"]:
        n, c = layers[res]
        for dtype in (torch.float32, torch.bfloat16):
            for label, fused, ref, names in _kernel_cases(K):
                a = epilogue_inputs((n, c, res, res), dtype, device=st.device, seed=res)
                args = [a[k] for k in names]
                g = torch.Generator(device=st.device).manual_seed(res + 1)
                out_shape = () if label.startswith("gradient_penalty") else args[0].shape
                dy = torch.randn(out_shape, generator=g, device=st.device, dtype=torch.float64)
                v = [torch.randn(t.shape, generator=g, device=st.device, dtype=torch.float64) for t in args]
                got = _derivatives(
                    lambda *x, f=fused: f(*x, impl="triton"), args, dy.to(dtype), [w.to(dtype) for w in v]
                )
                exp = _derivatives(ref, [t.double() for t in args], dy, v)
                for order, got_t, exp_t in zip(("fwd", "bwd", "double"), got, exp):
                    got_l = [got_t] if torch.is_tensor(got_t) else list(got_t)
                    exp_l = [exp_t] if torch.is_tensor(exp_t) else list(exp_t)
                    worst = max((tolerance_ratio(x, e.to(dtype), dtype) for x, e in zip(got_l, exp_l)),
                                key=lambda t: t[1])  # fmt: skip
                    st.emit({"kernel": label, "dtype": str(dtype).replace("torch.", ""), "order": order,
                             "res": res, "shape": [n, c, res, res], "rel_err": worst[0], "tol_ratio": worst[1]})  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# 3. Kernel throughput: fused vs eager vs torch.compile(reference)


def throughput(st: Step) -> None:
    from bench_kernels import main as bench_kernels

    copy = st.measured("copy_GBps")
    for op in st.s["throughput_ops"]:
        # on the CPU: bench_kernels' smoke sizes, compile only where asked (the GPU always compiles)
        flags = (["--smoke"] + (["--with-compile"] if op in st.s["compile_ops"] else [])) if st.dry else []
        for res in st.s["throughput_res"]:
            if st.left() < 5:
                st.emit({"skip": f"{op} {res}^2 and later: out of the step's budget"})
                return
            argv = ["--ops", op, "--res", str(res), "--passes", *st.s["throughput_passes"], *st.s["throughput_rep"],
                    "--out", str(st.work / "kernels"), *flags]  # fmt: skip
            for row in bench_kernels(argv):
                row = {k: v for k, v in row.items() if k not in PROV_KEYS}
                row["pct_of_peak_copy"] = 100 * row["GBps"] / copy if copy else None
                st.emit(row)


# ---------------------------------------------------------------------------------------------------
# 4. Training steps


def training(st: Step) -> None:
    from bench_train import _mfu, run_row

    gemm = st.measured("gemm_TFLOPs")
    for family, res, batch, modes in st.s["train"]:
        base = None
        for mode in modes:
            if st.left() < 10:
                st.emit({"skip": f"{family} {res}^2 {mode} and later: out of the step's budget"})
                return
            spec = {"family": family, "resolution": res, "batch": batch, "mode": mode,
                    "precision": st.s["train_precision"], "steps": st.s["train_steps"],
                    "warmup": st.s["train_warmup"], "smoke": st.dry, "device": "cpu" if st.dry else "auto",
                    "count_flops": st.s["count_flops"] and mode == modes[0], "profile": False}  # fmt: skip
            row = run_row(spec, timeout=st.left() - 2)
            if "error" not in row:
                if row.get("flops_per_img") is None and base is not None:
                    row["flops_per_img"] = base["flops_per_img"]  # every mode runs the same model
                base = base or row
                row["baseline"] = modes[0]
                row["speedup_vs_baseline"] = base["mean_s"] / row["mean_s"]
                row["mfu_datasheet"] = _mfu(row, st.prov["device"])
                flops = row.get("flops_per_img")
                row["mfu_measured"] = flops * row["img_per_s"] / (gemm * 1e12) if flops and gemm else None
            st.emit(row)


# ---------------------------------------------------------------------------------------------------
# 5. Data: DALI vs the torch loader


def data(st: Step) -> None:
    import statistics

    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        st.emit({"skip": f"DALI is not importable ({e}); carry its wheels (benchmarks/README.md)"})
        return
    import bench_loaders

    train = st.rows_of("training")
    for res in st.s["data_res"]:
        count, batch = bench_loaders.SETS.get(res, (4 * 4, 4))
        if st.left() < 10:
            st.emit({"skip": f"{res}^2 and later: out of the step's budget"})
            return
        path = bench_loaders.make_dataset(st.work / f"data-{os.getpid()}", res, count)
        got: dict[str, list[float]] = {"torch": [], "dali": []}
        for i in range(st.s["data_repeats"]):
            for loader in ("torch", "dali") if i % 2 == 0 else ("dali", "torch"):  # ABBA: drifts hit both
                got[loader].append(
                    bench_loaders.rate(
                        loader, path, res, batch, st.s["data_workers"], 4 if st.dry else 12, st.device
                    )
                )
        consumer = next((r for r in train if r.get("family") == "stylegan" and r.get("resolution") == res
                         and r.get("mode") == "reference" and "img_per_s" in r), None)  # fmt: skip
        row = {"resolution": res, "batch": batch, "images": count, "workers": st.s["data_workers"],
               "decode": "mixed (nvJPEG)" if st.device.type == "cuda" else "cpu",
               "trainer_img_per_s": consumer["img_per_s"] if consumer else None}  # fmt: skip
        for loader, xs in got.items():
            row[f"{loader}_img_per_s"] = statistics.median(xs)
            row[f"{loader}_img_per_s_raw"] = xs
        row["dali_over_torch"] = row["dali_img_per_s"] / row["torch_img_per_s"]
        row["dali_over_trainer"] = row["dali_img_per_s"] / consumer["img_per_s"] if consumer else None
        st.emit(row)


# ---------------------------------------------------------------------------------------------------
# 6. Evaluation: gandist fid vs torch-fidelity


def fid(st: Step) -> None:
    import bench_fid

    weights = os.environ.get("GANDIST_INCEPTION_WEIGHTS")
    args = Namespace(work=str(st.work / "fid"), weights=weights if weights and Path(weights).is_file() else None,
                     n=st.s["fid_n"], res=st.s["fid_res"], batch=0, gandist_impl="auto", smoke=st.dry)  # fmt: skip
    work, weights, a, b = bench_fid.prepare(args)
    path = os.pathsep.join(
        x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x
    )  # keep carried wheels' path
    env = {**os.environ, "PYTHONPATH": path, "GANDIST_CACHE": str(work / "cache")}
    for tool in st.s["fid_tools"]:
        log, out_json = work / f"{tool}.log", work / f"{tool}.jsonl"
        out_json.unlink(missing_ok=True)
        cmd = bench_fid.commands(tool, a, b, weights, out_json, args)
        m = bench_fid.run_tool(cmd, env, log)
        m.update(tool=tool, n=args.n, res=args.res, fid=bench_fid.parse_fid(tool, log.read_text(), out_json),
                 weights="real" if args.weights else "stand-in", command=" ".join(cmd))  # fmt: skip
        if m["exit"] != 0:
            m["error"] = log.read_text()[-500:]
        st.emit(m)


STEPS = {"env": env, "correctness": correctness, "throughput": throughput, "training": training, "data": data,
         "fid": fid}  # fmt: skip


def run(name: str, size: str, work: Path, deadline: float) -> None:
    STEPS[name](Step(name, size, work, deadline))
