"""launch/slurm/train.sbatch over 2 simulated nodes (tests/slurm_cluster.py: one slurmd per network namespace,
joined by a bridge on 198.18.0.0/24): 2 torchrun (one per node) x 2 gloo ranks meet at a c10d rendezvous on
node1's address and train across the bridge. The runs equal one process with the same global batch (within
test_ddp's tolerance), a preempted job and a job that lost one node's ranks end bit for bit with an
uninterrupted one, a checkpoint of 4 ranks resumes on 2, and `gandist eval` over 2 nodes equals one process.
One cluster for the module; every job uses 2 processes per node and the quickstart shrunk to a few ms a step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REL_TOL, assert_ranks_match, max_rel_diff
from slurm_cluster import NetnsSlurmCluster, netns_missing_reason
from test_slurm import DONE, NPROC, Job, _env, _tiny, _weights

from gandist.train import checkpoint as ckpt

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
NODES = 2
# what the reference runs below share with the jobs: 120 tiny quickstart steps, a checkpoint every 40
STEPS, EVERY = 120, 40


def _sets(*sets: str) -> list[str]:
    return [x for s in sets for x in ("--set", s)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = netns_missing_reason()
    if reason:
        pytest.skip(reason)
    c = NetnsSlurmCluster(tmp_path_factory.mktemp("slurm-nodes"), NODES)
    try:
        c.start()
        yield c
    finally:
        c.stop()
    left = c.leftovers()
    assert not left, f"the cluster's teardown left {left}"


def _one_process(config: str, out: Path, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "gandist", "train", config, "--out", str(out), "--no-progress", *args]
    r = subprocess.run(cmd, env={**os.environ, **_env()}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]


def _finished(job: Job, timeout: float = 600) -> dict[str, str]:
    info = job.wait(lambda j: j["JobState"] in DONE, timeout, "the job to end")
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{job.report()}"
    return info


def _equal(run: Path, ref: Path, step: int) -> None:
    a, b = _weights(run / "checkpoints" / f"{step:09d}"), _weights(ref / "checkpoints" / f"{step:09d}")
    assert sorted(a) == sorted(b) and a
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"


def _wait_for(path: Path, job: Job, timeout: float = 300) -> None:
    t0 = time.time()
    while not path.is_dir():  # a checkpoint is renamed into place once complete
        info = job.slurm.job(job.id)
        assert info["JobState"] in ("PENDING", "RUNNING"), f"{info}\n{job.report()}"
        assert time.time() - t0 < timeout, f"no {path.name} after {timeout} s\n{job.report()}"
        time.sleep(0.1)


# family -> (config, overrides): each grows and fades within a few steps; minibatch stddev off (each rank
# groups its own samples, as the official code), StyleGAN without noise inputs and style mixing (drawn from
# each rank's own stream, which one process cannot reproduce) and SGD (Adam's first steps after the growth reset move
# nearly-cancelling weights by ~lr * sign(g), see test_ddp's pggan_growth), so the comparison measures what
# the ranks compute.
FAMILIES = {
    "pggan": ("pggan_cpu", ["train.kimg=0.384", "schedule.stable_kimg=0.128", "schedule.fade_kimg=0.128",
                            "model.mbstd_group=0", "train.sample_every=1000", "train.ckpt_every=1000",
                            "train.log_every=1", "optim.name=sgd", "optim.lr_g=0.01", "optim.lr_d=0.01"]),
    "stylegan": ("stylegan_cpu", ["train.kimg=0.384", "schedule.stable_kimg=0.128", "schedule.fade_kimg=0.128",
                                  "model.mbstd_group=0", "model.style_mixing=0", "model.noise=false",
                                  "model.fmap_base=64",
                                  "model.fmap_max=16", "model.mapping_layers=2", "train.sample_every=1000",
                                  "train.ckpt_every=1000", "train.log_every=1", "optim.name=sgd",
                                  "optim.lr_g=0.01", "optim.lr_d=0.01"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def family_runs(cluster, tmp_path_factory):
    """family -> (the 2-node job, its run, the same on 4 local ranks, one process); each made once."""
    made = {}

    def make(family: str):
        if family not in made:
            config, sets = FAMILIES[family]
            args = _sets(*sets, "health.enabled=false")
            tmp = tmp_path_factory.mktemp(family)
            job = Job(cluster, tmp, tmp / "run", args, config=config, nodes=NODES)
            local = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                     str(NODES * NPROC), "-m", "gandist", "train", config, "--out", str(tmp / "local"),
                     "--no-progress", *args, "--set", "train.strategy=ddp"]  # fmt: skip
            r = subprocess.run(
                local, env={**os.environ, **_env()}, capture_output=True, text=True, timeout=600
            )
            assert r.returncode == 0, r.stderr[-4000:]
            _one_process(config, tmp / "one", args)
            _finished(job)
            made[family] = (job, tmp / "run", tmp / "local", tmp / "one")
        return made[family]

    return make


def _final(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run / "checkpoints")[0], ("tensors",))["tensors"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_nodes_train_as_four_local_ranks(family, family_runs):
    """2 nodes x 2 ranks across the bridge compute what 4 ranks on one host compute, bit for bit; the run
    folder, log and samples are written once."""
    job, run, local, one = family_runs(family)
    out = job.out.read_text()
    assert f"{NODES} node(s) x {NPROC}" in out and "rendezvous node1:" in out, job.report()
    assert out.count("[gandist] done:") == 1, job.report()  # rank 0 alone reports
    assert sorted(p.name for p in run.parent.iterdir()) == sorted(["run", "local", "one", job.out.name])
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [
        json.loads(x)["step"] for x in (one / "log.jsonl").read_text().splitlines()
    ]
    assert {(r["resolution"], r["phase"]) for r in records} >= {(4, "stable"), (8, "fade"), (8, "stable")}
    assert sorted(p.name for p in (run / "samples").iterdir()) == sorted(
        p.name for p in (one / "samples").iterdir()
    )
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == [
        p.name for p in ckpt.list_checkpoints(one / "checkpoints")
    ]
    a, b = _final(run), _final(local)
    assert sorted(a) == sorted(b) and a
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, (
        f"{family}: 2 nodes differ from 4 local ranks in {len(differ)} tensors, e.g. {differ[:3]}"
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_nodes_train_like_one_process(family, family_runs):
    """`conftest.assert_ranks_match`: every tensor within REL_TOL of one process, or a parameter whose difference
    alone moves its network's output by at most IMMATERIAL (REL_TOL / 10), and every network's output within
    REL_TOL. Measured: PGGAN, every tensor within REL_TOL, outputs within 3.2e-7. StyleGAN, 7 biases before an
    instance norm beyond it (up to 3e-2 relative in the 4x4 constant layer's, whose gradient the norm cancels:
    one process that only splits its batch into micro-batches moves it as much), each moving the output by at
    most 7e-8; outputs within 6.3e-7. A G learning rate 1% off moves 9 tensors' outputs by over 1e-6 (up to
    2e-3) and G_ema's output by 2e-3."""
    _, run, _, one = family_runs(family)
    ref, other = ckpt.list_checkpoints(one / "checkpoints")[0], ckpt.list_checkpoints(run / "checkpoints")[0]
    assert_ranks_match(ref, other, f"{family}: 2 nodes x {NPROC} ranks vs 1 process")


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """The reference of the interruption tests: the same job on the same 2 nodes, never interrupted."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    job = Job(cluster, tmp, tmp / "run", _tiny(STEPS, EVERY), nodes=NODES)
    _finished(job)
    return tmp / "run"


def test_preempted_two_node_job_requeues_and_ends_bit_exact(cluster, uninterrupted, tmp_path):
    run = tmp_path / "run"
    job = Job(cluster, tmp_path, run, _tiny(STEPS, EVERY), nodes=NODES)
    _wait_for(run / "checkpoints" / f"{EVERY:09d}", job)
    t_signal = time.time()
    cluster.run("scancel", "--signal=USR2", "--batch", job.id)  # as SLURM does 180 s before the time limit
    info = job.wait(
        lambda j: j["JobState"] in DONE and int(j["Restarts"]) >= 1, 600, "the requeued job to end"
    )
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{job.report()}"
    log = job.out.read_text()
    assert "requeueing job" in log and f"[gandist] done: {STEPS} steps" in log, job.report()
    saved = [int(p.name) for p in ckpt.list_checkpoints(run / "checkpoints")]
    on_signal = [s for s in saved if s % EVERY]
    assert len(on_signal) == 1 and EVERY < on_signal[0] < STEPS, f"{saved}\n{job.report()}"
    assert f"resumed from {run / 'checkpoints' / f'{on_signal[0]:09d}'}" in log, job.report()
    ckpt.verify_checkpoint(run / "checkpoints" / f"{on_signal[0]:09d}")
    print(f"preemption: signal to resumed end {time.time() - t_signal:.1f} s")
    _equal(run, uninterrupted, STEPS)


def _kill_ranks(cluster: NetnsSlurmCluster, node: str) -> list[int]:
    """SIGKILL every training rank on `node` (the workers torchrun started there), as a lost node's processes."""
    killed = []
    for pid in cluster.pids(node):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"gandist" in argv and b"torch.distributed.run" not in argv and b"bash" not in argv[0]:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def test_node_lost_torchrun_restarts_and_ends_bit_exact(cluster, uninterrupted, tmp_path):
    run = tmp_path / "run"
    job = Job(cluster, tmp_path, run, _tiny(STEPS, EVERY), nodes=NODES, MAX_RESTARTS="2")
    _wait_for(run / "checkpoints" / f"{EVERY:09d}", job)
    killed = _kill_ranks(cluster, "node2")
    t_kill = time.time()
    assert len(killed) == NPROC, f"{killed}\n{job.report()}"
    info = _finished(job)
    print(f"node lost, torchrun restarts: kill to end {time.time() - t_kill:.1f} s")
    assert info["Restarts"] == "0", job.report()  # torchrun re-formed the group inside the same job
    log = job.out.read_text()
    assert "failed (exitcode: -9)" in log and "resumed from" in log, job.report()  # torchrun saw the SIGKILL
    assert "lost its ranks" not in log, job.report()
    _equal(run, uninterrupted, STEPS)


