"""Data parallelism (`train.strategy=ddp`, gloo on CPU): W ranks reproduce one process with the same global
batch, resume exactly, and refuse impossible launches with one line.

The reference is a one-process run of the same config: after a few generator steps every parameter, buffer
and EMA weight of 2 ranks must agree with it to float32 rounding (the ranks sum the same per-sample
gradients in another order). GAN training amplifies such differences over hundreds of steps (measured:
5e-3 after 60 quickstart steps), so the comparison is made early, where the tolerance means something.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REL_TOL, make_trainer  # REL_TOL: ||2 ranks - 1 process|| / ||1 process|| per tensor

from gandist.train.checkpoint import load_checkpoint

MP_TIMEOUT = 300  # seconds for one multi-process launch; a hang fails with the workers' output instead


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _train_cmd(config: str, out: Path, sets: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    args = ["gandist", "train", config, "--out", str(out), "--no-progress", *extra]
    for s in sets:
        args += ["--set", s]
    return args


def run_one(config: str, out: Path, sets: list[str], extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", *_train_cmd(config, out, sets, extra)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=MP_TIMEOUT, env=_env())
    assert r.returncode == 0, f"one-process run exited {r.returncode}:\n{r.stderr[-4000:]}"
    return r


def torchrun(config: str, out: Path, sets: list[str], nproc: int = 2, extra: tuple[str, ...] = (),
             check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m",
           *_train_cmd(config, out, ["train.strategy=ddp", *sets], extra)]  # fmt: skip
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=MP_TIMEOUT, env=_env())
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"torchrun did not finish in {MP_TIMEOUT} s; stderr:\n{err[-6000:]}")
    if check:
        assert r.returncode == 0, f"torchrun exited {r.returncode}; stderr:\n{r.stderr[-6000:]}"
    return r


def final_tensors(run: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run / "checkpoints").iterdir())[-1]
    return load_checkpoint(newest, parts=("tensors",))["tensors"]


# (config, overrides): each a family / loss / penalty schedule the issue names, a few steps long
CASES = {
    # DCGAN with batch norm in G and D (synchronised over ranks), non-saturating minimax loss
    "dcgan_minimax": ("quickstart", ["train.steps=3", "loss.name=minimax", "model.d_norm=batch", "loss.r1_gamma=0"]),
    # WGAN: RMSprop, n_critic 5, weight clipping after every critic update; the critic warm-up (7 instead of the
    # config's 100 D steps on both generator steps) draws the same real batches on every rank
    "wgan_clip": ("digits_wgan", ["train.steps=2", "data.resolution=16", "model.g_width=16", "model.d_width=16",
                                  "train.d_steps_warmup=7"]),
    # WGAN-GP with gradient accumulation: 2 micro-batches of 16 per rank (one all-reduce per optimizer step)
    # against one process with micro-batches of 32 (G's batch norm sees the same 32 samples)
    "wgangp_micro": ("digits_wgangp", ["train.steps=2", "data.resolution=16", "model.g_width=16",
                                       "model.d_width=16", "train.micro_batch=16"]),
    # R1 paid lazily every 2 steps (phase Dreg with Adam's corrected betas), D with layer norm. G without batch
    # norm (dcgan_minimax covers G's synchronised batch norm): with it, on an AMD EPYC, Adam turned the ranks'
    # summation order in the gradient of G's first batch-norm bias into 4.7e-4 relative at step 4, where the
    # same case with SGD stays at 1e-6, R1 every step at 2e-7, and G without batch norm at 4e-7
    "r1_lazy": ("quickstart", ["train.steps=4", "loss.r1_gamma=1.0", "loss.reg_interval=2", "model.d_norm=layer",
                               "model.g_norm=none"]),
    # PGGAN growing 4 -> 8 px: 2 steps at 4 px, the fade-in, then 8 px stable. Minibatch stddev off (each rank
    # groups its own samples, as the official code, which one process cannot reproduce), and SGD: Adam
    # restarts at the boundary (the paper's reset), and its first steps move each weight by about
    # lr * sign(g), so for gradient sums that nearly cancel the summation order alone flips single
    # elements by up to lr (measured with Adam: 3e-5 relative over the network, 0.07 in one 3-element
    # bias). SGD's update is linear in the gradient, so the comparison measures what the ranks compute.
    "pggan_growth": ("pggan_cpu", ["train.kimg=0.384", "schedule.stable_kimg=0.128", "schedule.fade_kimg=0.128",
                                   "model.mbstd_group=0", "train.sample_every=100", "train.log_every=1",
                                   "optim.name=sgd", "optim.lr_g=0.01", "optim.lr_d=0.01"]),
}


@pytest.mark.distributed
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_equal_one_process(case, tmp_path, max_rel_diff):
    config, sets = CASES[case]
    sets = [*sets, "health.enabled=false"]
    # one process: the global micro-batch (W ranks x n each)
    one_sets = [s if not s.startswith("train.micro_batch=") else f"train.micro_batch={2 * int(s.split('=')[1])}"
                for s in sets]  # fmt: skip
    run_one(config, tmp_path / "one", one_sets)
    torchrun(config, tmp_path / "two", sets)
    one, two = final_tensors(tmp_path / "one"), final_tensors(tmp_path / "two")
    rel, name = max_rel_diff(one, two)
    print(f"{case}: max relative difference {rel:.3g} ({name})")
    assert rel <= REL_TOL, f"{case}: 2 ranks differ from 1 process by {rel:.3g} relative in {name}"
    if case == "pggan_growth":  # the run really crossed the boundary: the log shows the fade and 8 px
        records = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
        assert {(r["resolution"], r["phase"]) for r in records} >= {(4, "stable"), (8, "fade"), (8, "stable")}


@pytest.mark.distributed
def test_two_ranks_log_global_statistics(tmp_path):
    """Logged losses are the global batch's (averaged over ranks), as one process logs them."""
    import json

    sets = ["train.steps=2", "train.log_every=1"]  # health on: it logs the gradient norms
    run_one("quickstart", tmp_path / "one", sets)
    torchrun("quickstart", tmp_path / "two", sets)
    read = lambda p: [json.loads(x) for x in (p / "log.jsonl").read_text().splitlines()]  # noqa: E731
    for a, b in zip(read(tmp_path / "one"), read(tmp_path / "two"), strict=True):
        for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


