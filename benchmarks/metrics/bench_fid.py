"""FID between two image folders: gandist vs torch-fidelity vs pytorch-fid, same folders, same weights file.

    python benchmarks/metrics/bench_fid.py                      # 1000 vs 1000 images at 64x64, 3 rounds
    python benchmarks/metrics/bench_fid.py --smoke --out-dir /tmp/x   # the harness in ~1 minute (CI)

Each tool runs as its own process, cold (no statistics cache), in a rotating order each round so
that load from other processes on a shared machine falls on all of them alike. Per run: wall time,
CPU time (user + system of the tool and every worker it started), peak memory of the whole process
tree (sum of PSS, sampled once a second: shared library pages counted once) and the main process's
peak RSS (the kernel's high-water mark), and the FID printed. Rows go to `results/fid-<device>-<date>.json/.csv` with provenance,
and a summary to `.md` (median and p20/p80 over rounds).

The weights: the real Inception file cannot be fetched here, so by default a stand-in with the real
architecture and seeded random weights is written once (`gandist.metrics.standin`) and loaded by all
three tools (`--weights` takes any file with torch-fidelity's keys, the real one included). Timings
and memory are those of the real network; FID values compare the tools, not images.
pytorch-fid resizes with PyTorch's bilinear filter, not TF1's, so its FID differs by design.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from provenance import provenance  # noqa: E402

TOOLS = (
    "gandist",
    "torch-fidelity",
    "pytorch-fid",
)  # also: "gandist-reference" (torch-fidelity's module as it is, in gandist), "gandist-fused" (BN folded)
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"


def make_folders(work: Path, n: int, res: int) -> tuple[Path, Path]:
    """`real`: smooth random images; `fake`: others, darker and lower in contrast. PNG, n each."""
    import torch
    from PIL import Image

    from gandist.metrics.standin import calibration_images

    out = []
    for name, seed in (("fake", 20), ("real", 10)):
        d = work / f"{name}-{n}-{res}"
        if not (d.is_dir() and len(list(d.glob("*.png"))) == n):
            d.mkdir(parents=True, exist_ok=True)
            for start in range(0, n, 200):
                x = calibration_images(min(200, n - start), res, seed * 100003 + start)
                if name == "fake":
                    x = (x.float() * 0.8 + 20).to(torch.uint8)
                for i, im in enumerate(x):
                    Image.fromarray(im.permute(1, 2, 0).numpy()).save(d / f"{start + i:06d}.png")
        out.append(d)
    return out[0], out[1]


def prepare(args) -> tuple[Path, Path, Path, Path]:
    """The work folder, the weights file (`--weights`, else the stand-in, written once) and the two image
    folders: (work, weights, a, b)."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    weights = Path(args.weights) if args.weights else work / "standin-inception.pth"
    if not weights.is_file():
        from gandist.metrics.standin import make_standin_inception

        make_standin_inception(weights)
    a, b = make_folders(work, args.n, args.res)
    return work, weights, a, b


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_tool(cmd: list[str], env: dict, log: Path, probe_s: float = 1.0) -> dict:
    """Run one command; wall, CPU (its whole tree), peak tree PSS, main RSS, exit status.

    PSS is sampled every `probe_s` seconds. Reading smaps_rollup walks the process's page tables under
    its memory-map lock, so a fast probe slows the process it measures, the more the more it
    allocates: at 20 reads a second `gandist fid` on 1000 vs 1000 images took 199.7 s (system time
    95 s) against 143.6 s (39 s) unprobed."""
    peak = [0]
    before = os.times()
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], sum(_pss_bytes(p) for p in _tree(proc.pid)))
                done.wait(probe_s)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        th.join()
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "user_s": round(after.children_user - before.children_user, 2),
        "sys_s": round(after.children_system - before.children_system, 2),
        "peak_tree_pss_gib": round(peak[0] / 2**30, 3),
        "peak_main_rss_gib": round(usage.ru_maxrss / 2**20, 3),
        "exit": proc.returncode,
    }


def parse_fid(tool: str, text: str, out_json: Path) -> float | None:
    try:
        if tool.startswith("gandist"):
            return float(json.loads(out_json.read_text().splitlines()[-1])["fid"])
        if tool == "torch-fidelity":
            start = text.index("{")
            return float(json.loads(text[start : text.rindex("}") + 1])["frechet_inception_distance"])
        for line in text.splitlines()[::-1]:
            if line.startswith("FID:"):
                return float(line.split()[-1])
    except (ValueError, KeyError, IndexError, OSError):
        return None
    return None


