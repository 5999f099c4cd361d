"""The training loop's contract: Algorithm 1's schedule, frozen D in the G step, clipping, exact resume."""

import os
import signal
import threading

import pytest
import torch
from conftest import make_trainer

from gandist.data.base import Batch
from gandist.train import checkpoint as ckpt
from gandist.train.loop import Trainer


def _count_steps(opt, log, name):
    opt.register_step_post_hook(lambda *a, **k: log.append(name))


def _phase(t: Trainer, name: str):
    return next(p for p in t.phases if p.name == name)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_exactly_k_d_updates_per_g_update(tiny_cfg, tmp_path, k):
    t = make_trainer(tiny_cfg(f"train.d_steps={k}", "train.steps=4"), tmp_path, log_enabled=False)
    log: list[str] = []
    _count_steps(t.optimizers["D"], log, "D")
    _count_steps(t.optimizers["G"], log, "G")
    t.train(progress=False)
    assert log == (["D"] * k + ["G"]) * 4
    assert [(p.name, p.repeat) for p in t.phases] == [("Dmain", k), ("Gmain", 1)]


def _wgan_diters(gen_iterations: int, diters: int = 5) -> int:
    """D steps per generator step in martinarjovsky/WassersteinGAN main.py, written out."""
    if gen_iterations < 25 or gen_iterations % 500 == 0:
        return 100
    return diters


def test_wgan_config_warms_the_critic_up_as_the_official_code(tmp_path):
    from gandist.config import load_config

    cfg = load_config("digits_wgan", ["data.resolution=8", "model.g_width=4", "model.d_width=4"])
    assert (cfg.train.d_steps, cfg.train.d_steps_warmup) == (5, 100)
    assert load_config("digits_wgangp").train.d_steps_warmup == 0  # Gulrajani et al.: a constant 5
    d = _phase(make_trainer(cfg, tmp_path, log_enabled=False), "Dmain")
    for step in [*range(31), 499, 500, 501, 1000, 1001, 1500]:
        assert d.repeats(step) == _wgan_diters(step), step


# 4 D steps on generator steps 0, 1, 2 (the first three) and 4, 8 (every 4th), else 2: 28 in 9 steps
WARMUP = ["train.d_steps=2", "train.d_steps_warmup=4", "train.d_steps_warmup_first=3",
          "train.d_steps_warmup_every=4"]  # fmt: skip
WARMUP_D = (4, 4, 4, 2, 4, 2, 2, 2, 4)


def test_d_updates_per_g_update_follow_the_warmup(tiny_cfg, tmp_path):
    t = make_trainer(tiny_cfg("train.steps=9", *WARMUP), tmp_path, log_enabled=False)
    log: list[str] = []
    _count_steps(t.optimizers["D"], log, "D")
    _count_steps(t.optimizers["G"], log, "G")
    t.train(progress=False)
    assert log == [x for k in WARMUP_D for x in ["D"] * k + ["G"]]
    assert t.nimg == sum(WARMUP_D) * 8 and t.data.position == t.nimg  # every D step drew a batch of 8 reals


@pytest.mark.parametrize("stop", [2, 4])  # inside the first steps; at an every-4th step
def test_resume_inside_the_warmup_equals_uninterrupted_bit_for_bit(tiny_points_cfg, tmp_path, stop,
                                                                   trainer_state):  # fmt: skip
    from conftest import assert_same_state

    wgan = ["loss.name=wgan", "loss.clip=0.05", "optim.name=rmsprop", "optim.lr_d=0.001", *WARMUP]
    full = make_trainer(tiny_points_cfg("train.steps=9", *wgan), tmp_path / "full")
    full.train(progress=False)
    make_trainer(tiny_points_cfg(f"train.steps={stop}", *wgan), tmp_path / "part").train(progress=False)
    resumed = make_trainer(tiny_points_cfg("train.steps=9", *wgan), tmp_path / "part")
    resumed.load(ckpt.latest_checkpoint(tmp_path / "part" / "checkpoints"))
    assert resumed.step == stop
    resumed.train(progress=False)
    assert_same_state(trainer_state(full), trainer_state(resumed))
    assert resumed.nimg == full.nimg == sum(WARMUP_D) * 16
    assert resumed.data.position == full.data.position