@pytest.mark.distributed
def test_two_ranks_resume_exactly(tmp_path):
    """2 ranks: 3 steps, then a resume to 6, equal bit for bit to 6 steps in one go (every rank's RNG states,
    the data position and the loop's stream are in the checkpoint)."""
    sets = ["health.enabled=false", "model.d_norm=layer", "loss.r1_gamma=1.0", "loss.reg_interval=2"]
    torchrun("quickstart", tmp_path / "straight", [*sets, "train.steps=6"])
    torchrun("quickstart", tmp_path / "resumed", [*sets, "train.steps=3"])
    torchrun("quickstart", tmp_path / "resumed", [*sets, "train.steps=6"], extra=("--resume", "auto"))
    a, b = final_tensors(tmp_path / "straight"), final_tensors(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed 2-rank run differs from the uninterrupted one"


@pytest.mark.distributed
def test_checkpoint_of_two_ranks_resumes_in_one_process(tmp_path):
    """Another world size with the same global batch resumes, with a notice about the per-rank streams."""
    sets = ["health.enabled=false", "train.steps=2"]
    torchrun("quickstart", tmp_path / "run", sets)
    cmd = [sys.executable, "-m", *_train_cmd("quickstart", tmp_path / "run", ["health.enabled=false", "train.steps=3"],
                                             ("--resume", "auto"))]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=MP_TIMEOUT, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "written by 2 rank(s), this run has 1" in r.stderr
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())[-1] == "000000003"


@pytest.mark.distributed
def test_global_batch_that_does_not_split_is_one_line(tmp_path):
    r = torchrun("quickstart", tmp_path / "run", ["data.batch_size=63", "train.steps=1"], check=False)
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.startswith("gandist train: error:")]
    assert len(lines) == 1, lines  # said once, by rank 0, though both ranks meet it
    assert "data.batch_size=63 (the global batch) does not split over 2 ranks" in lines[0]
    # torchrun reports the failed worker with a traceback of its own; the workers print none
    assert "gandist/train" not in r.stderr and "gandist/cli.py" not in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "run").exists(), "a launch that fails leaves no run folder"


