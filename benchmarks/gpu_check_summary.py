"""The summary of `benchmarks/gpu_check.py`: every step's raw rows turned into one table of figures, each
with its ratio and the goal it is compared with (the goals of `benchmarks/README.md`), written as
Markdown, JSON and a PNG of the kernel and training figures.

Written again after every step and every 15 s while one runs: a run cut from outside keeps its table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PROV_KEYS = ("device", "torch", "triton", "commit", "date")
# The goals, as benchmarks/README.md states them (section "GPU check").
GOALS = {
    "tolerance": "<= 1 x the kernel tolerance table (tests/kernel_utils.py TOL)",
    "copy": ">= 80% of copy bandwidth from 64^2 up",
    "compile": "> 1x torch.compile(reference) from 32^2 up",
    "eager": ">= 3x eager (styled_epilogue)",
    "train": "> 1x the {baseline} baseline",
    "data": ">= 1x the trainer's consumption (StyleGAN, reference epilogue, same resolution)",
    "fid_value": "<= 1e-6 relative to torch-fidelity",
    "fid_wall": "<= 1x torch-fidelity's wall time",
}
# Dense bf16 tensor-core peaks of the vendors' data sheets (SXM parts), TFLOP/s: a lead, not a ceiling.
DATASHEET_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def read_rows(work: Path, steps) -> dict[str, list[dict]]:
    out = {}
    for s in steps:
        path = work / f"{s}.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        out[s] = []
        for x in lines:
            try:
                out[s].append(json.loads(x))
            except json.JSONDecodeError:  # a line torn by a kill
                pass
    return out


def _row(step, figure, value, unit, ratio=None, ratio_of="", goal="", meets=None, text=None, **extra) -> dict:
    return {"step": step, "figure": figure, "value": value, "unit": unit, "ratio": ratio, "ratio_of": ratio_of,
            "goal": goal, "meets": meets, "text": text, **extra}  # fmt: skip


def _fmt(v, digits=3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def summarize(raw: dict[str, list[dict]]) -> list[dict]:
    rows: list[dict] = []
    for r in raw.get("env", []):
        if "copy_GBps" not in r:
            continue
        rows.append(_row("env", "device-to-device copy (bytes read + written)", r["copy_GBps"], "GB/s",
                         text=f"{_fmt(r['copy_GBps'])} GB/s; the denominator of every kernel %"))  # fmt: skip
        peak = next((v for k, v in DATASHEET_BF16.items() if k in r["device"]), None)
        gemm = r["gemm_TFLOPs"]
        rows.append(_row("env", f"bf16 GEMM {r['gemm_n']}^3", gemm, "TFLOP/s",
                         ratio=gemm / peak if peak else None, ratio_of="of the data sheet's dense bf16 peak",
                         text=f"{_fmt(gemm)} (p20-p80 {_fmt(r['gemm_TFLOPs_p20'])}-{_fmt(r['gemm_TFLOPs_p80'])}) TFLOP/s; "
                              "the denominator of MFU"))  # fmt: skip
    rows += _correctness(raw.get("correctness", []))
    rows += _throughput(raw.get("throughput", []))
    rows += _training(raw.get("training", []))
    rows += _data(raw.get("data", []))
    rows += _fid(raw.get("fid", []))
    return rows


def _correctness(raw: list[dict]) -> list[dict]:
    out = []
    for kernel, dtype in dict.fromkeys((r["kernel"], r["dtype"]) for r in raw if "kernel" in r):
        rs = [r for r in raw if r.get("kernel") == kernel and r.get("dtype") == dtype]
        worst = max(rs, key=lambda r: r["tol_ratio"])
        by_order = {
            o: max((r["rel_err"] for r in rs if r["order"] == o), default=None)
            for o in ("fwd", "bwd", "double")
        }
        res = sorted({r["res"] for r in rs})
        text = (", ".join(f"{o} {_fmt(e, 2)}" for o, e in by_order.items()) +
                f" at {res[0]}^2..{res[-1]}^2; worst vs tolerance: {worst['order']} at {worst['res']}^2")  # fmt: skip
        out.append(_row("correctness", f"{kernel} {dtype}", max(r["rel_err"] for r in rs), "max|err| / max|ref|",
                        ratio=worst["tol_ratio"], ratio_of="of the tolerance", goal=GOALS["tolerance"],
                        meets=worst["tol_ratio"] <= 1.0, text=text, by_order=by_order, resolutions=res))  # fmt: skip
    return out


def _throughput(raw: list[dict]) -> list[dict]:
    out = []
    keys = dict.fromkeys((r["op"], r["pass"], r["N"], r["C"], r["H"], r["dtype"]) for r in raw if "op" in r)
    for op, which, n, c, h, dtype in keys:
        rs = {r["provider"]: r for r in raw if (r.get("op"), r.get("pass"), r.get("N"), r.get("C"), r.get("H")) ==
              (op, which, n, c, h)}  # fmt: skip
        t = rs.get("triton")
        if t is None:
            continue
        lo, hi = t["GBps"] * t["median_ms"] / t["p80_ms"], t["GBps"] * t["median_ms"] / t["p20_ms"]
        pct = t["pct_of_copy"]
        goals, meets = [], []
        if h >= 64:
            goals.append(GOALS["copy"])
            meets.append(pct >= 80)
        if h >= 32 and t.get("speedup_vs_compile"):
            goals.append(GOALS["compile"])
            meets.append(t["speedup_vs_compile"] > 1)
        if op == "styled_epilogue":
            goals.append(GOALS["eager"])
            meets.append(t["speedup_vs_eager"] >= 3)
        others = ", ".join(f"{p} {rs[p]['pct_of_copy']:.1f}%" for p in ("eager", "compile") if p in rs)
        text = (f"fused {pct:.1f}% of copy (p20-p80 {100 * lo / t['copy_GBps']:.1f}-{100 * hi / t['copy_GBps']:.1f}%), "
                f"{t['GBps']:.1f} GB/s, {t['median_ms']:.4f} ms; {others}; x eager {t['speedup_vs_eager']:.2f}"
                + (f", x compile {t['speedup_vs_compile']:.2f}" if t.get("speedup_vs_compile") else ""))  # fmt: skip
        out.append(_row("throughput", f"{op} {which} {n}x{c}x{h}x{h} {dtype}", pct, "% of copy",
                        ratio=t["speedup_vs_eager"], ratio_of="x eager", goal="; ".join(goals),
                        meets=all(meets) if meets else None, text=text,
                        speedup_vs_compile=t.get("speedup_vs_compile"), median_ms=t["median_ms"],
                        p20_ms=t["p20_ms"], p80_ms=t["p80_ms"], pct_of_peak_copy=t.get("pct_of_peak_copy")))  # fmt: skip
    return out


def _training(raw: list[dict]) -> list[dict]:
    out = []
    for r in raw:
        if "family" not in r:
            continue
        figure = f"{r['family']} {r['resolution']}^2 batch {r['batch']} {r['mode']} {r['precision']}"
        if "error" in r:
            out.append(_row("training", figure, None, "img/s", text=f"failed: {r['error']}", meets=False))
            continue
        base = r.get("baseline", r["mode"])
        mfu = r.get("mfu_measured")
        text = (f"{r['img_per_s']:.1f} img/s, {r['sec_per_kimg']:.2f} s/kimg, step p20-p80 "
                f"{1000 * r['p20_s']:.1f}-{1000 * r['p80_s']:.1f} ms, peak {r['peak_mem_gib']:.2f} GiB, "
                f"MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} of the measured bf16 GEMM")  # fmt: skip
        is_base = r["mode"] == base
        out.append(_row("training", figure, r["img_per_s"], "img/s",
                        ratio=None if is_base else r["speedup_vs_baseline"], ratio_of=f"x {base}",
                        goal="" if is_base else GOALS["train"].format(baseline=base),
                        meets=None if is_base else r["speedup_vs_baseline"] > 1, text=text,
                        sec_per_kimg=r["sec_per_kimg"], peak_mem_gib=r["peak_mem_gib"], mfu_measured=mfu,
                        flops_per_img=r.get("flops_per_img")))  # fmt: skip
    return out


def _data(raw: list[dict]) -> list[dict]:
    out = []
    for r in raw:
        if "resolution" not in r:
            continue
        vs = r.get("dali_over_trainer")
        text = (f"DALI {r['dali_img_per_s']:.0f} img/s vs torch {r['torch_img_per_s']:.0f} img/s "
                f"({r['dali_over_torch']:.2f}x), {r['workers']} workers, {r['decode']} decode; trainer consumes "
                f"{_fmt(r['trainer_img_per_s'])} img/s")  # fmt: skip
        out.append(_row("data", f"DALI decode {r['resolution']}^2 batch {r['batch']}", r["dali_img_per_s"], "img/s",
                        ratio=vs, ratio_of="x the trainer's consumption", goal=GOALS["data"],
                        meets=None if vs is None else vs >= 1, text=text, dali_over_torch=r["dali_over_torch"]))  # fmt: skip
    return out


def _fid(raw: list[dict]) -> list[dict]:
    tools = {r["tool"]: r for r in raw if "tool" in r}
    g, tf = tools.get("gandist"), tools.get("torch-fidelity")
    if not g:
        return []
    ok = g["exit"] == 0 and tf is not None and tf["exit"] == 0
    desc = f"{g['n']} vs {g['n']} images at {g['res']}^2, {g['weights']} Inception weights"
    text = f"gandist {g['wall_s']:.1f} s" + (f", torch-fidelity {tf['wall_s']:.1f} s" if tf else "")
    if g["exit"] != 0:
        text = f"gandist failed: {g.get('error', '')[-200:]}"
    out = [_row("fid", f"gandist fid wall time, {desc}", g["wall_s"], "s",
                ratio=g["wall_s"] / tf["wall_s"] if ok else None, ratio_of="x torch-fidelity",
                goal=GOALS["fid_wall"], meets=(g["wall_s"] <= tf["wall_s"]) if ok else None, text=text)]  # fmt: skip
    if ok and g["fid"] is not None and tf["fid"] is not None:
        rel = abs(g["fid"] - tf["fid"]) / max(abs(tf["fid"]), 1e-30)
        out.append(_row("fid", f"FID value, {desc}", g["fid"], "FID", ratio=rel, ratio_of="relative difference",
                        goal=GOALS["fid_value"], meets=rel <= 1e-6,
                        text=f"gandist {g['fid']:.9g}, torch-fidelity {tf['fid']:.9g}"))  # fmt: skip
    return out


def write_summary(out: Path, work: Path, status: dict, meta: dict, plot: bool) -> Path:
    raw = read_rows(work, status)
    rows = [{**r, **{k: meta.get(k) for k in PROV_KEYS}} for r in summarize(raw)]
    env = next(iter(raw.get("env", [])), {})
    record = {"provenance": {k: meta.get(k) for k in (*PROV_KEYS, "command", "python")},
              "environment": {k: env.get(k) for k in ("cuda", "cudnn", "driver", "sms", "gpu_mem_gib", "capability",
                                                      "cpu_count")},
              "run": {k: meta.get(k) for k in ("size", "budget_s", "wall_s", "out")}, "steps": status,
              "summary": rows, "raw": raw}  # fmt: skip
    _atomic(out / "summary.json", json.dumps(record, indent=1, default=str) + "\n")
    md = out / "summary.md"
    _atomic(md, _markdown(record))
    if plot:
        _plot(out / "summary.png", rows, meta)
    return md


def _markdown(rec: dict) -> str:
    p, e, run = rec["provenance"], rec["environment"], rec["run"]
    lines = [f"# gandist GPU check: {p['device']}", "",
             f"{run['size']} run; torch {p['torch']}, triton {p['triton']}, CUDA {e.get('cuda')}, driver {e.get('driver')}; "
             f"commit {p['commit'] or '?'}; {p['date']}; wall {_fmt(run.get('wall_s'))} s of a {run['budget_s']:.0f} s budget.",
             f"Command: `{p['command']}`", "",
             "| step | status | budget s | used s | CPU s | note |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, s in rec["steps"].items():
        lines.append(
            f"| {name} | {s['status']} | {_fmt(s.get('budget_s'))} | {_fmt(s.get('used_s'))} | {_fmt(s.get('cpu_s'))} | {s.get('reason', '')} |"
        )
    lines += ["", "| step | figure | value | ratio | goal | meets |", "|---|---|---|---|---|---|"]
    for r in rec["summary"]:
        ratio = f"{_fmt(r['ratio'])} {r['ratio_of']}" if r["ratio"] is not None else ""
        meets = {True: "yes", False: "**no**", None: ""}[r["meets"]]
        value = r["text"] or f"{_fmt(r['value'])} {r['unit']}"
        lines.append(f"| {r['step']} | {r['figure']} | {value} | {ratio} | {r['goal']} | {meets} |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, rows: list[dict], meta: dict) -> None:
    kern = [r for r in rows if r["step"] == "throughput" and r["value"] is not None]
    train = [r for r in rows if r["step"] == "training" and r["value"] is not None]
    if not kern and not train:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    for label in dict.fromkeys(" ".join(r["figure"].split()[:2]) for r in kern):
        pts = sorted((int(r["figure"].split()[2].split("x")[-1]), r["value"]) for r in kern
                     if " ".join(r["figure"].split()[:2]) == label)  # fmt: skip
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    ax.axhline(80, color="grey", ls="--", lw=1)
    ax.set(xscale="log", xlabel="resolution (px)", ylabel="fused kernel, % of copy bandwidth",
           title="Kernels (the dashed line: the 80% goal)")  # fmt: skip
    if kern:
        ax.legend(fontsize=7)
    ax = axes[1]
    ax.barh([r["figure"] for r in train], [r["value"] for r in train])
    ax.set(xscale="log", xlabel="images/s", title="Training steps")
    ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{meta.get('device')} | torch {meta.get('torch')} | triton {meta.get('triton')} | "
                 f"{meta.get('commit') or '?'} | {meta.get('date')}", fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path.with_suffix(".tmp.png"), dpi=110)
    plt.close(fig)
    os.replace(path.with_suffix(".tmp.png"), path)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
