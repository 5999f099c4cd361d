"""Training health: hysteresis on synthetic sequences, batch-vs-stepwise equivalence, advice that
reads the run's settings, and constructed runs with known outcomes diagnosed at the right time."""

import itertools
import json
import math
import re

import pytest
import torch
from conftest import make_trainer

import gandist.train.coverage_alarm  # noqa: F401  (registers coverage_collapse: every diagnosis is covered, in any order)
from gandist.config import Config, HealthConfig, flat_dict, load_config
from gandist.data.base import Batch
from gandist.train.health import (
    DIAGNOSES,
    HealthMonitor,
    advise,
    oscillation_score,
    pairwise_stats,
)


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


def test_settings_are_dotted_keys():
    s = flat_dict(Config())
    assert s["loss.name"] == Config().loss.name and s["optim.beta1"] == Config().optim.beta1
    assert s["model.name"] == "dcgan" and s["data.name"] == "digits"  # the registered component names
    assert s["health.every"] == HealthConfig().every
    assert {k for k, v in s.items() if isinstance(v, dict)} <= {
        "schedule.batch",
        "schedule.lr",
    }  # mapping values


def test_oscillation_rule_on_synthetic_sequences():
    cfg = HealthConfig(warmup=0, window=200, every=10)
    g = torch.Generator().manual_seed(0)
    noise = (torch.randn(400, generator=g) * 0.05).tolist()
    wave = [1.0 + 0.8 * math.sin(2 * math.pi * i / 40) + n for i, n in enumerate(noise)]
    flat = [1.0 + n for n in noise]
    trend = [2.0 - i / 200 + n for i, n in enumerate(noise)]  # converging: monotone, no turns
    verdict = {}
    for name, seq in (("wave", wave), ("flat", flat), ("trend", trend)):
        m = HealthMonitor(cfg, {}, echo=False)
        for i, v in enumerate(seq, 1):
            m.observe(i, {"g_loss": v, "d_loss": 1.0 + noise[i - 1]})
        verdict[name] = m.conditions(len(seq))["oscillation"]
    assert verdict == {"wave": True, "flat": False, "trend": False}
    turns, amp, noise_level = oscillation_score(wave[-200:], 10)
    assert turns >= 4 and amp > 3 * noise_level
    # G's loss under a Wasserstein critic carries the critic's free offset: the same wave in g_loss
    # alone is no oscillation for wgan-gp, and still one for the non-saturating loss
    for loss, expected in (("wgan-gp", False), ("wgan", False), ("nonsaturating", True), ("hinge", True)):
        m = HealthMonitor(cfg, {"loss.name": loss}, echo=False)
        for i, v in enumerate(wave, 1):
            m.observe(i, {"g_loss": v, "d_loss": 1.0 + noise[i - 1]})
        assert m.conditions(len(wave))["oscillation"] is expected, loss


# -- hysteresis ------------------------------------------------------------------------------------

REAL = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))


def _probe_monitor(spreads, **health):
    """A monitor whose probe returns the real batch scaled by spreads[k] at its k-th call: the sample
    diversity is that spread exactly, so the mode_collapse condition per probe is set by the test."""
    calls = itertools.count()
    # duplicate_excess above 1 switches the near-duplicate rule off: the spread alone decides
    health = {
        "warmup": 0,
        "every": 10,
        "diversity_every": 10,
        "window": 40,
        "persist": 2,
        "duplicate_excess": 1.1,
        **health,
    }
    cfg = HealthConfig(**health)
    return HealthMonitor(cfg, {}, sample=lambda: REAL * spreads[next(calls)], reference=REAL, echo=False)


def _drive_probes(m, n):
    events = []
    for k in range(1, n + 1):
        step = 10 * k
        m.observe(step, {"g_loss": 1.0})
        assert m.due(step)
        events += m.update(step)
    return [(e["state"], e["step"]) for e in events]


def test_condition_flickering_at_threshold_raises_at_most_once():
    # collapse_ratio 0.3: spreads just below (0.29) and just above (0.31) the threshold, in runs of
    # on-probes long enough to raise (2) separated by off-runs shorter than the clear window (4 probes).
    on, off = 0.29, 0.31
    pattern = [on, on, off, on, off, off, on, on, off, off, off, on, on, off, on, off, off, on]
    m = _probe_monitor(pattern)
    assert m.clear_after("mode_collapse") == 4
    assert _drive_probes(m, len(pattern)) == [("start", 20)]
    assert "mode_collapse" in m.active