def test_check_world_size_names_the_fix():
    from gandist.config import load_config
    from gandist.errors import UserError
    from gandist.train.loop import check_world_size

    cfg = load_config("pggan_cpu", [])
    check_world_size(cfg, 2)  # 32 and every schedule batch split in two
    with pytest.raises(UserError, match=r"schedule.batch\[4\]=64 \(the global batch\) does not split over 3 ranks"):
        check_world_size(load_config("pggan_cpu", ["data.batch_size=48"]), 3)
    with pytest.raises(UserError, match="leaves 8 per rank, not divisible by train.micro_batch=16"):
        check_world_size(load_config("quickstart", ["data.batch_size=32", "train.micro_batch=16"]), 4)
    with pytest.raises(UserError, match="not divisible by the minibatch-stddev group 4"):
        check_world_size(load_config("pggan_cpu", ["schedule.batch={4: 20, 8: 20, 16: 20, 32: 20}",
                                                   "data.batch_size=20"]), 2)  # fmt: skip


@pytest.mark.parametrize("config", ["quickstart", "ring_gan"])
@pytest.mark.parametrize("penalty", ["loss.r1_gamma=1", "loss.r2_gamma=1"])
def test_a_penalty_through_synchronised_batch_norm_is_refused(config, penalty):
    # R1 or R2 on a D with batch norm synchronised over ranks: the penalty's second derivative would miss the
    # other ranks (measured 0.23 relative in a weight after 2 steps); one process, layer norm, no norm, or batch
    # norm per rank compute it exactly
    from gandist.config import load_config
    from gandist.errors import UserError
    from gandist.train.loop import check_world_size

    with pytest.raises(UserError, match=rf"^{penalty.split('=')[0]} differentiates D twice.*set model.d_norm=layer"):
        check_world_size(load_config(config, ["loss.r1_gamma=0", penalty, "model.d_norm=batch"]), 2)
    check_world_size(load_config(config, ["loss.r1_gamma=0", penalty, "model.d_norm=batch"]), 1)
    per_rank = ["train.sync_batchnorm=false"]
    check_world_size(load_config(config, ["loss.r1_gamma=0", penalty, "model.d_norm=batch", *per_rank]), 2)
    for norm in ("layer", "none"):
        check_world_size(load_config(config, ["loss.r1_gamma=0", penalty, f"model.d_norm={norm}"]), 2)


def test_nccl_without_gpus_and_missing_rendezvous_are_one_line(monkeypatch):
    from gandist.strategies import DistEnv, StrategyError, build_strategy

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: NCCL is available")
    with pytest.raises(StrategyError, match="train.backend=nccl needs GPUs"):
        build_strategy("ddp", "cpu", DistEnv(0, 1, 0), backend="nccl")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(StrategyError, match="MASTER_ADDR and MASTER_PORT is not set"):
        build_strategy("ddp", "cpu", DistEnv(0, 2, 0))


def test_updates_skipped_in_a_row_stop_the_run(tmp_path):
    """A loss that is never finite: every update is skipped (weights untouched), and after train.skip_limit
    in a row the run stops with one line, keeping the checkpoints written before."""
    from gandist.config import load_config
    from gandist.errors import DivergedError
    from gandist.objectives.base import PhaseResult

    cfg = load_config("quickstart", ["train.steps=50", "train.log_every=1", "train.skip_limit=6",
                                     "health.enabled=false", "train.ckpt_every=1000"])  # fmt: skip
    trainer = make_trainer(cfg, tmp_path / "run", log_enabled=False)
    params = lambda: {f"{n}.{k}": v.detach().clone() for n, net in trainer.nets.items()  # noqa: E731
                      for k, v in net.named_parameters()}  # fmt: skip
    before = params()
    real = trainer.objective.accumulate

    def nan_loss(phase, batch, ctx):
        r = real(phase, batch, ctx)
        return PhaseResult(r.loss * float("nan"), r.stats)

    trainer.objective.accumulate = nan_loss
    with pytest.raises(DivergedError, match="updates in a row were skipped"):
        trainer.train(progress=False)
    assert trainer.step == 3  # 2 phases per step: the 6th skipped update in a row is read at step 3
    after = params()  # (batch-norm running statistics move with every forward pass; weights must not)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.distributed
