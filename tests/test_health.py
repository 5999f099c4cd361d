"""Training health: constructed runs with known outcomes are diagnosed at the right time."""

import json
import math

import pytest
import torch

from gandist.config import HealthConfig, load_config
from gandist.train.health import HealthMonitor, oscillation_score, pairwise_stats
from gandist.train.loop import Trainer


def _events(run_dir):
    out = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "health":
            out.append((r["diagnosis"], r["state"], r["step"]))
    return out


def test_pairwise_stats_against_definition():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.1]], dtype=torch.float64)
    mean, dup = pairwise_stats(x, dup_scale=0.5)
    d01, d02, d12 = 5.0, math.hypot(3.0, 4.1), 0.1
    assert mean == pytest.approx((d01 + d02 + d12) * 2 / 6)
    assert dup == pytest.approx(2 / 3)  # samples 1 and 2 are each other's near-duplicate


def test_oscillation_rule_on_synthetic_sequences():
    cfg = HealthConfig(warmup=0, window=200, every=10)
    g = torch.Generator().manual_seed(0)
    noise = (torch.randn(400, generator=g) * 0.05).tolist()
    wave = [1.0 + 0.8 * math.sin(2 * math.pi * i / 40) + n for i, n in enumerate(noise)]
    flat = [1.0 + n for n in noise]
    trend = [2.0 - i / 200 + n for i, n in enumerate(noise)]  # converging: monotone, no turns
    verdict = {}
    for name, seq in (("wave", wave), ("flat", flat), ("trend", trend)):
        m = HealthMonitor(cfg, echo=False)
        for i, v in enumerate(seq, 1):
            m.observe(i, {"g_loss": v, "d_loss": 1.0 + noise[i - 1]})
        verdict[name] = m.conditions(len(seq))["oscillation"]
    assert verdict == {"wave": True, "flat": False, "trend": False}
    turns, amp, noise_level = oscillation_score(wave[-200:], 10)
    assert turns >= 4 and amp > 3 * noise_level


def test_single_noisy_evaluation_does_not_flap():
    m = HealthMonitor(HealthConfig(warmup=0, window=20, every=1, persist=2), echo=False)
    m.diversity = {"diversity": 0.1, "dup_rate": 0.0, "dup_rate_real": 0.0}
    assert m.evaluate(1) == []  # one evaluation below the threshold: not yet
    m.diversity["diversity"] = 0.9
    assert m.evaluate(2) == [] and m.evaluate(3) == []
    m.diversity["diversity"] = 0.1
    m.evaluate(4)
    assert [e["state"] for e in m.evaluate(5)] == ["start"]


def test_vanishing_rule_needs_saturation_and_collapsed_gradient():
    cfg = HealthConfig(warmup=0, window=20, every=5)
    m = HealthMonitor(cfg, echo=False)
    for i in range(1, 41):  # healthy phase: D at chance, strong G gradients
        m.observe(i, {"d_acc": 0.6, "g_grad_norm": 1.0})
        m.evaluate(i)
    assert not m.active
    for i in range(41, 81):  # D wins and G's gradient dies
        m.observe(i, {"d_acc": 1.0, "g_grad_norm": 1e-4})
        m.evaluate(i)
    assert "vanishing_gradients" in m.active
    m2 = HealthMonitor(cfg, echo=False)
    for i in range(1, 81):  # saturated D but G still gets gradients: not this diagnosis
        m2.observe(i, {"d_acc": 1.0, "g_grad_norm": 1.0})
        m2.evaluate(i)
    assert "vanishing_gradients" not in m2.active


HEALTH = ["health.every=25", "health.window=100", "health.warmup=150", "health.diversity_every=25"]


@pytest.mark.slow
def test_wgangp_ring_run_stays_healthy(tmp_path):
    cfg = load_config("ring_wgangp", ["train.steps=600", "train.progress=false", *HEALTH])
    t = Trainer(cfg, tmp_path)
    t.train(progress=False)
    assert _events(tmp_path) == []
    assert t.health.diversity["diversity"] > 0.5