def test_node_lost_without_restarts_names_it_and_a_resubmission_resumes(cluster, uninterrupted, tmp_path):
    run = tmp_path / "run"
    job = Job(cluster, tmp_path, run, _tiny(STEPS, EVERY), nodes=NODES, MAX_RESTARTS="0")
    _wait_for(run / "checkpoints" / f"{EVERY:09d}", job)
    assert len(_kill_ranks(cluster, "node2")) == NPROC, job.report()
    info = job.wait(lambda j: j["JobState"] in DONE, 300, "the job to fail")
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", f"{info}\n{job.report()}"
    lost = [x for x in job.out.read_text().splitlines() if "lost its ranks" in x]
    assert len(lost) == 1 and "node node2 (node rank 1)" in lost[0] and "SIGKILL" in lost[0], job.report()
    again = Job(cluster, tmp_path, run, _tiny(STEPS, EVERY), nodes=NODES)
    _finished(again)
    assert "resumed from" in again.out.read_text(), again.report()
    _equal(run, uninterrupted, STEPS)


def _kill_node_job(cluster: NetnsSlurmCluster, node: str) -> list[int]:
    """SIGKILL every process the job runs on `node` (the wrapper shell and its tee, torchrun, the ranks), as a
    machine's OOM killer or a crash that spares only SLURM's own daemons (slurmd, slurmstepd)."""
    killed = []
    for pid in cluster.pids(node):
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if "slurm" not in os.path.basename(program):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        except (OSError, ProcessLookupError):  # it ended between the listing and the kill
            continue
    return killed


