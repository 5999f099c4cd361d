"""Every GPU figure in one short call: environment, kernel correctness and throughput, training, data
loading and evaluation, in one time-boxed run with one summary table.

    python benchmarks/gpu_check.py                # GPU: every step, budgeted at 435 s in all
    python benchmarks/gpu_check.py --dry-run      # CPU: every step at toy sizes, Triton interpreted
    python benchmarks/gpu_check.py --steps env,correctness --budget 120

Steps (`benchmarks/gpu_check_steps.py`), in order, each in a process of its own with a budget in
seconds (`--step-budget NAME=S`): a step over its budget is killed with everything it started and
recorded as cut, a step that cannot run says why and is skipped, and the whole run ends within
`--budget`. Results go to `$OUT` when set, else `benchmarks/results/<device>-<date>/`:
`summary.md` and `summary.json` (rewritten while steps run, so a run cut from outside still leaves most
of its figures), `summary.png` and `gpu_check.log`; five files, within what the device machine returns
(at most 8). Every row carries device, torch/triton versions, commit and date.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# (step, budget in seconds on the GPU, in a dry run): the GPU column sums to 430 s, which with the
# ~30 s of installs before it keeps a call under 8 minutes on an H100.
BUDGETS = {"env": (25, 40), "correctness": (70, 60), "throughput": (90, 60), "training": (170, 120),
           "data": (30, 40), "fid": (45, 60)}  # fmt: skip
STEP_NAMES = list(BUDGETS)
RESERVE_S = 5  # kept back from the total for the last summary


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dry-run", action="store_true", help="every step on the CPU at toy sizes (Triton interpreted)"
    )
    p.add_argument("--tiny", action="store_true", help="with --dry-run: the smallest sizes (the CI test)")
    p.add_argument(
        "--steps", default=",".join(STEP_NAMES), help=f"comma-separated subset of {','.join(STEP_NAMES)}"
    )
    p.add_argument("--step-budget", action="append", default=[], metavar="NAME=S",
                   help="override one step's budget in seconds (repeatable)")  # fmt: skip
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default: the sum)")
    p.add_argument(
        "--out", default=None, help="result folder (default: $OUT, else benchmarks/results/<device>-<date>)"
    )
    p.add_argument(
        "--work", default=None, help="scratch folder for datasets, weights, raw rows (default: a temp dir)"
    )
    p.add_argument("--step", default=None, help=argparse.SUPPRESS)  # internal: run one step here
    p.add_argument("--size", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    bad = [s for s in steps if s not in BUDGETS]
    if bad:
        p.error(f"--steps: unknown step {bad[0]!r}; choose from {','.join(STEP_NAMES)}")
    args.steps = steps
    col = 1 if args.dry_run else 0
    args.budgets = {name: b[col] for name, b in BUDGETS.items()}
    for item in args.step_budget:
        m = re.fullmatch(r"([a-z_]+)=([0-9.]+)", item)
        if not m or m.group(1) not in BUDGETS:
            p.error(f"--step-budget {item!r}: write NAME=SECONDS with NAME one of {','.join(STEP_NAMES)}")
        args.budgets[m.group(1)] = float(m.group(2))
    if args.tiny and not args.dry_run:
        p.error("--tiny shrinks the dry run; add --dry-run")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:  # before torch and triton are imported, here and in every step's process
        os.environ["TRITON_INTERPRET"] = "1"
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if args.step:
        import gpu_check_steps

        gpu_check_steps.run(args.step, args.size, Path(args.work), args.deadline)
        return 0
    from gpu_check_summary import write_summary
    from provenance import provenance

    start = time.time()
    prov = provenance()
    size = "gpu" if not args.dry_run else "tiny" if args.tiny else "dry"
    out = _out_dir(args, prov, size)
    work = (
        Path(args.work)
        if args.work
        else Path(os.environ.get("TMPDIR", "/tmp")) / f"gandist-gpu-check-{os.getpid()}"
    )
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("*.jsonl"):
        stale.unlink()
    total = args.budget if args.budget is not None else sum(args.budgets[s] for s in args.steps) + RESERVE_S
    end = time.time() + total  # from the first step: the set-up above (imports) is not a step's time
    status = {s: {"status": "pending", "budget_s": args.budgets[s]} for s in args.steps}
    meta = {"size": size, "budget_s": total, "out": str(out), "work": str(work), **prov}
    log = open(out / "gpu_check.log", "a")

    def say(line: str) -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    say(f"gpu_check: {size} run on {prov['device']}, torch {prov['torch']}, triton {prov['triton']}, "
        f"commit {prov['commit'] or '?'}; budget {total:.0f} s; results in {out}")  # fmt: skip
    write_summary(out, work, status, meta, plot=False)
    for name in args.steps:
        left = end - time.time() - RESERVE_S
        budget = min(args.budgets[name], left)
        if left < 1:
            status[name] = {"status": "skipped", "reason": "no time left in the total budget", "budget_s": 0}
            say(f"== {name}: skipped, no time left in the total budget")
            continue
        say(f"== {name} (budget {budget:.0f} s)")
        status[name] = {"status": "running", "budget_s": round(budget, 1)}
        status[name] = _run_step(name, size, work, budget, say,
                                 refresh=lambda: write_summary(out, work, status, meta, plot=False))  # fmt: skip
        say(f"== {name}: {status[name]['status']} in {status[name]['used_s']:.1f} s")
        write_summary(out, work, status, meta, plot=True)
    meta["wall_s"] = round(time.time() - start, 1)
    md = write_summary(out, work, status, meta, plot=True)
    say(md.read_text())
    log.close()
    return 1 if any(s["status"] == "failed" for s in status.values()) else 0


def _out_dir(args, prov: dict, size: str) -> Path:
    if args.out:
        return Path(args.out)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    device = "smoke-cpu" if size != "gpu" else re.sub(r"[^A-Za-z0-9._-]+", "_", prov["device"]).strip("_")
    return HERE / "results" / f"{device}-{prov['date'][:10]}"


def _run_step(name: str, size: str, work: Path, budget: float, say, refresh) -> dict:
    """Run one step in its own process group; kill the group at the budget. Its output is passed on
    line by line; the summary is refreshed every 15 s meanwhile."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--size", size, "--work", str(work),
           "--deadline", str(time.time() + budget)]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0, cpu0 = time.time(), _children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # fmt: skip

    def stop(signum, frame):  # a `timeout` around this script: the step's own session goes with it
        os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    tail: list[str] = []

    def pump():
        for line in proc.stdout:
            say("  " + line.rstrip())
            tail[:] = (tail + [line.rstrip()])[-5:]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    cut = False
    while True:
        try:
            proc.wait(timeout=min(15.0, max(0.1, t0 + budget - time.time())))
            break
        except subprocess.TimeoutExpired:
            if time.time() >= t0 + budget:
                cut = True
                os.killpg(proc.pid, signal.SIGKILL)  # the step and everything it started
                proc.wait()
                break
            refresh()
    signal.signal(signal.SIGTERM, previous)
    reader.join(timeout=5)
    used = round(time.time() - t0, 1)
    # CPU seconds of the step and every process it started and waited for (a killed step's orphans are
    # not counted): on a shared machine the figure that does not depend on the others' load.
    cpu = round(_children_cpu() - cpu0, 1)
    rows = work / f"{name}.jsonl"
    skips = (
        [json.loads(x)["skip"] for x in rows.read_text().splitlines() if '"skip"' in x]
        if rows.is_file()
        else []
    )
    if cut:
        return {"status": "cut", "reason": f"over its {budget:.0f} s budget; rows measured before are kept",
                "budget_s": round(budget, 1), "used_s": used, "cpu_s": cpu}  # fmt: skip
    if proc.returncode != 0:
        last = next((x for x in reversed(tail) if x.strip()), f"exit status {proc.returncode}")
        return {
            "status": "failed",
            "reason": last[-300:],
            "budget_s": round(budget, 1),
            "used_s": used,
            "cpu_s": cpu,
        }
    if skips:
        partial = rows.is_file() and any(
            '"skip"' not in x for x in rows.read_text().splitlines() if x.strip()
        )
        return {"status": "partial" if partial else "skipped", "reason": "; ".join(skips),
                "budget_s": round(budget, 1), "used_s": used, "cpu_s": cpu}  # fmt: skip
    return {"status": "ok", "budget_s": round(budget, 1), "used_s": used, "cpu_s": cpu}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    sys.exit(main())
