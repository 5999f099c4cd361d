"""Real learning: a seeded short run of a shipped config must find the modes."""

import pytest
import torch

from gandist.config import load_config
from gandist.metrics import mode_coverage
from gandist.train.loop import Trainer


@pytest.mark.slow
def test_ring_wgangp_covers_at_least_six_of_eight_modes(tmp_path):
    cfg = load_config("ring_wgangp", ["train.steps=600", "train.seed=0", "train.progress=false"])
    t = Trainer(cfg, tmp_path, log_enabled=False)
    before = mode_coverage(
        t.sample_net()(torch.randn(2500, 2, generator=torch.Generator().manual_seed(5))), "ring"
    )
    t.train(progress=False)
    with torch.no_grad():
        x = t.sample_net()(torch.randn(2500, cfg.model.z_dim, generator=torch.Generator().manual_seed(5)))
    after = mode_coverage(x, "ring")
    assert before["modes"] <= 2  # the untrained generator does not already cover the ring
    assert after["modes"] >= 6, after
    assert after["high_quality"] > 0.1, after


@pytest.mark.slow
def test_mixture_latent_removes_the_bridges_between_ring_modes(tmp_path):
    # Same budget for both: the connected latent must draw bridges between the 8 modes, the mixture
    # latent need not (PacGAN's high-quality criterion: within 3 standard deviations of a mode).
    scores = {}
    for name in ("ring_wgangp", "ring_wgangp_mix"):
        cfg = load_config(name, ["train.steps=1000", "train.seed=0", "train.progress=false"])
        t = Trainer(cfg, tmp_path / name, log_enabled=False)
        t.train(progress=False)
        with torch.no_grad():
            z = torch.randn(2500, cfg.model.z_dim, generator=torch.Generator().manual_seed(5))
            scores[name] = mode_coverage(t.sample_net()(z), "ring")
    mix, normal = scores["ring_wgangp_mix"], scores["ring_wgangp"]
    assert mix["modes"] == 8 and mix["high_quality"] >= 0.95 and mix["reverse_kl"] <= 0.05, mix
    assert normal["high_quality"] < mix["high_quality"], scores


@pytest.mark.slow
def test_dcgan_digits_fools_a_fixed_discriminator_less_over_time(tmp_path):
    # The mean D(G(z)) of a DCGAN moves away from 0 as D learns, and G's samples move toward the data:
    # the pixel mean of samples approaches the data's pixel mean (a sanity check that G learns at all).
    cfg = load_config("quickstart", ["train.steps=300", "train.progress=false"])
    t = Trainer(cfg, tmp_path, log_enabled=False)
    data_mean = t.data.peek(1797).mean().item()
    z = torch.randn(256, cfg.model.z_dim, generator=torch.Generator().manual_seed(1))
    start = abs(t.nets["G"].eval()(z).mean().item() - data_mean)
    t.nets["G"].train()
    t.train(progress=False)
    end = abs(t.sample_net()(z).mean().item() - data_mean)
    assert end < 0.5 * start, (start, end)