def test_condition_held_for_persist_raises_and_clears_only_after_a_window():
    on, off = 0.1, 1.0
    # held for persist - 1 probes only: nothing
    assert _drive_probes(_probe_monitor([on, off, on, off, on, off]), 6) == []
    # held for persist (2) probes: raised at the second; absent for 3 probes (< window 40 / 10): still
    # active; absent for 4 probes: cleared at the fourth
    pattern = [off, on, on, off, off, off, on, off, off, off, off, off]
    events = _drive_probes(_probe_monitor(pattern), len(pattern))
    assert events == [("start", 30), ("clear", 110)]


def test_persist_and_window_set_the_hysteresis():
    on, off = 0.1, 1.0
    pattern = [on, on, on, off, off, off, off, off, off, off]
    assert _drive_probes(_probe_monitor(pattern, persist=3), 10) == [("start", 30), ("clear", 70)]
    m = _probe_monitor(pattern)
    m.cfg.window = 60  # 6 probes without the condition before it clears
    assert _drive_probes(m, 10) == [("start", 20), ("clear", 90)]


def test_flickering_loss_statistic_raises_at_most_once():
    # D accuracy swinging around the saturation threshold (period 30 steps) with a collapsed G
    # gradient: the raw rule's verdict flips every few evaluations; the diagnosis starts once.
    cfg = HealthConfig(warmup=0, window=20, every=5, persist=2)
    m, raw = HealthMonitor(cfg, {}, echo=False), HealthMonitor(cfg, {}, echo=False)
    verdicts, starts = [], 0
    for i in range(1, 801):
        acc = cfg.saturated_accuracy + 0.03 * math.sin(2 * math.pi * i / 30)
        stats = {"d_acc": acc, "g_grad_norm": 1.0 if i <= 40 else 1e-4}
        m.observe(i, stats)
        raw.observe(i, stats)
        if m.due(i):
            verdicts.append(raw.conditions(i)["vanishing_gradients"])
            starts += sum(e["state"] == "start" for e in m.update(i))
    # premise: the verdict flickers, faster than the clear window
    flips = sum(a != b for a, b in zip(verdicts, verdicts[1:]))
    off_runs = [len(r) for r in "".join("x" if v else " " for v in verdicts[20:]).split("x") if r]
    assert flips >= 20 and max(off_runs) < m.clear_after("vanishing_gradients"), (flips, off_runs)
    assert starts == 1


def test_non_finite_is_immediate():
    m = HealthMonitor(HealthConfig(warmup=0, every=10), {}, echo=False)
    events = []
    for i in range(1, 41):
        m.observe(i, {"g_loss": float("nan") if i == 13 else 1.0})
        if m.due(i) or i == 13:
            events += [(e["state"], e["step"]) for e in m.update(i, nonfinite=i == 13)]
    # raised at the step itself (off the evaluation grid), cleared at the first evaluation `every`
    # steps later without one
    assert events == [("start", 13), ("clear", 30)]


# -- batch vs stepwise -----------------------------------------------------------------------------


def _synthetic_run(n=1200):
    """Per-step statistics with an oscillating stretch, a saturated-D stretch and a NaN burst, and a
    probe whose spread collapses in the middle: every diagnosis starts and clears at least once."""
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(n, 4, generator=g).mul(0.05).tolist()
    steps = []
    for i in range(1, n + 1):
        e = noise[i - 1]
        wave = 0.8 * math.sin(2 * math.pi * i / 40) if 200 <= i < 500 else 0.0
        saturated = 600 <= i < 800
        stats = {
            "g_loss": 1.0 + wave + e[0],
            "d_loss": 1.0 + e[1],
            "d_acc": (1.0 if saturated else 0.6) + 0.01 * e[2],
            "g_grad_norm": (1e-4 if saturated else 1.0) * (1 + e[3]),
        }
        if 900 <= i < 905:
            stats["d_loss"] = float("nan")
        steps.append((i, stats, not math.isfinite(sum(stats.values()))))
    return steps


def _sample_fn():
    calls = itertools.count()
    return lambda: REAL * (0.1 if 4 <= next(calls) < 9 else 1.0)


