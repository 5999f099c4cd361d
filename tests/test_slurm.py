"""launch/slurm/train.sbatch on a real local SLURM (tests/slurm_cluster.py): a job trains a run to the end,
and a job signalled as before its time limit saves, requeues itself, resumes and ends with the weights
of an uninterrupted run, bit for bit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from slurm_cluster import SlurmCluster, missing_reason

from gandist.train import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "launch" / "slurm" / "train.sbatch"
TORCHRUN = REPO / "launch" / "torchrun.sh"
NPROC = 2  # processes per node of every run here (train.strategy=ddp), the reference included
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _tiny(steps: int, ckpt_every: int) -> list[str]:
    """quickstart shrunk to ~5 ms a step in one process (~35 ms under DDP on 2 busy cores); every checkpoint kept.
    Without the quickstart's R1 and with batch norm in D, as these jobs' pace was measured."""
    sets = ["loss.r1_gamma=0", "model.d_norm=batch",
            "model.z_dim=8", "model.g_width=8", "model.d_width=8", "data.resolution=8", "data.batch_size=8",
            f"train.steps={steps}", "train.log_every=50", f"train.sample_every={ckpt_every}",
            f"train.ckpt_every={ckpt_every}", "train.keep_ckpts=0", "train.sample_n=4", "health.enabled=false"]  # fmt: skip
    return [x for s in sets for x in ("--set", s)]


def _env(**extra: str) -> dict[str, str]:
    """The job's environment (sbatch exports it): this checkout's gandist, one thread per process."""
    import gandist

    root = str(Path(gandist.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    env = {
        "PYTHONPATH": root + (os.pathsep + path if path else ""),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NPROC_PER_NODE": str(NPROC),
    }
    return {**env, **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


class Job:
    def __init__(self, slurm: SlurmCluster, tmp: Path, run: Path, args: list[str], config: str = "quickstart",
                 nodes: int = 1, **env: str) -> None:  # fmt: skip
        self.slurm, self.out = slurm, tmp / f"job-{run.name}.out"
        env = _env(CONFIG=config, RUN=str(run), RDZV_PORT=str(_free_port()), **env)
        cmd = ["sbatch", "--parsable", f"--chdir={tmp}", f"--output={self.out}", f"--cpus-per-task={NPROC}",
               f"--nodes={nodes}"]  # fmt: skip
        cmd += [str(SBATCH), *args]
        r = slurm.run(*cmd, env=env)
        self.id = r.stdout.strip().split(";")[0]

    def report(self) -> str:
        text = self.out.read_text(errors="replace") if self.out.exists() else "(no job output)"
        return f"--- job {self.id} output\n{text[-6000:]}\n{self.slurm.logs()}"

    def wait(self, until, timeout: float, what: str) -> dict[str, str]:
        try:
            return self.slurm.wait_job(self.id, until, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from None


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(path, ("tensors",))["tensors"]


@pytest.mark.parametrize("unset", ["CONFIG", "RUN"])
def test_sbatch_without_config_or_run_fails_with_one_line(unset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG", "RUN") and not k.startswith("SLURM_")}
    env.update({"CONFIG": "quickstart", "RUN": str(tmp_path / "run"), "SLURM_JOB_ID": "1"})
    del env[unset]
    r = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and not r.stdout, (r.returncode, r.stdout)
    assert r.stderr.count("\n") == 1 and f"{unset} is not set" in r.stderr and "sbatch" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_sbatch_trains_a_run_to_the_end(slurm, tmp_path):
    run = tmp_path / "run"
    job = Job(slurm, tmp_path, run, _tiny(60, 30))
    info = job.wait(lambda j: j["JobState"] in DONE, 300, "the job to end")
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{job.report()}"
    assert info["Restarts"] == "0", job.report()
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["000000060", "000000030"]
    ckpt.verify_checkpoint(run / "checkpoints" / "000000060")
    assert (run / "log.jsonl").read_text().count("\n") >= 2
    assert (run / "samples" / "step_0000060.png").is_file() and (run / "config.yaml").is_file()
    assert "[gandist] done: 60 steps" in job.out.read_text(), job.report()


@pytest.mark.slow
def test_sbatch_trains_a_growing_pggan(slurm, tmp_path):
    """pggan_cpu through the template with 2 ddp ranks: 4 -> 8 -> 16 px with fade-ins, to the end."""
    import json

    run = tmp_path / "run"
    sets = ["train.kimg=1.2", "schedule.stable_kimg=0.256", "schedule.fade_kimg=0.256", "train.log_every=1",
            "train.sample_every=1000", "train.ckpt_every=1000", "health.enabled=false"]  # fmt: skip
    job = Job(slurm, tmp_path, run, [x for s in sets for x in ("--set", s)], config="pggan_cpu")
    info = job.wait(lambda j: j["JobState"] in DONE, 300, "the job to end")
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{job.report()}"
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    seen = {(r["resolution"], r["phase"]) for r in records}
    assert {(4, "stable"), (8, "fade"), (8, "stable"), (16, "fade")} <= seen, f"{seen}\n{job.report()}"
    ckpt.verify_checkpoint(ckpt.list_checkpoints(run / "checkpoints")[0])


@pytest.mark.slow
@pytest.mark.distributed
def test_preempted_job_saves_requeues_resumes_and_ends_bit_exact(slurm, tmp_path):
    steps, every = 500, 100
    run, ref = tmp_path / "run", tmp_path / "ref"
    job = Job(slurm, tmp_path, run, _tiny(steps, every))
    first = run / "checkpoints" / f"{every:09d}"
    t0 = time.time()
    while not first.is_dir():  # renamed into place once complete
        info = slurm.job(job.id)
        assert info["JobState"] in ("PENDING", "RUNNING"), f"{info}\n{job.report()}"
        assert time.time() - t0 < 300, "no first checkpoint after 300 s\n" + job.report()
        time.sleep(0.1)
    # what SLURM sends 180 s before the time limit (--signal=B:USR2@180): SIGUSR2 to the batch shell only
    slurm.run("scancel", "--signal=USR2", "--batch", job.id)
    info = job.wait(
        lambda j: j["JobState"] in DONE and int(j["Restarts"]) >= 1, 600, "the requeued job to end"
    )
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{job.report()}"
    assert info["Restarts"] == "1", job.report()
    log = job.out.read_text()  # --open-mode=append: both runs of the job
    assert "SIGUSR2" in log and "requeueing job" in log, job.report()
    assert "resumed from" in log and f"[gandist] done: {steps} steps" in log, job.report()

    # the same configuration and world size, never interrupted
    r = subprocess.run(
        [str(TORCHRUN), "quickstart", "--out", str(ref), "--no-progress", *_tiny(steps, every)],
        env={**os.environ, **_env()},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    final, expected = (
        _weights(run / "checkpoints" / f"{steps:09d}"),
        _weights(ref / "checkpoints" / f"{steps:09d}"),
    )
    assert sorted(final) == sorted(expected) and final
    for name, t in expected.items():
        assert torch.equal(final[name], t), name

    # the trainers saved at the signal (between periodic checkpoints), and the requeued job resumed there
    saved = [int(p.name) for p in ckpt.list_checkpoints(run / "checkpoints")]
    on_signal = [s for s in saved if s % every]
    assert len(on_signal) == 1 and every < on_signal[0] < steps, (
        f"no checkpoint saved at the signal, only {saved}\n{job.report()}"
    )
    assert f"resumed from {run / 'checkpoints' / f'{on_signal[0]:09d}'}" in log, job.report()


@pytest.mark.slow
@pytest.mark.distributed
def test_cancelled_job_saves_and_is_not_requeued(slurm, tmp_path):
    steps, every = 100000, 500
    run = tmp_path / "run"
    job = Job(slurm, tmp_path, run, _tiny(steps, every))
    t0 = time.time()
    while not (run / "checkpoints" / f"{every:09d}").is_dir():
        info = slurm.job(job.id)
        assert info["JobState"] in ("PENDING", "RUNNING"), f"{info}\n{job.report()}"
        assert time.time() - t0 < 300, "no first checkpoint after 300 s\n" + job.report()
        time.sleep(0.1)
    slurm.run("scancel", job.id)  # SIGTERM to every process of the job, SIGKILL KillWait (30 s) later
    job.wait(lambda j: j["JobState"] == "CANCELLED" and "COMPLETING" not in j, 120, "the job to leave")
    t0 = time.time()
    while "[train.sbatch] trainer exited" not in job.out.read_text():
        assert time.time() - t0 < 60, job.report()
        time.sleep(0.5)
    info = slurm.job(job.id)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", f"{info}\n{job.report()}"
    assert "requeueing" not in job.out.read_text(), job.report()
    saved = [int(p.name) for p in ckpt.list_checkpoints(run / "checkpoints")]
    assert any(s % every for s in saved) and max(saved) < steps, f"{saved}\n{job.report()}"  # saved at SIGTERM