@pytest.mark.slow
def test_minimax_with_overpowered_discriminator_is_diagnosed_vanishing(tmp_path):
    cfg = load_config(
        "ring_gan",
        [
            "loss.name=minimax",
            "train.steps=400",
            "train.d_steps=5",
            "optim.lr_d=0.002",
            "optim.lr_g=0.00002",
            "model.d_width=256",
            "model.g_norm=none",
            "train.ema_beta=0.0",
            "train.progress=false",
            *HEALTH,
        ],
    )
    t = Trainer(cfg, tmp_path)
    t.train(progress=False)
    events = _events(tmp_path)
    assert ("vanishing_gradients", "start") in [(n, s) for n, s, _ in events], events
    start = next(step for n, s, step in events if n == "vanishing_gradients" and s == "start")
    assert start >= 150  # not during warm-up
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any("vanishing_gradients" in r.get("health", "") for r in log if "d_loss" in r)


@pytest.mark.slow
def test_single_point_generator_is_mode_collapse_and_clears(tmp_path):
    cfg = load_config(
        "ring_wgangp", ["train.steps=600", "train.ema_beta=0.0", "train.progress=false", *HEALTH]
    )
    t = Trainer(cfg, tmp_path)
    t.train_step()  # Adam state exists; now pin G to one point
    last = [m for m in t.G.modules() if isinstance(m, torch.nn.Linear)][-1]
    saved = {k: v.clone() for k, v in t.G.state_dict().items()}
    with torch.no_grad():
        last.weight.zero_()
    last.weight.requires_grad_(False)
    cfg.train.steps = 300
    t.train(progress=False)
    events = _events(tmp_path)
    assert [(n, s) for n, s, _ in events] == [("mode_collapse", "start")], events
    h = cfg.health  # the first evaluation after warm-up, held for `persist` evaluations
    assert events[0][2] == h.warmup + h.every * (h.persist - 1)
    # the condition goes away: restore the generator, continue, and the diagnosis clears
    t.G.load_state_dict(saved)
    last.weight.requires_grad_(True)
    t.ema.shadow.load_state_dict(saved)
    cfg.train.steps = 400
    t.train(progress=False)
    events = _events(tmp_path)
    assert ("mode_collapse", "clear") in [(n, s) for n, s, _ in events], events


def test_injected_nan_is_diagnosed_then_clears(tmp_path):
    cfg = load_config(
        "ring_wgangp",
        [
            "train.steps=120",
            "train.progress=false",
            "model.g_width=16",
            "model.d_width=16",
            "health.every=10",
            "health.warmup=1000",
        ],
    )
    t = Trainer(cfg, tmp_path)
    clean = t.data.sample

    def poisoned(n):
        x = clean(n)
        return x * float("nan") if 50 <= t.step < 60 else x

    t.data.sample = poisoned
    t.train(progress=False)
    events = _events(tmp_path)
    assert events[0] == ("non_finite", "start", 51), events
    assert events[1][0:2] == ("non_finite", "clear") and 60 <= events[1][2] <= 80
    assert t.skipped == 10 * cfg.train.d_steps


def test_health_cli_report(tmp_path, capsys):
    from gandist.cli import main

    cfg_args = [
        "--set",
        "train.steps=120",
        "--set",
        "model.g_width=16",
        "--set",
        "model.d_width=16",
        "--set",
        "health.every=10",
        "--set",
        "health.warmup=0",
        "--set",
        "health.diversity_every=10",
        "--no-progress",
    ]
    assert main(["train", "ring_wgangp", "--out", str(tmp_path), *cfg_args]) == 0
    capsys.readouterr()
    assert main(["health", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "health.png").is_file()
    assert "mode_collapse" in out  # an untrained 120-step generator is still a blob at warm-up 0
    assert main(["health", str(tmp_path / "nope")]) == 2
