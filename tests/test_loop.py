"""The training loop's contract: Algorithm 1's schedule, frozen D in the G step, clipping, exact resume."""

import os
import signal
import threading

import pytest
import torch

from gandist.train import checkpoint as ckpt
from gandist.train.loop import Trainer


def _count_steps(opt, log, name):
    opt.register_step_post_hook(lambda *a, **k: log.append(name))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_exactly_k_d_updates_per_g_update(tiny_cfg, tmp_path, k):
    t = Trainer(tiny_cfg(f"train.d_steps={k}", "train.steps=4"), tmp_path, log_enabled=False)
    log: list[str] = []
    _count_steps(t.opt_d, log, "D")
    _count_steps(t.opt_g, log, "G")
    t.train(progress=False)
    assert log == (["D"] * k + ["G"]) * 4
    assert t.d_updates == 4 * k


def test_d_parameters_untouched_by_g_step(tiny_cfg, tmp_path):
    t = Trainer(tiny_cfg(), tmp_path, log_enabled=False)
    t.d_step()
    before = {n: p.detach().clone() for n, p in t.D.named_parameters()}
    g_before = [p.detach().clone() for p in t.G.parameters()]
    t.g_step()
    for n, p in t.D.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.requires_grad, "D must be trainable again after the G step"
    assert any(not torch.equal(a, b) for a, b in zip(g_before, t.G.parameters())), "G did not move"


def test_g_step_sends_no_gradient_into_d(tiny_cfg, tmp_path):
    t = Trainer(tiny_cfg(), tmp_path, log_enabled=False)
    t.opt_d.zero_grad(set_to_none=True)
    t.g_step()
    assert all(p.grad is None for p in t.D.parameters())


def test_wgan_clipping_holds_after_every_d_update(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "loss.name=wgan", "loss.clip=0.01", "optim.name=rmsprop", "optim.lr_d=0.05", "train.d_steps=5"
    )
    t = Trainer(cfg, tmp_path, log_enabled=False)
    seen = []

    def check(*_a, **_k):
        # runs right after optimizer.step(); the loop clips next, so check at the following hook instead
        seen.append(max(p.detach().abs().max().item() for p in t.D.parameters()))

    # Inspect the weights at the start of every D step, i.e. after the previous update's clipping.
    original = t.d_step

    def d_step_checked():
        check()
        out = original()
        seen.append(max(p.detach().abs().max().item() for p in t.D.parameters()))
        return out

    t.d_step = d_step_checked
    t.train(progress=False)
    assert len(seen) == 2 * 5 * cfg.train.steps
    assert max(seen[1:]) <= 0.01 + 1e-12  # every state after the first update
    assert seen[0] > 0.01  # the N(0, 0.02) initialisation exceeds the clip: the test can fail


def _all_state(t: Trainer) -> dict:
    out = {f"t.{k}": v.clone() for k, v in t.state_tensors().items()}
    for name, opt in (("G", t.opt_g), ("D", t.opt_d)):
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
    full = Trainer(cfg, tmp_path / "full")
    full.train(progress=False)

    first = Trainer(tiny_cfg("train.steps=4", "train.ckpt_every=4", *extra), tmp_path / "half")
    first.train(progress=False)
    resumed = Trainer(cfg, tmp_path / "half")
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
    t = Trainer(tiny_cfg("train.steps=100000", "train.ckpt_every=100000"), tmp_path)
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


def test_nonfinite_loss_skips_the_update(tiny_cfg, tmp_path):
    t = Trainer(tiny_cfg(), tmp_path, log_enabled=False)
    before = [p.detach().clone() for p in t.D.parameters()]
    real_sample = t.data.sample
    t.data.sample = lambda n: real_sample(n) * float("nan")
    t.d_step()
    assert t.skipped == 1 and t.d_updates == 0
    assert all(torch.equal(a, b) for a, b in zip(before, t.D.parameters()))


def test_run_directory_contents(tiny_cfg, tmp_path):
    t = Trainer(tiny_cfg(), tmp_path)
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
