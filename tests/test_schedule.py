"""Progressive growing in the loop: the schedule as a function of images seen, reals at every resolution,
fade-in, optimiser resets, exact resume mid-fade, precision, and the mistakes it refuses."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_trainer

from gandist.config import ConfigError, load_config
from gandist.errors import CheckpointError
from gandist.train import checkpoint as ckpt
from gandist.train.schedule import Schedule, downsample, fade_reals

# ---------------------------------------------------------------------------------------------------
# The schedule alone


def test_schedule_phases_at_their_boundaries():
    cfg = load_config(None, ["model.name=pggan", "data.resolution=32", "schedule.kind=progressive",
                             "schedule.stable_kimg=600", "schedule.fade_kimg=400",
                             "schedule.batch={4: 64, 16: 32}", "schedule.lr={32: 0.003}"])  # fmt: skip
    s = Schedule(cfg)
    S, Fd = 600_000, 400_000
    expect = [  # (images seen, resolution, phase, alpha, batch, lr)
        (0, 4, "stable", 1.0, 64, 2e-4),
        (S - 1, 4, "stable", 1.0, 64, 2e-4),
        (S, 8, "fade", 0.0, 64, 2e-4),  # first image of the fade: the new block has no effect yet
        (S + Fd // 2, 8, "fade", 0.5, 64, 2e-4),
        (S + Fd - 1, 8, "fade", (Fd - 1) / Fd, 64, 2e-4),
        (S + Fd, 8, "stable", 1.0, 64, 2e-4),
        (2 * S + Fd, 16, "fade", 0.0, 32, 2e-4),  # the batch switches with the resolution
        (3 * S + 2 * Fd - 1, 16, "stable", 1.0, 32, 2e-4),
        (3 * S + 2 * Fd, 32, "fade", 0.0, 64, 3e-3),
        (3 * S + 3 * Fd, 32, "stable", 1.0, 64, 3e-3),  # the final stable phase runs to the end
        (10**9, 32, "stable", 1.0, 64, 3e-3),
    ]
    for nimg, res, phase, alpha, batch, lr in expect:
        st = s.at(nimg)
        assert (st.resolution, st.phase, st.batch) == (res, phase, batch), nimg
        assert st.alpha == pytest.approx(alpha, abs=1e-12) and st.lr_g == st.lr_d == pytest.approx(lr), nimg
    assert s.final_nimg() == 3 * S + 3 * Fd
    assert s.at(S + 1).index == 1 and s.at(10**9).index == 6 and s.at(10**9).end_nimg is None
    fixed = Schedule(load_config(None, []))
    assert fixed.at(0) == fixed.at(10**9) and fixed.at(5).resolution == 16 and fixed.at(5).alpha == 1.0


def test_box_filter_and_fade_of_the_reals():
    x = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    blocks = x.reshape(3, 2, 4, 4, 4, 4).mean(dim=(3, 5))  # the mean of each 4x4 block, written out
    torch.testing.assert_close(downsample(x, 4), blocks, rtol=0, atol=1e-15)
    assert downsample(x, 16) is x
    low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
    assert torch.equal(fade_reals(x, 1.0), x)
    torch.testing.assert_close(fade_reals(x, 0.0), low, rtol=0, atol=0)
    torch.testing.assert_close(fade_reals(x, 0.25), 0.25 * x + 0.75 * low, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# In the loop


def test_a_run_grows_through_every_phase(tmp_path, pggan_cfg):
    t = make_trainer(pggan_cfg("train.log_every=1"), tmp_path)
    seen = []
    original = t.run_phase

    def record(phase):
        if phase.name == "Dboth":
            seen.append((t.stage.resolution, t.stage.phase, t.batch_size, t.nets["D"].resolution))
        return original(phase)

    t.run_phase = record
    t.train(progress=False)
    stages = list(dict.fromkeys((r, p, b) for r, p, b, _ in seen))
    assert stages == [(4, "stable", 8), (8, "fade", 4), (8, "stable", 4), (16, "fade", 4), (16, "stable", 4)]
    assert all(r == d for r, _, _, d in seen)  # D runs at the schedule's resolution
    assert t.nimg >= 200 and t.nets["G"].resolution == t.sample_net().resolution == 16
    assert t.optimizers["G"].param_groups[0]["lr"] == pytest.approx(0.002)  # the 16 px learning rate
    import json

    records = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {r["resolution"] for r in records} == {4, 8, 16} and {"alpha", "phase", "kimg"} <= records[
        0
    ].keys()
    assert (tmp_path / "samples" / "reals.png").is_file()


def test_reals_follow_the_resolution_and_fade(tmp_path, pggan_cfg):
    t = make_trainer(pggan_cfg(), tmp_path, log_enabled=False)
    while t.stage.phase != "fade" or t.stage.alpha < 0.2:
        t.train_step()
    stage = t.stage
    shown = []
    t.objective.accumulate = (lambda original: lambda phase, batch, ctx: shown.append(batch) or original(phase, batch, ctx))(
        t.objective.accumulate
    )  # fmt: skip
    position = t.data.position
    t.run_phase(next(p for p in t.phases if p.name == "Dboth"))
    full = t.data._draw(position, t.batch_size)  # the same samples at 16 px
    expected = fade_reals(downsample(full, stage.resolution), stage.alpha)
    torch.testing.assert_close(shown[0].x, expected, rtol=0, atol=0)
    assert shown[0].x.shape[-1] == stage.resolution == 8


def test_optimizer_state_is_reset_at_each_phase_boundary(tmp_path, pggan_cfg):
    for reset in (True, False):
        t = make_trainer(
            pggan_cfg(f"schedule.reset_optimizer={str(reset).lower()}"),
            tmp_path / str(reset),
            log_enabled=False,
        )
        steps_seen = []
        while t.nimg < 60:
            t.train_step()
            state = t.optimizers["D"].state
            steps_seen.append((t.stage.key, int(next(iter(state.values()))["step"])))  # this step's phase
        boundary = next(i for i, (key, _) in enumerate(steps_seen) if key != steps_seen[0][0])
        counts = [c for _, c in steps_seen]
        if reset:  # the first step of the fade starts from a fresh Adam state
            assert counts[boundary] == 1 and counts[boundary - 1] == boundary
        else:
            assert counts == list(range(1, len(counts) + 1))


@pytest.mark.parametrize("family", ["pggan", pytest.param("stylegan", marks=pytest.mark.slow)])
def test_resume_mid_fade_is_bit_exact(family, request, resume_mid_fade, tmp_path):
    full, _ = resume_mid_fade(request.getfixturevalue(f"{family}_cfg")(), tmp_path)
    if family == "stylegan":  # the mapping network's running mean of w is part of what resumes
        a = full.state_tensors()
        assert "G.w_avg" in a and "G_ema.w_avg" in a
        assert not torch.equal(a["G.w_avg"], torch.zeros_like(a["G.w_avg"]))  # w_avg was tracked
        assert torch.equal(a["G.w_avg"], a["G_ema.w_avg"])  # G_ema carries G's w_avg (a buffer)


def test_generate_uses_the_resolution_the_run_reached(tmp_path, pggan_cfg):
    from gandist.generate import load_generator, sample

    cfg = pggan_cfg("train.kimg=0.03")  # stops during the fade to 8 px
    t = make_trainer(cfg, tmp_path)
    t.train(progress=False)
    gen = load_generator(tmp_path)
    assert gen.G.resolution == t.stage.resolution == 8 and 0 < float(gen.G.alpha) < 1
    assert sample(gen, 3, seed=1).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_with_fp32_weights_and_penalty(tmp_path, precision, pggan_cfg):
    cfg = pggan_cfg(f"train.precision={precision}", "train.kimg=0.03")
    t = make_trainer(cfg, tmp_path, log_enabled=False)
    dtypes = []
    import gandist.objectives.classic as classic
    from gandist.losses import gradient_penalty  # noqa: F401  (the penalty's kernel is called inside)

    original = classic.wgan_gp_penalty

    def spy(D, real, fake, **kwargs):
        dtypes.append((real.dtype, torch.is_autocast_enabled("cpu")))
        return original(D, real, fake, **kwargs)

    classic.wgan_gp_penalty = spy
    try:
        t.train(progress=False)
    finally:
        classic.wgan_gp_penalty = original
    assert dtypes and all(d == (torch.float32, False) for d in dtypes)
    assert all(p.dtype == torch.float32 for p in t.nets["G"].parameters())
    assert int(t.skipped) == 0 or precision == "fp16"
    assert all(torch.isfinite(p).all() for p in t.nets["D"].parameters())


def test_fp16_overflow_skips_the_step_and_backs_off_the_scale(tmp_path, pggan_cfg):
    t = make_trainer(pggan_cfg("train.precision=fp16"), tmp_path, log_enabled=False)
    t.train_step()
    D = t.nets["D"]
    before = [p.detach().clone() for p in D.parameters()]
    scale = float(t.loss_scale)
    for p in D.parameters():
        p.grad = torch.full_like(p, 1.0)
    next(D.parameters()).grad[0] = float("inf")
    ok = t._unscale(t.optimizers["D"])
    assert not bool(ok) and float(t.loss_scale) == scale * 0.5
    for p in D.parameters():
        p.grad = torch.full_like(p, 2.0 * scale * 0.5)
    assert bool(t._unscale(t.optimizers["D"]))
    torch.testing.assert_close(next(D.parameters()).grad, torch.full_like(next(D.parameters()), 2.0))
    assert all(torch.equal(a, b) for a, b in zip(before, D.parameters()))


# ---------------------------------------------------------------------------------------------------
# Mistakes, each one line before anything runs


@pytest.mark.parametrize(
    "override, message",
    [
        (None, r"schedule.kind=progressive needs a family that grows \(model.name=pggan\); model.name=dcgan"),
        (
            ["schedule.start_resolution=32"],
            r"schedule.start_resolution=32 must be a power of two no larger than data.resolution=16",
        ),
        (["schedule.start_resolution=6"], r"start_resolution=6 must be a power of two"),
        (["schedule.batch={12: 4}"], r"schedule.batch has resolution 12; this run grows through 4, 8, 16"),
        (["schedule.batch={8: 0}"], r"schedule.batch\[8\]=0 must be positive"),
        (
            ["schedule.batch={8: 5}"],
            r"schedule.batch\[8\]=5 must be divisible by the minibatch-std group size 2",
        ),
        (["train.micro_batch=3"], r"must be divisible by train.micro_batch=3"),
        (
            ["data.name=procedural", "data.resolution=24"],
            r"data.resolution=24: PGGAN grows to a power of two",
        ),
        (["schedule.kind=fixed"], r"schedule.batch is set but schedule.kind=fixed"),
    ],
)
def test_schedule_mistakes_are_one_line(override, message, pggan_cfg):
    with pytest.raises(ConfigError, match=message) as info:
        if override is None:  # the default DCGAN cannot grow
            load_config(None, ["schedule.kind=progressive"])
        pggan_cfg(*override)
    assert "\n" not in str(info.value)


def test_checkpoint_of_another_schedule_is_refused(tmp_path, pggan_cfg):
    t = make_trainer(pggan_cfg("train.kimg=0.03"), tmp_path / "a")
    t.train(progress=False)
    path = ckpt.latest_checkpoint(tmp_path / "a" / "checkpoints")
    other = make_trainer(pggan_cfg("schedule.stable_kimg=0.05"), tmp_path / "b")
    with pytest.raises(
        CheckpointError, match=r"another resolution schedule \(stable_nimg 20 there, 50 here\)"
    ):
        other.load(path)
    fixed = make_trainer(pggan_cfg("schedule.kind=fixed", "schedule.batch={}", "schedule.lr={}"), tmp_path / "c")
    with pytest.raises(
        CheckpointError, match=r"another resolution schedule \(kind progressive there, fixed here"
    ):
        fixed.load(path)