def commands(tool: str, a: Path, b: Path, weights: Path, out_json: Path, args) -> list[str]:
    """Each tool's own command line; on a machine with CUDA every tool runs on GPU 0."""
    import torch

    cuda = torch.cuda.is_available()
    py = sys.executable
    if tool.startswith("gandist"):
        impl = {"gandist-reference": "reference", "gandist-fused": "fused"}.get(tool, args.gandist_impl)
        cmd = [py, "-m", "gandist", "fid", str(a), str(b), "--inception", str(weights), "--no-cache",
               "--out", str(out_json), "--extractor-impl", impl]  # fmt: skip
        return cmd + (["--batch", str(args.batch)] if args.batch else [])
    if tool == "torch-fidelity":
        return [py, "-m", "torch_fidelity.fidelity", *(["--gpu", "0"] if cuda else ["--cpu"]), "--fid", "--input1", str(a), "--input2", str(b),
                "--feature-extractor-weights-path", str(weights), "--no-cache", "--json", "--silent"]  # fmt: skip
    return [py, "-m", "pytorch_fid", str(a), str(b), "--device", "cuda" if cuda else "cpu"]


def write_results(rows: list[dict], tools: list[str], args, weights: Path, a: Path, b: Path) -> Path:
    """Summary (median, p20/p80 per tool, ratios to the peers) + rows + provenance: .json, .csv, .md."""
    prov = provenance()
    versions = {}
    for mod in ("torch_fidelity", "pytorch_fid", "torchvision"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    summary = {}
    tools = [t for t in tools if any(x["tool"] == t for x in rows)]
    for tool in tools:
        rs = [x for x in rows if x["tool"] == tool and x["exit"] == 0]
        if not rs:
            summary[tool] = {"error": "no successful run"}
            continue
        summary[tool] = {k: {"median": pct([x[k] for x in rs], 50), "p20": pct([x[k] for x in rs], 20),
                             "p80": pct([x[k] for x in rs], 80)}
                         for k in ("wall_s", "cpu_s", "peak_tree_pss_gib", "peak_main_rss_gib")}  # fmt: skip
        summary[tool]["fid"] = rs[0]["fid"]
    ref = summary.get("torch-fidelity", {}).get("fid")
    for t in ("gandist", "gandist-reference", "gandist-fused"):
        if ref and summary.get(t, {}).get("fid") is not None:
            summary[t]["fid_rel_diff_vs_torch_fidelity"] = abs(summary[t]["fid"] - ref) / abs(ref)
    g = summary.get("gandist", {})
    peers = [summary[t] for t in ("torch-fidelity", "pytorch-fid") if t in summary and "wall_s" in summary[t]]
    if peers and "wall_s" in g:
        g["wall_ratio_vs_faster_peer"] = round(
            g["wall_s"]["median"] / min(x["wall_s"]["median"] for x in peers), 3
        )
        g["cpu_ratio_vs_faster_peer"] = round(
            g["cpu_s"]["median"] / min(x["cpu_s"]["median"] for x in peers), 3
        )
        g["pss_ratio_vs_leanest_peer"] = round(
            g["peak_tree_pss_gib"]["median"] / min(x["peak_tree_pss_gib"]["median"] for x in peers), 3
        )
    record = {"provenance": {**prov, **versions, "weights": str(weights), "folders": [str(a), str(b)],
                             "cpu_count": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
              "settings": vars(args), "summary": summary, "runs": rows}  # fmt: skip
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import torch

    kind = "smoke" if args.smoke else "gpu" if torch.cuda.is_available() else "cpu"
    stem = f"fid-{kind}-{args.n}x{args.res}-{prov['date'][:10]}" + (f"-{args.tag}" if args.tag else "")
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        cols = ["tool", "round", "n", "res", "wall_s", "cpu_s", "user_s", "sys_s", "peak_tree_pss_gib",
                "peak_main_rss_gib", "fid", "exit", "command"]  # fmt: skip
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for x in rows:
            w.writerow({**x, "device": prov["device"]})
    lines = [f"# FID, {args.n} vs {args.n} images at {args.res}x{args.res}, {args.rounds} rounds",
             "", f"{prov['device']}, torch {prov['torch']}, torch-fidelity {versions['torch_fidelity']}, "
             f"pytorch-fid {versions['pytorch_fid']}, commit {prov['commit']}, {prov['date']}. "
             f"Command: `{prov['command']}`. Weights: {weights.name} (all three tools). "
             f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine).",
             *([ "", args.note] if getattr(args, "note", "") else []), "",
             "| tool | wall s median (p20-p80) | CPU s median | peak memory, tree PSS GiB | main RSS GiB | FID |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for tool in tools:
        s = summary[tool]
        if "wall_s" not in s:
            lines.append(f"| {tool} | failed | | | | |")
            continue
        lines.append(f"| {tool} | {s['wall_s']['median']} ({s['wall_s']['p20']}-{s['wall_s']['p80']}) | "
                     f"{s['cpu_s']['median']} | {s['peak_tree_pss_gib']['median']} | "
                     f"{s['peak_main_rss_gib']['median']} | {s['fid']:.9g} |")  # fmt: skip
    if "wall_ratio_vs_faster_peer" in g:
        lines += ["", f"gandist / faster peer: wall {g['wall_ratio_vs_faster_peer']}x, CPU {g['cpu_ratio_vs_faster_peer']}x;"
                  f" peak memory / leanest peer {g['pss_ratio_vs_leanest_peer']}x; FID relative difference to "
                  f"torch-fidelity {g.get('fid_rel_diff_vs_torch_fidelity', float('nan')):.2e}."]  # fmt: skip
    lines += ["", "Commands (one per tool, as run):", ""] + [
        f"- `{x['command']}`" for x in rows[: len(tools)]
    ]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return out_dir / stem


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="images per folder")
    p.add_argument("--res", type=int, default=64, help="image size")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--probe-s", type=float, default=1.0, help="seconds between memory samples (PSS)")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--tag", default="", help="appended to the result files' name (runs of one day apart)")
    p.add_argument("--weights", default=None, help="Inception weights file (default: the stand-in)")
    p.add_argument("--work", default="/tmp/gandist-bench-fid", help="folders, weights, logs")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--batch", type=int, default=0, help="gandist's extraction batch (0: its default)")
    p.add_argument("--gandist-impl", default="auto", choices=["auto", "exact", "fused", "reference"])
    p.add_argument("--note", default="", help="a line for the summary (conditions of the run)")
    p.add_argument(
        "--smoke", action="store_true", help="6 vs 6 images at 32x32, one round: checks the harness"
    )
    args = p.parse_args()
    if args.smoke:
        args.n, args.res, args.rounds = 6, 32, 1
    work, weights, a, b = prepare(args)
    hub = work / "torch-home"  # pytorch-fid finds the same file in the torch hub cache, under its name
    (hub / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    link = hub / "hub" / "checkpoints" / PYTORCH_FID_FILE
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(weights.resolve())
    env = {
        **os.environ,
        "TORCH_HOME": str(hub),
        "PYTHONPATH": str(ROOT),
        "GANDIST_CACHE": str(work / "cache"),
    }
    tools = [t for t in args.tools.split(",") if t]
    rows = []
    for r in range(args.rounds):
        order = tools[r % len(tools) :] + tools[: r % len(tools)]
        for tool in order:
            log, out_json = work / f"{tool}-{r}.log", work / f"{tool}-{r}.jsonl"
            out_json.unlink(missing_ok=True)
            cmd = commands(tool, a, b, weights, out_json, args)
            m = run_tool(cmd, env, log, args.probe_s)
            text = log.read_text()
            m.update(tool=tool, round=r, fid=parse_fid(tool, text, out_json), n=args.n, res=args.res,
                     command=" ".join(cmd))  # fmt: skip
            if m["exit"] != 0:
                m["error"] = text[-2000:]
            rows.append(m)
            write_results(
                rows, tools, args, weights, a, b
            )  # after every run: an interrupted run keeps its rows
            print(json.dumps({k: m[k] for k in ("tool", "round", "wall_s", "cpu_s", "peak_tree_pss_gib", "fid")}),
                  flush=True)  # fmt: skip
    print(f"wrote {write_results(rows, tools, args, weights, a, b)}.json/.csv/.md")
    return 0 if all(x["exit"] == 0 for x in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
