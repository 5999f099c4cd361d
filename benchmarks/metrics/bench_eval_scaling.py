"""Scaling of distributed evaluation: `gandist fid` on the same two folders with 1, 2, ... ranks.

    python benchmarks/metrics/bench_eval_scaling.py                 # 1000 vs 1000 at 64x64, 1 and 2 ranks
    python benchmarks/metrics/bench_eval_scaling.py --ranks 1,2,4,8 --n 50000 --res 256   # a GPU node
    python benchmarks/metrics/bench_eval_scaling.py --smoke --out-dir /tmp/x   # the harness (CI)

Each rank count runs `torchrun --standalone --nproc_per_node R -m gandist fid A B --no-cache` as its own
cold process tree (1 rank runs plain `python -m gandist`). With CUDA each rank takes one GPU; on the
CPU the cores are shared out (OMP_NUM_THREADS = cores / R), so the CPU rows measure how well the ranks
share a fixed machine, not added hardware. Per rank count: wall time of the command, gandist's own
seconds (start to result, Python start-up excluded), images per second over both folders, speedup
and efficiency against the first rank count of `--ranks` in the same run, the Inception
implementation and layout, and the FID's relative difference from the first row's (the ranks extract
disjoint shares and merge their statistics: only the merge order differs). Rows go to
`results/eval-scaling-<device>-<n>x<res>-r<ranks>-<date>.json/.csv/.md` with provenance.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "metrics"))
sys.path.insert(0, str(ROOT))

from bench_fid import prepare  # noqa: E402
from provenance import provenance  # noqa: E402


def run_ranks(ranks: int, a: Path, b: Path, weights: Path, work: Path, cuda: bool, args) -> dict:
    out = work / f"fid-{ranks}.jsonl"
    out.unlink(missing_ok=True)
    gandist = ["-m", "gandist", "fid", str(a), str(b), "--inception", str(weights), "--no-cache",
               "--out", str(out)]  # fmt: skip
    if args.batch:
        gandist += ["--batch", str(args.batch)]
    if ranks == 1:
        cmd = [sys.executable, *gandist]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               *gandist]  # fmt: skip
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "GANDIST_CACHE": str(work / "cache")}
    if not cuda:
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // ranks))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{ranks} ranks: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    res = json.loads(out.read_text().splitlines()[-1])
    return {"ranks": ranks, "wall_s": round(wall, 2), "seconds": res["seconds"], "gandist_s": round(res["seconds"], 2),
            "world_size": res["world_size"], "fid": res["fid"], "batch": res["batch"], "impl": res.get("impl"),
            "layout": res.get("layout"), "threads_per_rank": env.get("OMP_NUM_THREADS", ""),
            "command": " ".join(cmd)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2", help="comma-separated rank counts (the first is the baseline)")
    p.add_argument("--n", type=int, default=1000, help="images per folder")
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--batch", type=int, default=0, help="extraction batch per rank (0: gandist's default)")
    p.add_argument("--weights", default=None, help="Inception weights file (default: the stand-in)")
    p.add_argument("--work", default="/tmp/gandist-bench-fid")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--note", default="")
    p.add_argument("--smoke", action="store_true", help="8 vs 8 images at 32x32: checks the harness")
    args = p.parse_args(argv)
    import torch

    if args.smoke:
        args.n, args.res = 8, 32
    try:
        ranks = [int(r) for r in args.ranks.split(",") if r]
    except ValueError:
        ranks = []
    if not ranks or min(ranks) < 1:
        raise SystemExit(f"--ranks {args.ranks!r}: give rank counts of 1 or more, e.g. 1,2")
    cuda = torch.cuda.is_available()
    if cuda and max(ranks) > torch.cuda.device_count():
        have = torch.cuda.device_count()
        raise SystemExit(f"--ranks asks for {max(ranks)} ranks but this machine has {have} GPUs")
    work, weights, a, b = prepare(args)
    rows = []
    for r in ranks:
        row = run_ranks(r, a, b, weights, work, cuda, args)
        base = rows[0] if rows else row
        row["img_per_s"] = round(2 * args.n / row["seconds"], 2)
        row["speedup"] = round(base["seconds"] / row["seconds"], 3)
        row["efficiency"] = round(base["seconds"] * base["ranks"] / (row["seconds"] * r), 3)
        row["fid_rel_diff_vs_first"] = abs(row["fid"] - base["fid"]) / max(abs(base["fid"]), 1e-300)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("ranks", "wall_s", "gandist_s", "img_per_s", "speedup", "fid")}),
              flush=True)  # fmt: skip
    prov = provenance()
    kind = "smoke" if args.smoke else "gpu" if cuda else "cpu"
    stem = f"eval-scaling-{kind}-{args.n}x{args.res}-r{'-'.join(map(str, ranks))}-{prov['date'][:10]}"
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"provenance": {**prov, "weights": str(weights), "cpu_count": os.cpu_count(),
                             "loadavg_at_end": os.getloadavg()}, "settings": vars(args), "rows": rows}  # fmt: skip
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    cols = ["ranks", "threads_per_rank", "batch", "impl", "layout", "wall_s", "gandist_s", "img_per_s", "speedup",
            "efficiency", "fid", "fid_rel_diff_vs_first", "command"]  # fmt: skip
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [f"# gandist fid, {args.n} vs {args.n} images at {args.res}x{args.res}, by number of ranks", "",
             f"{prov['device']}, torch {prov['torch']}, commit {prov['commit']}, {prov['date']}. Command: "
             f"`{prov['command']}`. Weights: {weights.name}. Load average at the end: {os.getloadavg()[0]:.1f} "
             f"on {os.cpu_count()} cores. Inception: impl {rows[0]['impl']}, layout {rows[0]['layout']}.",
             *(["", args.note] if args.note else []), "",
             "| ranks | threads per rank | wall s | gandist s | images/s | speedup | efficiency | FID | rel. diff vs 1st |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for x in rows:
        lines.append(f"| {x['ranks']} | {x['threads_per_rank'] or 'GPU'} | {x['wall_s']} | {x['gandist_s']} | "
                     f"{x['img_per_s']} | {x['speedup']} | {x['efficiency']} | {x['fid']:.9g} | "
                     f"{x['fid_rel_diff_vs_first']:.1e} |")  # fmt: skip
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / stem}.json/.csv/.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
