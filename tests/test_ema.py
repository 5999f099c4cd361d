"""G_ema as each paper defines it: PGGAN's decay is a constant per generator step whatever the batch
(official train.py, G_smoothing 0.999), StyleGAN's a half-life of 10k images (official training_loop.py,
Gs_beta = 0.5 ** (minibatch / (G_smoothing_kimg * 1000))), and the classic GANs keep none: their pictures,
metrics and `gandist generate` are G's own."""

import pytest
import torch
from conftest import assert_same_state, make_trainer
from torch import nn

from gandist.config import ConfigError, load_config
from gandist.train import checkpoint as ckpt
from gandist.train.ema import EMA


@pytest.mark.parametrize("batch", [3, 16, 64, 512])
def test_ema_beta_is_the_same_every_step_whatever_the_batch(batch):
    cfg = load_config(None, ["train.ema_beta=0.999", f"data.batch_size={batch}"])
    assert (cfg.train.ema_beta, cfg.train.ema_kimg) == (0.999, None)  # kept as given, not converted
    ema = EMA.from_config(nn.Linear(1, 1), cfg.train)
    assert [ema.beta(batch, seen) for seen in (0, batch, 10**7)] == [0.999] * 3


@pytest.mark.parametrize("batch", [3, 16, 64, 512])
def test_ema_kimg_is_the_official_half_life_at_every_batch(batch):
    cfg = load_config(None, ["train.ema_kimg=10", f"data.batch_size={batch}"])
    ema = EMA.from_config(nn.Linear(1, 1), cfg.train)
    assert ema.beta(batch, 10**7) == 0.5 ** (batch / (10 * 1000.0))


@pytest.mark.parametrize("spelling", ["train.ema_beta=0.9", "train.ema_kimg=0.05"])
def test_the_loop_updates_g_ema_with_the_papers_beta_when_the_batch_changes(spelling, pggan_cfg, monkeypatch):
    """A tiny PGGAN whose batch goes 8 -> 4 at the 8 px fade: every update uses the per-step beta as given, or
    the half-life's beta of that step's batch."""
    cfg = pggan_cfg("train.ema_kimg=null", spelling)
    t = make_trainer(cfg, "unused", log_enabled=False)
    used = []
    monkeypatch.setattr(EMA, "update", lambda self, model, beta: used.append((t.batch_size, beta)))
    for _ in range(8):
        t.train_step()
    assert {b for b, _ in used} == {8, 4}
    for batch, beta in used:
        assert beta == (0.9 if "beta" in spelling else 0.5 ** (batch / 50.0))


def test_each_family_keeps_g_ema_as_its_paper_where_the_config_names_none():
    pg = load_config(None, ["model.name=pggan", "data.resolution=16"]).train
    sg = load_config(None, ["model.name=stylegan", "data.resolution=16"]).train
    dc = load_config(None, ["model.name=dcgan"]).train
    assert (pg.ema_beta, pg.ema_kimg) == (0.999, None) and (sg.ema_beta, sg.ema_kimg) == (None, 10.0)
    assert (dc.ema_beta, dc.ema_kimg, dc.keeps_ema) == (None, None, False)
    for off in ("train.ema_kimg=0", "train.ema_beta=0"):  # 0: no G_ema, whatever the family
        assert not load_config(None, ["model.name=stylegan", "data.resolution=16", off]).train.keeps_ema
    for name in ("pggan_256", "pggan_1024"):  # the official G_smoothing
        assert load_config(name, ["data.path=."]).train.ema_beta == 0.999
    for name in ("stylegan_256", "stylegan_1024"):  # the official G_smoothing_kimg
        assert load_config(name, ["data.path=."]).train.ema_kimg == 10.0
    for name in ("quickstart", "digits_dcgan", "digits_lsgan", "digits_wgan", "digits_wgangp", "mlp_gan_digits",
                 "ring_gan", "grid_gan", "ring_wgangp", "grid_wgangp", "ring_wgangp_mix", "grid_wgangp_mix"):  # fmt: skip
        assert not load_config(name).train.keeps_ema, name


@pytest.mark.parametrize(
    "sets, message",
    [
        (["train.ema_beta=0.99", "train.ema_kimg=10"], r"^train.ema_beta=0.99 \(a decay per step\) and train.ema_kimg"),
        (["train.ema_beta=0.99", "train.ema_rampup=0.05"], r"^train.ema_rampup=0.05 ramps up G_ema's half-life"),
        (["model.name=pggan", "data.resolution=16", "train.ema_rampup=0.05"], r"train.ema_kimg is None"),
    ],
)  # fmt: skip
def test_ema_settings_that_contradict_each_other_are_one_line(sets, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, sets)
    assert "\n" not in str(info.value)


def test_a_classic_run_keeps_no_shadow_and_samples_g_itself(tiny_cfg, tmp_path, trainer_state):
    """No G_ema: nothing averaged, no G_ema in the checkpoint, pictures and `generate` are G in eval mode (batch
    norm's running statistics), and drawing them changes nothing the run computes."""
    from gandist.generate import load_generator

    cfg = tiny_cfg("train.steps=4", "train.sample_every=1")
    t = make_trainer(cfg, tmp_path / "run")
    t.train(progress=False)
    assert t.ema == {} and not cfg.train.keeps_ema
    G, z = t.nets["G"], torch.randn(5, cfg.model.z_dim)
    with torch.no_grad():
        out = t.sample_net()(z)
        assert t.sample_net() is G and not G.training
        ref = G.eval()(z)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    tensors = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))["tensors"]
    assert not [k for k in tensors if k.startswith("G_ema.")]
    with torch.no_grad():  # `generate` asks for G_ema and gets G
        torch.testing.assert_close(load_generator(tmp_path / "run")(z), ref, rtol=0, atol=0)
    assert (tmp_path / "run" / "samples" / "step_0000003.png").is_file()  # pictures of G after every step
    quiet = make_trainer(cfg, tmp_path / "quiet", log_enabled=False)  # none: G never left training mode
    quiet.train(progress=False)
    assert_same_state(trainer_state(t), trainer_state(quiet))


def test_a_checkpoint_with_g_ema_resumes_into_a_run_without_one(tiny_cfg, tmp_path):
    """A classic run written with G_ema (the shipped configs' ema_beta before they kept none) continues under a
    config without it: its G, D, optimizers and stream load, the old G_ema is left aside."""
    before = make_trainer(tiny_cfg("train.steps=3", "train.ema_beta=0.99"), tmp_path / "old")
    before.train(progress=False)
    after = make_trainer(tiny_cfg("train.steps=6"), tmp_path / "old")
    after.load(ckpt.latest_checkpoint(tmp_path / "old" / "checkpoints"))
    assert after.step == 3 and after.ema == {}
    for k, v in before.nets["G"].state_dict().items():
        assert torch.equal(v, after.nets["G"].state_dict()[k]), k
    after.train(progress=False)
    assert after.step == 6
