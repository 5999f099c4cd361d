"""Data-parallel scaling: images/s for 1, 2, 4, 8 ranks and the share of each step spent in communication,
for DCGAN, PGGAN and StyleGAN layer widths; and a model of 8- and 64-GPU scaling for StyleGAN at 1024².

Measured (`--ranks 1,2,4,8`): for each family and rank count, `torchrun --standalone` starts that many
ranks of the `ddp` strategy (gloo on CPUs, NCCL on GPUs), each with the same per-rank batch (weak scaling:
the global batch grows with the ranks, as a cluster run keeps the per-GPU batch), and times whole
generator steps (every phase, penalties included) after a warm-up. Communication time is the time inside
every all-reduce of a step (the gradient all-reduce of each phase, the buffer average, the finiteness
flag and the synchronised batch norm's statistics), measured with the device synchronised around each
call (benchmark only: training never synchronises there); on CPUs it includes waiting for the slowest rank. Efficiency = images/s at N ranks / (N x images/s at 1 rank). On a machine with fewer cores than
ranks x threads the ranks share cores, and the figure measures that oversubscription, not the method:
the table says how many cores there were.

Across nodes (`--nodes 1x2,2x1`): the same measurement on the simulated SLURM cluster of the tests
(tests/slurm_cluster.py: one slurmd per network namespace, joined by a bridge on 198.18.0.0/24), launched as
train.sbatch launches it: `srun` starts one torchrun per node, which meet at a c10d rendezvous on node1.
1 node x 2 ranks all-reduces inside one namespace (loopback TCP); 2 nodes x 1 rank crosses the bridge
(veth pairs, real TCP between network stacks). Both share this machine's cores: the rows compare the
transports on the same CPUs, not two hosts' compute. Needs root, iproute2 and slurm-wlm.

Modelled (`--model`): StyleGAN at 1024² on N GPUs from a per-GPU step time and an all-reduce bus
bandwidth, both inputs (measure them on the GPUs: `bench_train.py --family stylegan` gives the step time,
nccl-tests' all_reduce_perf the bus bandwidth). Per step, data parallelism all-reduces D's gradients in
the D phase, G's in the G phase and D's again in the lazy R1 phase every 16 steps; a ring all-reduce of B
bytes takes 2 (N - 1) / N x B / busbw. With no overlap of communication and computation (the flat
all-reduce after backward, as here and in NVIDIA's StyleGAN2-ADA), speedup(N) = N x t / (t + t_comm).

    python benchmarks/train/bench_scaling.py --ranks 1,2 --smoke          # CPU, tiny widths (CI smoke)
    python benchmarks/train/bench_scaling.py --ranks 1,2,4,8              # layer widths of the configs
    python benchmarks/train/bench_scaling.py --model --step-ms 900 --busbw-gbs 380 --busbw-64-gbs 45
    python benchmarks/train/bench_scaling.py --nodes 1x2,2x1 --families pggan --smoke   # simulated nodes

Writes `results/scaling-<device>-<date>.{csv,json,md}` with provenance.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# (config, overrides) per family; per-rank batch and resolution are set per run. Layer widths are the
# configs' own unless --smoke shrinks them (CI).
FAMILIES = {
    "dcgan": ("digits_dcgan", []),
    "pggan": ("pggan_cpu", ["model.mbstd_group=4"]),
    "stylegan": ("stylegan_cpu", ["model.mbstd_group=4"]),
}
SMOKE = {
    "dcgan": ["model.g_width=8", "model.d_width=8"],
    "pggan": ["model.fmap_base=64", "model.fmap_max=8", "model.z_dim=16"],
    "stylegan": ["model.fmap_base=64", "model.fmap_max=8", "model.z_dim=16", "model.w_dim=16",
                 "model.mapping_width=16"],
}  # fmt: skip


def _overrides(family: str, per_rank: int, ranks: int, resolution: int, smoke: bool) -> list[str]:
    config, keys = FAMILIES[family]
    batch = per_rank * ranks
    out = [*keys, *(SMOKE[family] if smoke else []), f"data.batch_size={batch}", f"data.resolution={resolution}",
           "health.enabled=false", "train.progress=false", "train.strategy=ddp", "train.steps=1000000"]  # fmt: skip
    if family != "dcgan":  # the stable phase at `resolution`, as a progressive run reaches it
        out += [f"schedule.start_resolution={resolution}", "schedule.batch={}", "train.kimg=0"]
    return out


def worker(args: argparse.Namespace) -> None:
    """One rank: build the trainer, warm up, time steps and the collectives inside them; rank 0 prints JSON."""
    import torch

    from gandist.config import load_config
    from gandist.strategies import strategy_from_config
    from gandist.train.loop import Trainer

    config = FAMILIES[args.family][0]
    cfg = load_config(config, _overrides(args.family, args.per_rank, args.world, args.resolution, args.smoke))
    with strategy_from_config(cfg.train) as strategy, tempfile.TemporaryDirectory() as tmp:
        t = Trainer(cfg, Path(tmp), log_enabled=False, strategy=strategy)
        cuda = strategy.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        comm = [0.0]

        def timed(fn):
            def inner(*a, **k):
                sync()
                t0 = time.perf_counter()
                out = fn(*a, **k)
                sync()
                comm[0] += time.perf_counter() - t0
                return out

            return inner

        # every all-reduce of a step: the gradient reduction, the buffer average, the finiteness flag and the
        # batch-norm statistics of the global batch (two per layer in the forward, two in the backward)
        import torch.distributed as dist

        dist.all_reduce = timed(dist.all_reduce)
        for _ in range(args.warmup):
            t.train_step()
        strategy.barrier()
        steps, comms = [], []
        for _ in range(args.steps):
            comm[0] = 0.0
            sync()
            t0 = time.perf_counter()
            t.train_step()
            sync()
            steps.append(time.perf_counter() - t0)
            comms.append(comm[0])
        params = {name: sum(p.numel() for p in net.parameters()) for name, net in t.nets.items()}
        # the slowest rank sets the pace: every rank's mean step time, max over ranks
        mean = torch.tensor([statistics.fmean(steps), statistics.fmean(comms)], dtype=torch.float64)
        worst = strategy.all_reduce(mean.clone(), "max")
        if strategy.is_main:
            d_steps = cfg.train.d_steps
            print("RESULT " + json.dumps({
                "family": args.family, "ranks": args.world, "resolution": args.resolution,
                "per_rank_batch": args.per_rank, "global_batch": args.per_rank * args.world,
                "step_s": worst[0].item(), "comm_s": worst[1].item(),
                "comm_share": worst[1].item() / worst[0].item(),
                "img_per_s": args.per_rank * args.world * d_steps / worst[0].item(),
                "params": params, "device": str(strategy.device),
                "step_p20_s": statistics.quantiles(steps, n=5)[0] if len(steps) > 1 else steps[0],
                "step_p80_s": statistics.quantiles(steps, n=5)[-1] if len(steps) > 1 else steps[0],
            }), flush=True)  # fmt: skip


def measure(family: str, ranks: int, a: argparse.Namespace) -> dict:
    threads = max(1, (os.cpu_count() or 1) // ranks)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(HERE.parents[1]))  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
           str(Path(__file__).resolve()), "--worker", "--family", family, "--world", str(ranks),
           "--per-rank", str(a.per_rank[family]), "--resolution", str(a.resolution[family]),
           "--steps", str(a.steps), "--warmup", str(a.warmup)] + (["--smoke"] if a.smoke else [])  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"{family} x{ranks} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    row = json.loads(lines[-1][len("RESULT ") :])
    row["threads_per_rank"] = threads
    return row


def measure_nodes(cluster, family: str, nodes: int, per_node: int, a: argparse.Namespace) -> dict:
    """One row on the simulated cluster: `nodes` torchrun (one per node, through srun) x `per_node` ranks."""
    ranks = nodes * per_node
    threads = max(1, (os.cpu_count() or 1) // ranks)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parents[1])}  # fmt: skip
    port = 29400 + (os.getpid() + 7 * nodes + per_node) % 1000  # inside node1's own network namespace
    cmd = ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", f"--cpus-per-task={per_node}", "--kill-on-bad-exit=1",
           sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", str(per_node),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"node1:{port}", "--rdzv-id", f"bench{nodes}x{per_node}",
           str(Path(__file__).resolve()), "--worker", "--family", family, "--world", str(ranks),
           "--per-rank", str(a.per_rank[family]), "--resolution", str(a.resolution[family]),
           "--steps", str(a.steps), "--warmup", str(a.warmup)] + (["--smoke"] if a.smoke else [])  # fmt: skip
    r = cluster.run(*cmd, check=False, timeout=3600, env=env)
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"{family} {nodes}x{per_node} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    row = json.loads(lines[-1][len("RESULT ") :])
    row.update(nodes=nodes, ranks_per_node=per_node, threads_per_rank=threads,
               transport="loopback in one namespace" if nodes == 1 else "TCP across the bridge")  # fmt: skip
    return row


def run_nodes(a: argparse.Namespace) -> list[dict]:
    """The --nodes rows: a simulated cluster with as many nodes as the largest shape, one row per shape."""
    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    from slurm_cluster import NetnsSlurmCluster, netns_missing_reason

    shapes = [tuple(int(x) for x in s.split("x")) for s in a.nodes.split(",")]
    reason = netns_missing_reason()
    if reason:
        raise SystemExit(f"--nodes needs the simulated cluster: {reason}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="gandist-bench-nodes-") as tmp:
        cluster = NetnsSlurmCluster(Path(tmp), max(n for n, _ in shapes))
        try:
            cluster.start()
            for family in a.families.split(","):
                for nodes, per_node in shapes:
                    row = measure_nodes(cluster, family, nodes, per_node, a)
                    row["cores"] = os.cpu_count()
                    rows.append(row)
                    print(f"{family:9s} {nodes} node(s) x {per_node}: {row['img_per_s']:9.1f} img/s  "
                          f"comm {100 * row['comm_share']:.1f}% of {1000 * row['step_s']:.1f} ms/step", flush=True)  # fmt: skip
        finally:
            cluster.stop()
    return rows


def model(a: argparse.Namespace) -> list[dict]:
    """The StyleGAN 1024² scaling model from a per-GPU step time and bus bandwidths (inputs, not measured)."""
    from gandist.config import load_config
    from gandist.models import build_networks

    cfg = load_config("stylegan_1024", [])
    nets = build_networks(cfg.model, (3, 1024, 1024), "images")
    n_g, n_d = (sum(p.numel() for p in nets[k].parameters()) for k in ("G", "D"))
    bytes_per = 4  # fp32 gradients (bf16 autocast keeps fp32 weights and gradients)
    per_step = bytes_per * (n_d + n_g + n_d / 16)  # D phase, G phase, lazy R1 every 16 steps
    rows = []
    for n, busbw in ((1, None), (8, a.busbw_gbs), (64, a.busbw_64_gbs)):
        comm = 0.0 if n == 1 else 2 * (n - 1) / n * per_step / (busbw * 1e9)
        t = a.step_ms / 1000
        rows.append({"gpus": n, "params_G": n_g, "params_D": n_d, "allreduce_bytes_per_step": per_step,
                     "busbw_GBps": busbw, "step_ms": a.step_ms, "comm_ms": comm * 1000,
                     "speedup": n * t / (t + comm)})  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2,4,8")
    p.add_argument("--families", default="dcgan,pggan,stylegan")
    p.add_argument("--smoke", action="store_true", help="tiny widths, few steps (CI)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--model", action="store_true", help="the StyleGAN 1024² model instead of measuring")
    p.add_argument("--step-ms", type=float, default=0.0, help="--model: measured per-GPU step time, ms")
    p.add_argument("--busbw-gbs", type=float, default=0.0, help="--model: all-reduce bus bandwidth, 8 GPUs")
    p.add_argument("--busbw-64-gbs", type=float, default=0.0, help="--model: all-reduce bus bandwidth, 64 GPUs")
    p.add_argument("--nodes", default="", help="shapes NODESxRANKS on the simulated cluster, e.g. 1x2,2x1")
    p.add_argument("--out", default=str(HERE.parent / "results"))
    # worker mode (under torchrun)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--family", help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, help=argparse.SUPPRESS)
    p.add_argument("--per-rank", type=int, help=argparse.SUPPRESS)
    p.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    from provenance import provenance

    prov = provenance()
    stamp = prov["date"][:10]
    device = "cuda" if "CPU" not in prov["device"] else "cpu"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.model:
        if not (a.step_ms > 0 and a.busbw_gbs > 0 and a.busbw_64_gbs > 0):
            raise SystemExit("--model needs --step-ms, --busbw-gbs and --busbw-64-gbs (measured on the GPUs)")
        rows = model(a)
        name = f"scaling-model-stylegan1024-{stamp}"
    else:
        a.per_rank = {"dcgan": 32, "pggan": 16, "stylegan": 16}
        a.resolution = {"dcgan": 32, "pggan": 32, "stylegan": 32}
        if a.smoke:
            a.per_rank = {k: 8 for k in a.per_rank}
            a.resolution = {k: 16 for k in a.resolution}
            a.steps, a.warmup = min(a.steps, 4), 1
    if a.nodes:
        rows = run_nodes(a)
        name = f"scaling-nodes-{device}-{stamp}"
    elif not a.model:
        rows = []
        for family in a.families.split(","):
            base = None
            for n in (int(x) for x in a.ranks.split(",")):
                row = measure(family, n, a)
                base = base or row["img_per_s"] / row["ranks"]
                row["efficiency"] = row["img_per_s"] / (row["ranks"] * base)
                row["cores"] = os.cpu_count()
                rows.append(row)
                print(f"{family:9s} x{n}: {row['img_per_s']:9.1f} img/s  efficiency {row['efficiency']:.2f}  "
                      f"comm {100 * row['comm_share']:.1f}% of {1000 * row['step_s']:.1f} ms/step", flush=True)
        name = f"scaling-{device}-{stamp}"
    flat = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    (out / f"{name}.json").write_text(json.dumps({"provenance": prov, "rows": rows}, indent=1))
    lines = [f"# {name}", "", f"`{prov['command']}` on {prov['device']}, torch {prov['torch']}, commit "
             f"{prov['commit']}, {prov['date']}", ""]  # fmt: skip
    keys = list(flat[0])
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in flat:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / name}.{{csv,json,md}}")


if __name__ == "__main__":
    main()