def test_d_parameters_untouched_by_g_step(tiny_cfg, tmp_path):
    t = make_trainer(tiny_cfg(), tmp_path, log_enabled=False)
    D, G = t.nets["D"], t.nets["G"]
    t.run_phase(_phase(t, "Dmain"))
    before = {n: p.detach().clone() for n, p in D.named_parameters()}
    g_before = [p.detach().clone() for p in G.parameters()]
    t.run_phase(_phase(t, "Gmain"))
    for n, p in D.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.requires_grad, "D must be trainable again after the G step"
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters())), "G did not move"


def test_g_step_sends_no_gradient_into_d(tiny_cfg, tmp_path):
    t = make_trainer(tiny_cfg(), tmp_path, log_enabled=False)
    t.optimizers["D"].zero_grad(set_to_none=True)
    t.run_phase(_phase(t, "Gmain"))
    assert all(p.grad is None for p in t.nets["D"].parameters())


def test_wgan_clipping_holds_after_every_d_update(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "loss.name=wgan", "loss.clip=0.01", "optim.name=rmsprop", "optim.lr_d=0.05", "train.d_steps=5"
    )
    t = make_trainer(cfg, tmp_path, log_enabled=False)
    seen = []
    D = t.nets["D"]
    original = t.run_phase

    # Inspect the weights before and after every D phase, i.e. after the previous update's clipping.
    def phase_checked(phase):
        if phase.optimizer != "D":
            return original(phase)
        seen.append(max(p.detach().abs().max().item() for p in D.parameters()))
        out = original(phase)
        seen.append(max(p.detach().abs().max().item() for p in D.parameters()))
        return out

    t.run_phase = phase_checked
    t.train(progress=False)
    assert len(seen) == 2 * 5 * cfg.train.steps
    assert max(seen[1:]) <= 0.01 + 1e-12  # every state after the first update
    assert seen[0] > 0.01  # the N(0, 0.02) initialisation exceeds the clip: the test can fail


def _all_state(t: Trainer) -> dict:
    out = {f"t.{k}": v.clone() for k, v in t.state_tensors().items()}
    for name, opt in t.optimizers.items():
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                out[f"{name}.{i}.{k}"] = torch.as_tensor(v).clone()
    out["rng"] = t.gen.get_state().clone()
    return out


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("loss.name=wgan-gp", "model.d_norm=layer", "train.d_steps=2"),
        ("data.mirror=true", "loss.r1_gamma=1.0"),
        ("model.latent=mixture", "model.latent_components=4"),
    ],
)
def test_resume_at_half_equals_uninterrupted_bit_for_bit(tiny_cfg, tmp_path, extra):
    cfg = tiny_cfg("train.steps=8", "train.ckpt_every=4", *extra)
    full = make_trainer(cfg, tmp_path / "full")
    full.train(progress=False)

    first = make_trainer(tiny_cfg("train.steps=4", "train.ckpt_every=4", *extra), tmp_path / "half")
    first.train(progress=False)
    resumed = make_trainer(cfg, tmp_path / "half")
    resumed.load(ckpt.latest_checkpoint(tmp_path / "half" / "checkpoints"))
    assert resumed.step == 4
    resumed.train(progress=False)

    a, b = _all_state(full), _all_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert resumed.data.position == full.data.position
    log_steps = [line for line in (tmp_path / "half" / "log.jsonl").read_text().splitlines()]
    assert len(log_steps) == len((tmp_path / "full" / "log.jsonl").read_text().splitlines())