def test_every_job_process_of_a_node_lost_fails_naming_it_and_a_resubmission_resumes(cluster, uninterrupted,
                                                                                      tmp_path):  # fmt: skip
    """All of node2's job processes killed, torchrun with them: nothing is left on node2 to restart a rank, the
    job fails and srun names the node; a resubmission resumes and ends bit for bit with the uninterrupted job."""
    run = tmp_path / "run"
    job = Job(cluster, tmp_path, run, _tiny(STEPS, EVERY), nodes=NODES, MAX_RESTARTS="0")
    _wait_for(run / "checkpoints" / f"{EVERY:09d}", job)
    killed = _kill_node_job(cluster, "node2")
    assert len(killed) >= NPROC + 2, job.report()  # the ranks, torchrun and the wrapper at least
    info = job.wait(lambda j: j["JobState"] in DONE, 300, "the job to fail")
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", f"{info}\n{job.report()}"
    out = job.out.read_text()
    assert any("node2" in x and "Killed" in x for x in out.splitlines() if x.startswith("srun: error")), job.report()
    again = Job(cluster, tmp_path, run, _tiny(STEPS, EVERY), nodes=NODES)
    _finished(again)
    assert "resumed from" in again.out.read_text(), again.report()
    _equal(run, uninterrupted, STEPS)