def _run(mode):
    cfg = HealthConfig(warmup=100, every=10, diversity_every=30, window=100, persist=2)
    m = HealthMonitor(cfg, {}, sample=_sample_fn(), reference=REAL, echo=False)
    pending, records = [], []
    for step, stats, nonfinite in _synthetic_run():
        if mode == "stepwise":
            m.observe(step, stats)
            if m.due(step) or nonfinite:
                m.update(step, nonfinite)
        elif mode == "update_every_step":  # update must be a no-op where nothing is due
            m.observe(step, stats)
            m.update(step, nonfinite)
        else:  # the rewritten loop: statistics read back only where due or non-finite
            pending.append((step, stats))
            if m.due(step) or nonfinite:
                for s, st in pending:
                    m.observe(s, st)
                pending.clear()
                m.update(step, nonfinite)
        if step % 50 == 0:
            record = {"step": step}
            m.annotate(record)
            records.append(record)
    return m.events, records


def test_batched_observe_gives_the_same_decisions_as_stepwise():
    events, records = _run("stepwise")
    names = {(e["diagnosis"], e["state"]) for e in events}
    from gandist.train.coverage_alarm import (
        NAME as COVERAGE,  # CoverageMonitor's (tests/test_coverage_alarm.py)
    )

    for d in (d for d in DIAGNOSES if d != COVERAGE):  # the comparison covers every diagnosis raising and clearing
        assert {(d, "start"), (d, "clear")} <= names, (d, sorted(names))
    assert _run("batched") == (events, records)
    assert _run("update_every_step") == (events, records)


# -- advice ----------------------------------------------------------------------------------------

BASE = flat_dict(Config())

# Settings covering what each remedy reads: every loss, Adam momentum at 0.9/0.5/0, both decays, one
# and several D steps, minibatch std off/on, R1 off/on, EMA off/weak/strong and in its other spelling,
# both latents and both model families, and a family without some keys.
VARIANTS = {
    "loss.name": ["minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge"],
    "optim.beta1": [0.9, 0.5, 0.0],
    "optim.decay": ["none", "linear"],
    "train.d_steps": [1, 5],
    "model.minibatch_std": [0, 2, 4],
    "loss.r1_gamma": [0.0, 10.0],
    "loss.gp_weight": [0.1, 10.0],
    "train.ema_beta": [0.0, 0.99, 0.999],
    "train.ema_kimg": [0.0, 10.0],
    "model.latent": ["normal", "mixture"],
    "model.name": ["mlp", "dcgan"],
    "loss.drift": [0.0, 0.001],
}


def _settings_table():
    table = [dict(BASE)]
    for key, values in VARIANTS.items():
        for v in values:
            table.append({**BASE, key: v})
    for loss, beta1, decay, k, mbstd, r1, ema in itertools.product(
        ["minimax", "nonsaturating", "wgan-gp"],
        [0.5, 0.0],
        ["none", "linear"],
        [1, 5],
        [0, 4],
        [0.0, 10.0],
        [0.99, 0.999],
    ):
        table.append({**BASE, "loss.name": loss, "optim.beta1": beta1, "optim.decay": decay, "train.d_steps": k,
                      "model.minibatch_std": mbstd, "loss.r1_gamma": r1, "train.ema_beta": ema})  # fmt: skip
    other_family = {
        k: v for k, v in BASE.items() if k not in ("model.minibatch_std", "model.dropout", "train.ema_beta")
    }
    table += [other_family, {**other_family, "train.ema_kimg": 0.0}, {**other_family, "train.ema_kimg": 10.0}]
    table.append({**BASE, "optim.name": "rmsprop"})
    return table


def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
        )
    return a == b


# An expert would not say these to a run whose settings already satisfy the predicate.
NEVER = [
    ("loss.name", lambda s: s.get("loss.name") == "wgan-gp", lambda v: v == "wgan-gp"),
    ("loss.name", lambda s: s.get("loss.name") != "minimax", lambda v: v == "nonsaturating"),
    ("model.minibatch_std", lambda s: s.get("model.minibatch_std", 0) >= 2, lambda v: True),
    ("model.minibatch_std", lambda s: "model.minibatch_std" not in s, lambda v: True),
    ("optim.beta1", lambda s: s.get("optim.beta1") == 0.0, lambda v: True),
    ("optim.beta1", lambda s: s.get("optim.name") != "adam", lambda v: True),
    ("optim.decay", lambda s: s.get("optim.decay") == "linear", lambda v: True),
    ("train.ema_beta", lambda s: (s.get("train.ema_beta") or 0) >= 0.999, lambda v: True),
    ("train.ema_beta", lambda s: (s.get("train.ema_kimg") or 0) > 0, lambda v: True),  # kept as a half-life
    ("train.ema_kimg", lambda s: (s.get("train.ema_kimg") or 0) > 0 or "train.ema_beta" in s,
     lambda v: v is not None),  # only cleared, where the advice spells G_ema as a decay  # fmt: skip
    ("model.latent", lambda s: s.get("model.latent") == "mixture", lambda v: True),
    ("loss.r1_gamma", lambda s: s.get("loss.name") in ("wgan", "wgan-gp"), lambda v: True),
    ("model.dropout", lambda s: s.get("model.name") != "mlp", lambda v: True),
]


