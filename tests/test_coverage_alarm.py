"""The live coverage alarm: raised on a collapsed generator, silent on a healthy one, cleared on recovery,
with advice read from what the run's config declares."""

import copy

import pytest
import torch
from conftest import make_trainer

from gandist.config import HealthConfig, flat_dict, load_config
from gandist.train.coverage_alarm import NAME, CoverageMonitor, health_monitor_class
from gandist.train.health import HealthMonitor, advise


def _settings(*overrides):
    base = ["model.name=dcgan", "data.name=digits", "data.resolution=16", "data.batch_size=8"]
    return flat_dict(load_config(None, base + list(overrides)))


def test_advice_reads_capabilities_in_order_and_skips_what_is_in_effect():
    texts = [a.sets for a in advise(NAME, _settings())]
    assert texts[:4] == [
        {"model.pack": 2},
        {"loss.name": "rpgan", "loss.r1_gamma": 1.0, "loss.r2_gamma": 1.0},
        {"model.minibatch_std": 4},
        {"loss.feature_matching": 1.0},
    ]
    done = _settings(
        "model.pack=4",
        "loss.name=rpgan",
        "loss.r1_gamma=1",
        "loss.r2_gamma=1",
        "model.minibatch_std=4",
        "loss.feature_matching=1",
    )
    assert [a.sets for a in advise(NAME, done)] == [{}]  # only "check the data" is left
    # rpgan without R2: add it; a pack of 2: go to 4
    part = [a.sets for a in advise(NAME, _settings("model.pack=2", "loss.name=rpgan", "loss.r1_gamma=10"))]
    assert part[:2] == [{"model.pack": 4}, {"loss.r1_gamma": 10.0, "loss.r2_gamma": 1.0}]
    # a family without packing or D features (the MLP) is offered neither, by what it declares
    mlp = [a.sets for a in advise(NAME, _settings("model.name=mlp"))]
    assert not any("model.pack" in s or "loss.feature_matching" in s for s in mlp)
    assert {"loss.name": "rpgan", "loss.r1_gamma": 1.0, "loss.r2_gamma": 1.0} in mlp
    for a in advise(NAME, _settings()):
        assert "dcgan" not in a.text.lower() and "mlp" not in a.text.lower()


def test_the_coverage_monitor_is_used_on_digit_data_only():
    assert health_monitor_class(_settings()) is CoverageMonitor
    assert health_monitor_class(_settings("data.name=stacked_digits")) is CoverageMonitor
    assert health_monitor_class({"data.name": "ring"}) is HealthMonitor


@pytest.mark.slow
def test_alarm_on_a_constant_generator_silent_on_the_data_and_cleared_on_recovery():
    from gandist.data.digits import load_digits_tensor

    images, labels = load_digits_tensor(16)
    reals, others = images[:128], images[128:256]
    constant = images[labels == 7][:1].expand(128, -1, -1, -1)  # a G made constant: one seven
    cfg = HealthConfig(every=1, diversity_every=1, warmup=0, persist=2, window=2)
    shown = {"x": constant}
    mon = CoverageMonitor(cfg, _settings(), sample=lambda: shown["x"], reference=reals, echo=False)
    events = [e for step in range(1, 4) for e in mon.update(step) if e["diagnosis"] == NAME]
    assert [(e["step"], e["state"]) for e in events] == [(2, "start")]
    assert events[0]["probe_covered"] == 1.0 and events[0]["probe_covered_real"] == 10.0
    assert events[0]["suggested"][0] == {"model.pack": 2}
    shown["x"] = others  # the generator recovers: other real digits
    events = [e for step in range(4, 8) for e in mon.update(step) if e["diagnosis"] == NAME]
    assert [(e["step"], e["state"]) for e in events] == [(5, "clear")]

    healthy = CoverageMonitor(cfg, _settings(), sample=lambda: others, reference=reals, echo=False)
    assert not [e for step in range(1, 8) for e in healthy.update(step) if e["diagnosis"] == NAME]
    assert healthy.diversity["coverage"] >= 0.9


@pytest.mark.slow
def test_training_run_with_a_constant_generator_raises_the_alarm(tiny_cfg, tmp_path):

    cfg = tiny_cfg(
        "data.resolution=16",
        "health.warmup=0",
        "health.every=2",
        "health.diversity_every=2",
        "health.persist=2",
        "health.diversity_n=64",
        "train.steps=6",
    )
    t = make_trainer(cfg, tmp_path)
    assert isinstance(t.health, CoverageMonitor)
    G = copy.deepcopy(t.sample_net())
    with torch.no_grad():  # the last layer's weights zeroed: every sample is the same image (its bias)
        last = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
        last.weight.zero_()
        last.bias.uniform_(-1, 1)
    t.sample_net = lambda: G  # the probe reads this constant G while training goes on
    t.train(progress=False)
    starts = [e for e in t.health.events if e["diagnosis"] == NAME and e["state"] == "start"]
    assert starts and starts[0]["step"] == 4 and starts[0]["probe_covered"] == 1.0
    assert "model.pack=2" in starts[0]["remedies"][0]
    log = (tmp_path / "log.jsonl").read_text()
    assert NAME in log and '"coverage"' in log


def test_health_report_knows_the_coverage_diagnosis(tmp_path):
    from gandist.train.health_report import summary_text

    events = [
        {
            "step": 400,
            "event": "health",
            "diagnosis": NAME,
            "state": "start",
            "remedies": ["pack (model.pack=2)"],
        },
        {"step": 900, "event": "health", "diagnosis": NAME, "state": "clear", "since": 400},
    ]
    text = summary_text(tmp_path, [{"step": 1000}], events)
    assert f"- {NAME}: mode collapse: the samples cover far fewer classes" in text
    assert "steps 400-900" in text and "pack (model.pack=2)" in text