def test_four_rank_checkpoint_resumes_on_two(cluster, uninterrupted, tmp_path):
    """A checkpoint of 2 nodes x 2 ranks resumed by 1 node x 2 ranks (the same global batch) ends where the
    4-rank run ends, to test_ddp's tolerance: every sample's data and latents follow its global position."""
    run = tmp_path / "run"
    half = STEPS // 2
    first = Job(cluster, tmp_path, run, _tiny(half, EVERY), nodes=NODES)
    _finished(first)
    second = Job(cluster, tmp_path, run, _tiny(STEPS, EVERY), nodes=1)
    _finished(second)
    log = second.out.read_text()
    assert f"resumed from {run / 'checkpoints' / f'{half:09d}'}" in log, second.report()
    assert f"written by {NODES * NPROC} rank(s), this run has {NPROC}" in log, second.report()
    a = _weights(run / "checkpoints" / f"{STEPS:09d}")
    b = _weights(uninterrupted / "checkpoints" / f"{STEPS:09d}")
    rel, name = max_rel_diff(b, a)
    print(f"4 ranks -> 2 ranks resume vs 4 ranks throughout: max relative difference {rel:.3g} ({name})")
    assert rel <= REL_TOL, f"resumed on 2 ranks, {rel:.3g} relative from the 4-rank run in {name}"


def test_eval_over_two_nodes_equals_one_process(cluster, tmp_path):
    from gandist.cli import main

    run = tmp_path / "ring"
    train = [
        "--set",
        "train.steps=20",
        "--set",
        "model.g_width=16",
        "--set",
        "model.d_width=16",
        "--no-progress",
    ]
    assert main(["train", "ring_wgangp", "--out", str(run), *train]) == 0
    metrics = ["--metrics", "modes,fid,kid", "--num-samples", "600", "--seed", "5"]
    port = 29400 + os.getpid() % 1000
    out = tmp_path / "nodes.jsonl"
    cmd = ["srun", f"--nodes={NODES}", "--ntasks-per-node=1", f"--cpus-per-task={NPROC}", "--kill-on-bad-exit=1",
           sys.executable, "-m", "torch.distributed.run", "--nnodes", str(NODES), "--nproc-per-node", str(NPROC),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"node1:{port}", "--rdzv-id", "eval",
           "-m", "gandist", "eval", str(run), *metrics, "--out", str(out)]  # fmt: skip
    r = cluster.run(*cmd, check=False, timeout=600, env=_env())
    assert r.returncode == 0, f"srun exited {r.returncode}:\n{r.stderr[-6000:]}"
    lines = out.read_text().splitlines()
    assert len(lines) == 1, lines  # rank 0 alone reports
    single = tmp_path / "single.jsonl"
    assert main(["eval", str(run), *metrics, "--out", str(single)]) == 0
    a, b = json.loads(lines[0]), json.loads(single.read_text())
    assert a["world_size"] == NODES * NPROC
    for key in ("fid", "kid", "modes", "high_quality", "reverse_kl"):
        assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-12), key