@pytest.mark.parametrize("name", sorted(DIAGNOSES))
def test_advice_never_repeats_the_current_setting(name):
    for settings in _settings_table():
        advice = advise(name, settings)
        assert advice, f"{name}: no remedy left for {settings}"
        for remedy in DIAGNOSES[name].remedies:  # each remedy recommends only the settings it names
            a = remedy.propose(settings)
            assert a is None or set(a.sets) <= set(remedy.keys), (remedy.keys, a)
        for a in advice:
            written = dict(re.findall(r"\b([a-z_0-9]+\.[a-z_0-9]+)=([^\s,;)]+)", a.text))
            assert set(written) == set(a.sets), (a.text, a.sets)  # the text names what it sets
            # a remedy that also changes the loss is judged on the loss it recommends (rpgan with R1 is no
            # advice of R1 to a Wasserstein critic)
            after = {**settings, "loss.name": a.sets.get("loss.name", settings.get("loss.name"))}
            for key, value in a.sets.items():
                assert not (key in settings and _same(settings[key], value)), (name, key, value, a.text)
                for setting, holds, forbidden in NEVER:
                    if key == setting and holds(settings if key == "loss.name" else after):
                        assert not forbidden(value), (name, key, value, settings.get(key), a.text)


def test_advice_moves_on_to_the_next_remedy():
    collapse = {**BASE, "model.minibatch_std": 4, "loss.name": "wgan-gp", "train.d_steps": 5}
    first = advise("mode_collapse", collapse)[0].sets
    assert first == {"model.latent": "mixture"}
    assert advise("mode_collapse", {**collapse, "model.latent": "mixture"})[0].sets == {"train.d_steps": 10}
    assert advise("mode_collapse", {**BASE, "model.minibatch_std": 0})[0].sets == {"model.minibatch_std": 4}
    assert advise("vanishing_gradients", {**BASE, "loss.name": "minimax"})[0].sets == {
        "loss.name": "nonsaturating"
    }
    beta = [a.sets.get("optim.beta1") for a in advise("oscillation", {**BASE, "optim.beta1": 0.9})]
    assert 0.5 in beta
    beta = [a.sets.get("optim.beta1") for a in advise("oscillation", {**BASE, "optim.beta1": 0.5})]
    assert 0.0 in beta
    gp = [a.sets for a in advise("oscillation", {**BASE, "loss.name": "wgan-gp", "loss.gp_weight": 0.1})]
    assert {"loss.gp_weight": 1.0} in gp


def test_start_event_and_echo_use_the_filtered_remedies(capsys):
    settings = {**BASE, "loss.name": "wgan-gp", "model.minibatch_std": 4, "train.d_steps": 5}
    m = _probe_monitor([0.1] * 4)
    m.settings, m.echo = settings, True
    _drive_probes(m, 2)
    (event,) = m.events
    assert event["remedies"] == [a.text for a in advise("mode_collapse", settings)]
    assert event["suggested"] == [a.sets for a in advise("mode_collapse", settings)]
    err = capsys.readouterr().err
    assert "model.latent=mixture" in err and "wgan-gp" not in err and "minibatch_std" not in err


# -- constructed runs ------------------------------------------------------------------------------

HEALTH = ["health.every=25", "health.window=100", "health.warmup=150", "health.diversity_every=25"]


@pytest.mark.slow
@pytest.mark.learning  # the run tests/test_learning.py reads: one lane trains it
def test_wgangp_ring_run_stays_healthy(ring_wgangp_600):
    # the shared run is this test's run: ring_wgangp, 600 steps, this module's health cadence
    assert ring_wgangp_600.trainer.cfg == load_config(
        "ring_wgangp", ["train.steps=600", "train.progress=false", *HEALTH]
    )
    assert _events(ring_wgangp_600.run_dir) == []
    assert ring_wgangp_600.trainer.health.diversity["diversity"] > 0.5


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
    t = make_trainer(cfg, tmp_path)
    t.train(progress=False)
    events = _events(tmp_path)
    assert ("vanishing_gradients", "start") in [(n, s) for n, s, _ in events], events
    start = next(step for n, s, step in events if n == "vanishing_gradients" and s == "start")
    assert start >= 150  # not during warm-up
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any("vanishing_gradients" in r.get("health", "") for r in log if "d_loss" in r)
    (event,) = [r for r in log if r.get("diagnosis") == "vanishing_gradients" and r["state"] == "start"]
    assert event["suggested"][0] == {"loss.name": "nonsaturating"}  # the run uses minimax
    assert {"train.d_steps": 2} in event["suggested"]  # fewer than its 5 D steps