def test_sigint_saves_checkpoint_and_stops(tiny_cfg, tmp_path):
    t = make_trainer(tiny_cfg("train.steps=100000", "train.ckpt_every=100000"), tmp_path)
    original = t.train_step

    def step_then_interrupt():
        out = original()
        if t.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    t.train_step = step_then_interrupt
    assert threading.current_thread() is threading.main_thread()
    summary = t.train(progress=False)
    assert summary["interrupted"] == "SIGINT"
    assert summary["step"] == 3
    latest = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    assert latest is not None and int(latest.name) == 3


# A process that stops on SIGUSR2 at step 3 and receives a second stop signal as its last save begins, as a rank
# under SLURM can (slurmstepd signals every process of the step, torchrun signals its workers again): the save,
# the summary and the last barrier run with the loop's handlers in place, where the default action of a
# second signal used to end the process (exit -12 / -15) before the ranks had saved together.
_SECOND_SIGNAL = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from conftest import TINY, make_trainer
from gandist.config import load_config

second = getattr(signal, sys.argv[3])
cfg = load_config(None, [*TINY, "train.steps=100000", "train.ckpt_every=100000", "train.sample_every=100000"])
t = make_trainer(cfg, Path(sys.argv[2]))
step, save = t.train_step, t.save

def step_then_stop():
    out = step()
    if t.step == 3:
        os.kill(os.getpid(), signal.SIGUSR2)
    return out

def save_under_a_second_signal():
    os.kill(os.getpid(), second)
    return save()

t.train_step, t.save = step_then_stop, save_under_a_second_signal
print(t.train(progress=False)["interrupted"])
"""


@pytest.mark.parametrize("second", ["SIGUSR2", "SIGTERM"])
def test_a_second_stop_signal_during_the_last_save_is_absorbed(tmp_path, second):
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", _SECOND_SIGNAL, tests, str(tmp_path / "run"), second],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert r.stdout.split()[-1] == "SIGUSR2"  # the request that stopped the loop
    latest = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert latest is not None and int(latest.name) == 3
    ckpt.verify_checkpoint(latest)
    assert r.stderr.count("received: saving a checkpoint") == 1, r.stderr[-3000:]


def test_nonfinite_loss_skips_the_update(tiny_cfg, tmp_path):
    t = make_trainer(tiny_cfg(), tmp_path, log_enabled=False)
    D, opt = t.nets["D"], t.optimizers["D"]
    real_batch = t.data.next_batch
    poisoned = lambda n: Batch(real_batch(n).x * float("nan"))
    # The first update creates the optimizer state (decided on the host); later ones are skipped on the
    # device without reading the flag back. Both must leave D and its optimizer state untouched.
    for finite_first in (False, True):
        if finite_first:
            t.data.next_batch = real_batch
            t.run_phase(_phase(t, "Dmain"))
        before = [p.detach().clone() for p in D.parameters()]
        state = {i: {k: v.clone() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
        skipped = int(t.skipped)
        t.data.next_batch = poisoned
        t.run_phase(_phase(t, "Dmain"))
        assert int(t.skipped) == skipped + 1
        assert all(torch.equal(a, b) for a, b in zip(before, D.parameters()))
        after = opt.state_dict()["state"]
        if not finite_first:  # a skipped first step may create the state, but only as a fresh one
            assert all(not torch.as_tensor(v).any() for st in after.values() for v in st.values())
            continue
        assert after.keys() == state.keys()
        for i in state:
            for k in state[i]:
                assert torch.equal(after[i][k], state[i][k]), (i, k)


def test_run_directory_contents(tiny_cfg, tmp_path):
    t = make_trainer(tiny_cfg(), tmp_path)
    t.train(progress=False)
    for name in (
        "config.yaml",
        "log.jsonl",
        "losses.png",
        "samples/reals.png",
        "samples/step_0000006.png",
        "summary.json",
    ):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tensorboard").iterdir())
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["000000006", "000000003"]