def test_a_diverged_run_under_torchrun_says_so_once_and_keeps_its_log(tmp_path):
    """Learning rates of 1e30: the first updates make the losses non-finite, every later update is skipped, and
    the ranks, agreeing on the count, all stop at the same step. The stop is said once (rank 0's line, as for a
    config error) and the log up to it is kept, in log.jsonl and in TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    # without the quickstart's lazy R1: D and G update once a step, so the stop comes after logged steps
    sets = ["train.steps=30", "optim.lr_g=1e30", "optim.lr_d=1e30", "train.skip_limit=2", "train.log_every=1",
            "health.enabled=false", "loss.r1_gamma=0"]  # fmt: skip
    r = torchrun("quickstart", run, sets, check=False)
    assert r.returncode != 0, r.stderr[-3000:]
    lines = [x for x in r.stderr.splitlines() if x.startswith("gandist train: error:")]
    assert len(lines) == 1 and "updates in a row were skipped" in lines[0], r.stderr[-3000:]
    assert "no checkpoint was written yet" in lines[0]
    assert "gandist/" not in r.stderr  # no traceback of gandist's (torchrun's own report of a failed rank stays)
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps and steps == list(range(1, len(steps) + 1))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("d_loss")] == steps


@pytest.mark.distributed
@pytest.mark.slow
def test_sigkill_under_torchrun_max_restarts_resumes_exactly(tmp_path):
    """torchrun --max-restarts 1: one worker killed with SIGKILL mid-run; the restarted workers resume from the
    newest checkpoint (`--resume auto`) and finish with the uninterrupted run's weights, bit for bit."""
    sets = ["health.enabled=false", "train.steps=160", "train.ckpt_every=40", "train.sample_every=1000"]
    torchrun("quickstart", tmp_path / "straight", sets)
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts",
           "1", "-m", *_train_cmd("quickstart", run, ["train.strategy=ddp", *sets], ("--resume", "auto"))]  # fmt: skip
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    killed = None
    try:
        deadline = time.monotonic() + MP_TIMEOUT
        while time.monotonic() < deadline and killed is None:
            if (run / "checkpoints" / "000000040").is_dir():
                workers = _workers(agent.pid)
                if len(workers) == 2:
                    killed = workers[-1]
                    os.kill(killed, 9)
            time.sleep(0.05)
        out, err = agent.communicate(timeout=MP_TIMEOUT)
    except subprocess.TimeoutExpired:
        agent.kill()
        pytest.fail("torchrun hung after the SIGKILL:\n" + agent.communicate()[1][-6000:])
    assert killed is not None, "the workers never reached the first checkpoint"
    assert agent.returncode == 0, f"torchrun exited {agent.returncode}:\n{err[-6000:]}"
    resumed = [line for line in err.splitlines() if line.startswith("[gandist] resumed from")]
    assert len(resumed) == 1, err[-3000:]  # the restarted group says it once, from rank 0
    assert resumed[0].endswith("at step 40"), err[-3000:]  # the newest checkpoint
    a, b = final_tensors(tmp_path / "straight"), final_tensors(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "the restarted run differs from the uninterrupted one"


def _workers(agent: int) -> list[int]:
    """PIDs of the `gandist train` workers below the torchrun agent `agent` (Linux /proc), oldest first.
    torchrun may start them through helper processes, so every descendant is searched."""
    found, todo = [], [agent]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            for kid in kids:
                todo.append(kid)
                try:
                    argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"gandist" in argv and b"torch.distributed.run" not in argv:
                    found.append(kid)
    return sorted(found)


def test_sigusr2_before_the_first_log_record_saves_and_reports(tmp_path):
    """SLURM's warning (SIGUSR2) at step 2 of a run whose first log record would come at step 1000: the run
    saves at the step boundary and reports the signal (summary.json, which launch/slurm/train.sbatch reads)."""
    import json
    import signal

    from gandist.config import load_config

    cfg = load_config("quickstart", ["train.steps=50", "train.log_every=1000", "health.enabled=false"])
    trainer = make_trainer(cfg, tmp_path / "run")
    step = trainer.train_step

    def signalled_step():
        out = step()
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        return out

    trainer.train_step = signalled_step
    summary = trainer.train(progress=False)
    assert summary["interrupted"] == "SIGUSR2" and summary["step"] == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["interrupted"] == "SIGUSR2"
    assert (tmp_path / "run" / "checkpoints" / "000000002").is_dir()