@pytest.mark.slow
def test_single_point_generator_is_mode_collapse_and_clears(tmp_path):
    cfg = load_config(
        "ring_wgangp", ["train.steps=600", "train.ema_beta=0.0", "train.progress=false", *HEALTH]
    )
    t = make_trainer(cfg, tmp_path)
    t.train_step()  # Adam state exists; now pin G to one point
    last = [m for m in t.nets["G"].modules() if isinstance(m, torch.nn.Linear)][-1]
    saved = {k: v.clone() for k, v in t.nets["G"].state_dict().items()}
    with torch.no_grad():
        last.weight.zero_()
    last.weight.requires_grad_(False)
    cfg.train.steps = 300
    t.train(progress=False)
    events = _events(tmp_path)
    assert [(n, s) for n, s, _ in events] == [("mode_collapse", "start")], events
    h = cfg.health  # the first probe after warm-up, held for `persist` probes
    assert events[0][2] == h.warmup + h.diversity_every * (h.persist - 1)
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    (event,) = [r for r in log if r.get("event") == "health"]
    assert all(s.get("loss.name") != "wgan-gp" for s in event["suggested"])  # the run uses WGAN-GP
    assert event["suggested"][0] == {"model.minibatch_std": 4}
    # the condition goes away: restore the generator, continue, and the diagnosis clears only after
    # a whole window of probes without it
    t.nets["G"].load_state_dict(saved)
    last.weight.requires_grad_(True)
    t.sample_net().load_state_dict(saved)
    cfg.train.steps = 450
    t.train(progress=False)
    events = _events(tmp_path)
    assert [(n, s) for n, s, _ in events] == [("mode_collapse", "start"), ("mode_collapse", "clear")], events
    assert events[1][2] == 300 + h.diversity_every * t.health.clear_after("mode_collapse")


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
    t = make_trainer(cfg, tmp_path)
    clean = t.data.next_batch

    def poisoned(n):
        b = clean(n)
        return Batch(b.x * float("nan")) if 50 <= t.step < 60 else b

    t.data.next_batch = poisoned
    t.train(progress=False)
    events = _events(tmp_path)
    # steps 51-60 are skipped on the device; the monitor learns of it at its next read (every 10 steps)
    assert events[0] == ("non_finite", "start", 60), events
    assert events[1][0:2] == ("non_finite", "clear") and 60 < events[1][2] <= 80
    assert int(t.skipped) == 10 * cfg.train.d_steps


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
    assert "wgan-gp" not in out.split("mode_collapse", 1)[1]  # remedies filtered for a WGAN-GP run
    assert main(["health", str(tmp_path / "nope")]) == 2


def _advice_bases():
    """Every shipped CPU config, and the default DCGAN (batch norm in D) with every registered loss."""
    from gandist.losses import LOSSES
    from gandist.resources import shipped_configs

    shipped = [(n, []) for n in sorted(shipped_configs()) if not n.endswith(("_256", "_1024"))]
    return shipped + [(None, [f"loss.name={loss}"]) for loss in sorted(LOSSES)]


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("name", sorted(DIAGNOSES))
def test_following_the_advice_starts_a_run_the_checks_accept(name, world):
    """A remedy that adds a gradient penalty to a run whose D has batch norm (WGAN-GP in any run, R1 or R2
    over several ranks) moves D to layer norm too, or following it would end in a refusal."""
    from gandist.errors import UserError
    from gandist.train.loop import check_world_size

    checked = 0
    for base, overrides in _advice_bases():
        try:
            cfg = load_config(base, overrides)
            check_world_size(cfg, world)
        except UserError:
            continue  # refused as it stands: not a run to advise
        settings = {**flat_dict(cfg), "run.world_size": world}
        for a in advise(name, settings):
            if not a.sets:
                continue
            cli = ["null" if v is None else v for v in a.sets.values()]
            followed = load_config(base, overrides + [f"{k}={v}" for k, v in zip(a.sets, cli)])
            check_world_size(followed, world)  # raises (a UserError) if the advice led to a refusal
            checked += 1
    assert checked > 0
