"""Training health: watch a run for the classic GAN failure modes and say what to do.

Fed by the training loop with statistics it computes anyway (losses, mean D outputs, D accuracy,
gradient norms), plus a diversity probe every `health.diversity_every` steps: the samples of G_ema (of G
where the run keeps none) on a fixed batch of latents (the `sample` function the loop hands over), their
mean pairwise distance and near-duplicate rate in pixel space, next to the same statistics of a fixed batch
of real data (`reference`). Diagnoses:

  vanishing_gradients  D classifies (almost) everything right and ||grad G|| has collapsed
  oscillation          the losses swing up and down by far more than their noise, without settling,
                       and the swing repeats (the detrended loss is anti-correlated half a swing later)
  mode_collapse        samples far less diverse than real data, or many near-duplicates
  non_finite           NaN or Inf in a loss (the loop skipped those updates)

How the loop drives it (statistics stay on the device inside a step, DESIGN.md):

    settings = {**config.flat_dict(cfg), "run.world_size": world}
    monitor = HealthMonitor(cfg.health, settings, sample, reference, log_fn)
    after each step: if monitor.due(step) or the step was skipped as non-finite, read the pending
        per-step statistics back in one sync, monitor.observe(s, stats) for each pending step s in
        order, then monitor.update(step, nonfinite)
    each log record: monitor.annotate(record)

`observe` only records; every decision is taken in `update`, so handing the statistics over step by
step or in batches before `update` gives the same events.

Hysteresis. A statistical diagnosis is raised once its condition has held at `health.persist`
observations in a row, and cleared only once it has been absent over a whole `health.window` of steps
(the span of history the conditions look at; at least `persist` observations). An observation is a
regular evaluation (every `health.every` steps) for the loss-based diagnoses and a fresh diversity
probe for mode_collapse, whose evidence changes only when the probe runs. A condition flickering at
its threshold, with gaps shorter than the window, is therefore raised once and stays raised while it
flickers. non_finite is raised at the step it happens and cleared at the first evaluation `every`
steps later without one. With the defaults (every 25, persist 2, window 200, probe every 100): a loss
diagnosis starts after 2 evaluations (25 steps apart) and clears after 8 without it; mode_collapse
starts after 2 probes and clears after 2 probes without it.

Advice reads the run's settings: each diagnosis has an ordered list of remedies, each remedy names the
setting it recommends and returns nothing when that is already in effect, so the list a run sees
starts with the first remedy it has not tried, with concrete values (halve this learning rate, from
0.0005 to 0.00025).

Everything here is local arithmetic on host floats: no collectives and no device synchronisation
beyond the probe's one forward pass and its read-back, every `diversity_every` steps.
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from gandist.config import HealthConfig

Settings = Mapping[str, Any]


# -------------------------------------------------------------------------------------------------
# Advice: ordered remedies that read the run's settings


@dataclass(frozen=True)
class Advice:
    """One remedy made concrete for a run: the settings to change (dotted key -> new value; empty for
    advice outside the config) and the sentence to print, which names every `key=value` it sets."""

    sets: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Remedy:
    """An entry of a diagnosis's ordered remedy list. `keys`: the settings it may recommend (empty:
    advice outside the config, always given). `propose(settings)` returns the advice for a run with
    these settings, or None when the remedy is already in effect there, or cannot be expressed because
    the run's config has no such key (another model family, another spelling)."""

    keys: tuple[str, ...]
    propose: Callable[[Settings], Advice | None]


def _fmt(v: Any) -> str:
    if v is None:
        return "null"  # as `--set` and YAML spell it
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _kv(sets: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sets.items())


def _num(s: Settings, key: str) -> float | None:
    v = s.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _advice(text: str, sets: dict[str, Any]) -> Advice:
    """`text` has a {sets} slot, filled with the `key=value` pairs of `sets`."""
    return Advice(sets, text.format(sets=_kv(sets)))


def _fixed(text: str) -> Remedy:
    return Remedy((), lambda s: Advice({}, text))


def _loss(s: Mapping[str, Any]):
    """The run's adversarial loss class from the loss registry, or None (not set, or not a classic loss).
    The advice reads the loss's declared properties and never names a loss itself."""
    from gandist.losses import LOSSES

    return LOSSES.get(s.get("loss.name"))


def _gp_critic() -> str:
    """The registered loss that makes D a critic with the gradient penalty."""
    from gandist.losses import LOSSES

    return next(name for name, loss in LOSSES.items() if loss.gradient_penalty)


def _nonsaturating(s: Settings) -> Advice | None:
    # Only a loss whose generator term saturates when D wins declares an `unsaturated` alternative
    # (minimax, Goodfellow et al. 2014, Sec. 3); the non-saturating, least-squares, hinge and Wasserstein
    # losses already keep G's gradient alive.
    loss = _loss(s)
    if loss is None or loss.unsaturated is None:
        return None
    return _advice(
        f"use the non-saturating generator loss ({{sets}}) instead of {s.get('loss.name')}",
        {"loss.name": loss.unsaturated},
    )


def _fewer_d_steps(s: Settings) -> Advice | None:
    k = s.get("train.d_steps")
    if not isinstance(k, int) or k <= 1:
        return None
    return _advice(f"take fewer D steps per G step ({{sets}}; now {k})", {"train.d_steps": max(1, k // 2)})


def _lower_lr_d(s: Settings) -> Advice | None:
    lr = _num(s, "optim.lr_d")
    if lr is None or lr <= 0:
        return None
    return _advice(
        f"halve the discriminator's learning rate ({{sets}}; now {_fmt(lr)})", {"optim.lr_d": lr / 2}
    )


def _lower_lr_g(s: Settings) -> Advice | None:
    lr = _num(s, "optim.lr_g")
    if lr is None or lr <= 0:
        return None
    return _advice(f"halve the generator's learning rate ({{sets}}; now {_fmt(lr)})", {"optim.lr_g": lr / 2})


def _lower_both_lrs(s: Settings) -> Advice | None:
    g, d = _num(s, "optim.lr_g"), _num(s, "optim.lr_d")
    if g is None or d is None or g <= 0 or d <= 0:
        return None
    return _advice(
        f"halve both learning rates ({{sets}}; now {_fmt(g)} and {_fmt(d)})",
        {"optim.lr_g": g / 2, "optim.lr_d": d / 2},
    )


def _linear_decay(s: Settings) -> Advice | None:
    decay = s.get("optim.decay")
    if decay is None or decay == "linear":
        return None
    return _advice(
        "let both learning rates fall linearly to 0 over the run ({sets})", {"optim.decay": "linear"}
    )


def _lower_beta1(s: Settings) -> Advice | None:
    # Less Adam momentum damps the rotation of simultaneous gradient play: DCGAN lowered beta1 from 0.9
    # to 0.5 (Radford et al. 2016), WGAN-GP and StyleGAN go to 0 (Gulrajani et al. 2017; Karras et al. 2019).
    beta1 = _num(s, "optim.beta1")
    if s.get("optim.name", "adam") != "adam" or beta1 is None or beta1 <= 0.0:
        return None
    new = 0.5 if beta1 > 0.5 else 0.0
    return _advice(f"lower Adam's momentum ({{sets}}; now {_fmt(beta1)})", {"optim.beta1": new})


def _r1(s: Settings, strengthen: bool) -> Advice | None:
    """R1 on reals (Mescheder et al. 2018; gamma 10 is their default). A run that has it already is told
    to strengthen it tenfold when `strengthen`, else nothing."""
    gamma = _num(s, "loss.r1_gamma")
    if gamma is None:
        return None
    if gamma <= 0:
        return _advice("regularise D with R1 on the reals ({sets})", {"loss.r1_gamma": 10.0})
    if not strengthen:
        return None
    return _advice(f"strengthen R1 ({{sets}}; now {_fmt(gamma)})", {"loss.r1_gamma": gamma * 10})


def _penalty(s: Settings) -> Advice | None:
    """A smoother D: the gradient penalty for Wasserstein critics (stronger if it is on already, up to
    the paper's lambda 10, Gulrajani et al. 2017), R1 for the classifying losses."""
    loss = _loss(s)
    if loss is not None and loss.penalised:
        return _advice(
            "replace weight clipping with the gradient penalty ({sets})", {"loss.name": loss.penalised}
        )
    if loss is not None and loss.gradient_penalty:
        w = _num(s, "loss.gp_weight")
        if w is None or w >= 10.0:
            return None
        return _advice(
            f"strengthen the gradient penalty ({{sets}}; now {_fmt(w)})",
            {"loss.gp_weight": min(10.0, w * 10)},
        )
    return _r1(s, strengthen=True)


def _is_critic(s: Mapping[str, Any]) -> bool:
    """Whether the run's loss makes D a critic that scores rather than classifies (the loss registry's
    `decision_boundary` is None: WGAN, WGAN-GP)."""
    loss = _loss(s)
    return loss is not None and loss.decision_boundary is None


def _penalty_vanishing(s: Settings) -> Advice | None:
    return _penalty(s) if _is_critic(s) else _r1(s, strengthen=True)


def _smaller_d(s: Settings) -> Advice | None:
    w = s.get("model.d_width")
    if not isinstance(w, int) or w < 16:
        return None
    return _advice(f"shrink D's capacity ({{sets}}; now {w})", {"model.d_width": w // 2})


def _dropout(s: Settings) -> Advice | None:
    # Input/hidden dropout (Goodfellow et al. 2014), for a model whose config section declares it.
    import dataclasses

    from gandist.config import _components

    section = _components()["model"].get(s.get("model.name"))
    p = _num(s, "model.dropout")
    if section is None or "dropout" not in {f.name for f in dataclasses.fields(section)}:
        return None
    if p is None or p >= 0.5:
        return None
    return _advice(f"add dropout to D ({{sets}}; now {_fmt(p)})", {"model.dropout": 0.5})


def _ema(s: Settings) -> Advice | None:
    # G_ema in either spelling: a decay per step (train.ema_beta, PGGAN's 0.999) or a half-life in thousands
    # of images (train.ema_kimg, StyleGAN's 10). A run without one (unset or 0: the classic GANs) is advised
    # PGGAN's per-step decay, or the half-life where the settings have no ema_beta.
    beta, kimg = _num(s, "train.ema_beta"), _num(s, "train.ema_kimg")
    if beta:
        if beta >= 0.999:
            return None
        return _advice(
            f"average the generator and judge G_ema ({{sets}}; now {_fmt(beta)})", {"train.ema_beta": 0.999}
        )
    if kimg:
        return None
    if "train.ema_beta" in s:  # a half-life of 0 (off) gives way to the decay: one spelling at a time
        sets = {"train.ema_beta": 0.999, **({"train.ema_kimg": None} if kimg is not None else {})}
        return _advice("average the generator and judge G_ema ({sets})", sets)
    return _advice("average the generator and judge G_ema ({sets})", {"train.ema_kimg": 10.0})


def _minibatch_std(s: Settings) -> Advice | None:
    # Group size 4 (Karras et al. 2018, Sec. 3); a group of 1 has no spread to measure, so < 2 is off.
    # Each rank groups its own samples: the group must divide every per-rank batch larger than it
    # (`check_world_size`), so a batch of 50 per rank gets groups of 2.
    g = s.get("model.minibatch_std")
    if not isinstance(g, int) or g >= 2:
        return None
    world = int(s.get("run.world_size", 1))
    batches = [s.get("data.batch_size"), *(s.get("schedule.batch") or {}).values()]
    local = [b // world for b in batches if isinstance(b, int)]
    group = next((n for n in (4, 3, 2) if all(b <= n or b % n == 0 for b in local)), None)
    if group is None:
        return None
    return _advice(
        "let D see the batch's spread: minibatch standard deviation ({sets})", {"model.minibatch_std": group}
    )


def _mixture_latent(s: Settings) -> Advice | None:
    if s.get("model.latent") != "normal":
        return None
    return _advice(
        "feed G a mixture latent, so it need not bridge disconnected modes ({sets})",
        {"model.latent": "mixture"},
    )


def _wgan_gp(s: Settings) -> Advice | None:
    loss, k = _loss(s), s.get("train.d_steps")
    if s.get("loss.name") is None or (loss is not None and loss.gradient_penalty):
        return None
    if isinstance(k, int) and k < 5:  # n_critic 5, Gulrajani et al. 2017, Alg. 1
        return _advice(
            "use a Wasserstein critic with gradient penalty ({sets})",
            {"loss.name": _gp_critic(), "train.d_steps": 5},
        )
    return _advice("use a Wasserstein critic with gradient penalty ({sets})", {"loss.name": _gp_critic()})


def _more_d_steps(s: Settings) -> Advice | None:
    k = s.get("train.d_steps")
    if not isinstance(k, int) or k < 1:
        return None
    return _advice(f"train D more per G step ({{sets}}; now {k})", {"train.d_steps": 2 * k})


def _drift(s: Settings) -> Advice | None:
    # A Wasserstein critic's outputs are unbounded; the drift term eps * E[D(x)^2] keeps them near 0
    # (epsilon_drift 0.001, PGGAN Sec. A.1).
    d = _num(s, "loss.drift")
    if not _is_critic(s) or d is None or d > 0:
        return None
    return _advice("keep the critic's outputs near 0 with the drift term ({sets})", {"loss.drift": 0.001})


def _stabilise_d(s: Settings) -> Advice | None:
    if _is_critic(s):
        return _drift(s)
    return _r1(s, strengthen=False)


@dataclass(frozen=True)
class Diagnosis:
    name: str
    message: str
    remedies: tuple[Remedy, ...]


DIAGNOSES = {
    d.name: d
    for d in (
        Diagnosis(
            "vanishing_gradients",
            "discriminator saturated, generator gradients vanishing",
            (
                Remedy(("loss.name",), _nonsaturating),
                Remedy(("train.d_steps",), _fewer_d_steps),
                Remedy(("optim.lr_d",), _lower_lr_d),
                Remedy(("loss.r1_gamma", "loss.name", "loss.gp_weight"), _penalty_vanishing),
                Remedy(("model.d_width",), _smaller_d),
                Remedy(("model.dropout",), _dropout),
            ),
        ),
        Diagnosis(
            "oscillation",
            "losses oscillating, not converging",
            (
                Remedy(("optim.lr_g", "optim.lr_d"), _lower_both_lrs),
                Remedy(("optim.decay",), _linear_decay),
                Remedy(("optim.beta1",), _lower_beta1),
                Remedy(("loss.r1_gamma", "loss.name", "loss.gp_weight"), _penalty),
                Remedy(("train.ema_beta", "train.ema_kimg"), _ema),
            ),
        ),
        Diagnosis(
            "mode_collapse",
            "mode collapse suspected: samples much less diverse than the data",
            (
                Remedy(("model.minibatch_std",), _minibatch_std),
                Remedy(("model.latent",), _mixture_latent),
                Remedy(("loss.name", "train.d_steps"), _wgan_gp),
                Remedy(("train.d_steps",), _more_d_steps),
                Remedy(("optim.lr_g",), _lower_lr_g),
                _fixed("check the data: a dataset of near-identical samples also looks collapsed"),
            ),
        ),
        Diagnosis(
            "non_finite",
            "non-finite values (NaN/Inf) in the losses; those updates were skipped",
            (
                Remedy(("optim.lr_g", "optim.lr_d"), _lower_both_lrs),
                _fixed("check the data for NaN/Inf or unnormalised values"),
                Remedy(("loss.r1_gamma", "loss.drift"), _stabilise_d),
                _fixed("resume from the last good checkpoint (--resume PATH)"),
            ),
        ),
    )
}


def _refusal(s: Settings, sets: Mapping[str, Any]) -> str | None:
    """Why a run with settings `s` changed by `sets` would be refused before it starts, or None: the
    settings are rebuilt into a config and meet the checks a run meets (`load_config`, `check_world_size`
    over `run.world_size` ranks)."""
    from gandist.config import build_config, validate
    from gandist.errors import UserError
    from gandist.train.loop import check_world_size

    tree: dict[str, Any] = {}
    for key, value in {**s, **sets}.items():
        if not key.startswith("run."):
            *path, leaf = key.split(".")
            node = tree
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = copy.deepcopy(value)
    try:
        cfg = build_config(tree)
        validate(cfg)
        check_world_size(cfg, int(s.get("run.world_size", 1)))
    except UserError as exc:
        return str(exc)
    return None


def _startable(s: Settings, advice: Advice) -> Advice | None:
    """`advice` as a run with settings `s` can follow it: as it is, or with D moved from batch norm to layer
    norm where the advice adds a gradient penalty that batch norm cannot carry (WGAN-GP's per-sample
    gradients in any run, R1/R2 through batch norm synchronised over ranks); None where the run would
    refuse it anyway (a loss the family does not train, a width its architecture does not use)."""
    if not advice.sets or _refusal(s, advice.sets) is None:
        return advice
    layer = {**advice.sets, "model.d_norm": "layer"}
    if s.get("model.d_norm") == "batch" and _refusal(s, layer) is None:
        return Advice(layer, f"{advice.text}, on a layer-norm D (model.d_norm=layer: batch norm cannot carry the "
                             "penalty here)")  # fmt: skip
    return None


def advise(name: str, settings: Settings) -> list[Advice]:
    """The remedies of diagnosis `name` not yet in effect for a run with `settings`, in order, each one the
    run can follow. `settings` may hold `run.world_size` (the ranks it trains on; 1 when absent). Settings
    that do not make a config (partial ones, in tests) are advised without that check."""
    whole = bool(settings)
    if whole:
        try:
            whole = _refusal(settings, {}) is None
        except Exception:  # noqa: BLE001  (a partial table of settings: nothing to rebuild)
            whole = False
    out: list[Advice] = []
    for remedy in DIAGNOSES[name].remedies:
        advice = remedy.propose(settings)
        if advice is not None and whole:
            advice = _startable(settings, advice)
        if advice is not None and (not advice.sets or all(a.sets != advice.sets for a in out)):
            out.append(advice)
    return out


# -------------------------------------------------------------------------------------------------
# Statistics


def pairwise_stats(x: torch.Tensor, dup_scale: float) -> tuple[float, float]:
    """Mean pairwise L2 distance of samples x [N, ...], and the share of samples whose nearest other
    sample is closer than `dup_scale` (near-duplicates)."""
    flat = x.detach().reshape(x.shape[0], -1).double().cpu()
    d = torch.cdist(flat, flat)
    n = d.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    mean = float(d[off].mean()) if n > 1 else 0.0
    d.fill_diagonal_(float("inf"))
    dup = float((d.min(dim=1).values < dup_scale).double().mean()) if n > 1 else 0.0
    return mean, dup


def oscillation_score(values: list[float], chunks: int) -> tuple[int, float, float]:
    """Split a loss history into `chunks` consecutive chunks. Returns (direction changes of the chunk
    means, their amplitude (std), and the noise level of a chunk mean (within-chunk std / sqrt(len)))."""
    size = len(values) // chunks
    if size < 2:
        return 0, 0.0, 0.0
    t = torch.tensor(values[-size * chunks :], dtype=torch.float64).view(chunks, size)
    means = t.mean(dim=1)
    diffs = means[1:] - means[:-1]
    turns = int(((diffs[1:] * diffs[:-1]) < 0).sum())
    noise = float(t.std(dim=1).mean() / math.sqrt(size))
    return turns, float(means.std()), noise


def anticorrelation(values: list[float], max_lag: int) -> float:
    """The most negative autocorrelation of the linearly detrended sequence over lags 1..max_lag. A swing
    of period P reaches about -1 at lag P / 2; smooth drift (a healthy GAN loss wandering) stays above
    about -0.5, noise near 0. The trend is removed first: a converging loss is not a swing."""
    x = torch.tensor(values, dtype=torch.float64)
    t = torch.arange(len(x), dtype=torch.float64)
    t = t - t.mean()
    r = x - x.mean() - t * (t @ (x - x.mean())) / (t @ t)
    den = float(r @ r)
    if den == 0.0 or len(x) < 3:
        return 0.0
    return min(float(r[:-k] @ r[k:]) / den for k in range(1, min(max_lag, len(x) - 1) + 1))


# -------------------------------------------------------------------------------------------------
# The monitor


class HealthMonitor:
    """Watches one run. `settings`: the run's resolved config as dotted keys (`gandist.config.flat_dict`)
    and `run.world_size`, the ranks it trains on (the advice never proposes what the run would refuse);
    `sample()`: G_ema's (or G's) samples [N, ...] on the probe's fixed latents (the loop owns them);
    `reference`: a fixed batch of real samples [N, ...] of the same shape. Without `sample` there is no
    diversity probe and no mode_collapse diagnosis. `log_fn(event)` receives every start/clear event.

    `settings=None` gives advice without reading the run's settings (every remedy is offered)."""

    def __init__(
        self,
        cfg: HealthConfig,
        settings: Settings | None = None,
        sample: Callable[[], torch.Tensor] | None = None,
        reference: torch.Tensor | None = None,
        log_fn: Callable[[dict[str, Any]], None] | None = None,
        echo: bool = True,
    ) -> None:
        self.cfg = cfg
        self.settings: dict[str, Any] | None = dict(settings) if settings is not None else None
        self.sample = sample
        self.reference = reference
        self.log_fn = log_fn
        self.echo = echo
        self.history: dict[str, deque] = {}
        self.active: dict[str, int] = {}  # diagnosis -> step it started
        self._streak: dict[str, int] = {}  # observations in a row whose condition disagrees with the state
        self.events: list[dict[str, Any]] = []
        self.grad_peak = 0.0
        self.last_nonfinite = -(10**9)
        self.diversity: dict[str, float] = {}
        self._fresh_probe = False  # a probe ran since the last regular evaluation
        self._real_stats: tuple[float, float] | None = None
        self._dup_scale = 0.0

    # -- inputs ----------------------------------------------------------------------------------
    def observe(self, step: int, stats: Mapping[str, float]) -> None:
        """Record one step's statistics (host floats). Decides nothing: call once per step, in order,
        step by step or in batches before `update`."""
        if not all(math.isfinite(v) for v in stats.values()):
            self.last_nonfinite = step
        for k, v in stats.items():
            if math.isfinite(v):
                self.history.setdefault(k, deque(maxlen=self.cfg.window)).append(float(v))

    def due(self, step: int) -> bool:
        """Must the loop hand over the pending per-step statistics at this step (an evaluation or a
        probe is due)?"""
        c = self.cfg
        if not c.enabled:
            return False
        return step % c.every == 0 or self._probe_due(step)

    def _probe_due(self, step: int) -> bool:
        every = self.cfg.diversity_every
        return bool(every) and self.sample is not None and step % every == 0

    def update(self, step: int, nonfinite: bool = False) -> list[dict[str, Any]]:
        """Probe (calls `sample()`) when due, evaluate when due or when this step was non-finite
        (`nonfinite`, or a non-finite value observed at this step). Returns the events raised/cleared."""
        if not self.cfg.enabled:
            return []
        if nonfinite:
            self.last_nonfinite = step
        if self._probe_due(step):
            self.probe()
        regular = step % self.cfg.every == 0
        if not regular and self.last_nonfinite != step:
            return []
        return self.evaluate(step, regular=regular)

    def set_reference(self, reference: torch.Tensor) -> None:
        """A new fixed batch of real samples, e.g. at each resolution of a growing run (the probe's fakes
        come at that resolution too); the data's statistics are recomputed at the next probe."""
        self.reference = reference
        self._real_stats = None

    def annotate(self, record: dict[str, Any]) -> None:
        """Add the latest diversity figures and the active diagnoses to a log record."""
        record.update(self.diversity)
        record["health"] = ",".join(sorted(self.active))

    @torch.no_grad()
    def probe(self) -> dict[str, float]:
        """One forward pass of G_ema on the fixed latents and one read-back (the only device sync here)."""
        fake = self.sample()
        ref = self.reference
        assert ref is not None and fake.shape[1:] == ref.shape[1:], (
            f"probe samples {list(fake.shape)} and reference {None if ref is None else list(ref.shape)} differ"
        )
        return self.set_diversity(fake, ref)

    def set_diversity(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        if self._real_stats is None:
            real_mean, _ = pairwise_stats(real, 0.0)
            self._dup_scale = self.cfg.duplicate_distance * real_mean
            self._real_stats = (real_mean, pairwise_stats(real, self._dup_scale)[1])
        fake_mean, fake_dup = pairwise_stats(fake, self._dup_scale)
        real_mean, real_dup = self._real_stats
        self.diversity = {
            "diversity": fake_mean / max(real_mean, 1e-12),  # 1 = as spread as the data
            "dup_rate": fake_dup,
            "dup_rate_real": real_dup,
        }
        self._fresh_probe = True
        return self.diversity

    # -- decisions ---------------------------------------------------------------------------------
    def _median(self, key: str) -> float | None:
        h = self.history.get(key)
        if not h or len(h) < max(4, self.cfg.window // 2):
            return None
        return statistics.median(h)

    def conditions(self, step: int, regular: bool = True) -> dict[str, bool | None]:
        """Each diagnosis's condition now: True/False, or None when there is no fresh evidence (an
        off-cycle evaluation for a non-finite step; mode_collapse without a probe since the last one)."""
        c = self.cfg
        out: dict[str, bool | None] = {"non_finite": step - self.last_nonfinite < c.every}
        if not regular:
            return {**out, "vanishing_gradients": None, "oscillation": None, "mode_collapse": None}
        warm = step >= c.warmup
        acc, gnorm = self._median("d_acc"), self._median("g_grad_norm")
        if gnorm is not None:
            self.grad_peak = max(self.grad_peak, gnorm)
        out["vanishing_gradients"] = bool(
            warm
            and acc is not None
            and gnorm is not None
            and acc >= c.saturated_accuracy
            and gnorm <= c.vanishing_ratio * self.grad_peak
        )
        osc = False
        if warm:
            for key in self._oscillation_keys():
                h = self.history.get(key)
                if h is None or len(h) < c.window:
                    continue
                turns, amp, noise = oscillation_score(list(h), c.oscillation_chunks)
                level = abs(sum(h) / len(h))
                if (
                    turns >= c.oscillation_turns
                    and amp > 3.0 * noise
                    and amp > c.oscillation_amplitude * (level + 0.1)
                    and anticorrelation(list(h), max(2, len(h) // 4)) < c.oscillation_anticorrelation
                ):
                    osc = True
        out["oscillation"] = osc
        if self._fresh_probe:
            self._fresh_probe = False
            div = self.diversity
            out["mode_collapse"] = bool(
                warm
                and (
                    div["diversity"] < c.collapse_ratio
                    or div["dup_rate"] - div["dup_rate_real"] > c.duplicate_excess
                )
            )
        else:
            out["mode_collapse"] = None
        return out

    def _oscillation_keys(self) -> tuple[str, ...]:
        """The losses the oscillation rule reads. A Wasserstein critic is defined up to an additive
        constant, and G's loss -E[D(G(z))] carries that constant: it drifts with the critic's offset
        (the drift PGGAN's epsilon_drift term exists to hold, Sec. A.1) without any change in play.
        The critic's own loss E[D(G(z))] - E[D(x)] is offset-free, so for critics it alone is read."""
        if _is_critic(self.settings or {}):
            return ("d_loss",)
        return ("g_loss", "d_loss")

    def clear_after(self, name: str) -> int:
        """Observations in a row without the condition before `name` clears: a whole `window` of steps,
        counted in the diagnosis's own cadence, and never fewer than `persist`."""
        c = self.cfg
        cadence = c.every
        if name == "mode_collapse" and c.diversity_every:
            cadence = max(c.every, c.diversity_every)
        return max(c.persist, math.ceil(c.window / cadence))

    def evaluate(self, step: int, regular: bool = True) -> list[dict[str, Any]]:
        """Compare the conditions with the active set through the hysteresis; log starts and clears."""
        if not self.cfg.enabled:
            return []
        new_events = []
        for name, on in self.conditions(step, regular).items():
            if on is None:
                continue
            if on == (name in self.active):
                self._streak[name] = 0
                continue
            self._streak[name] = self._streak.get(name, 0) + 1
            if name != "non_finite":  # non-finite values are reported (and cleared) at once
                needed = self.cfg.persist if on else self.clear_after(name)
                if self._streak[name] < needed:
                    continue
            self._streak[name] = 0
            if on:
                self.active[name] = step
                new_events.append(self._event(step, name, "start"))
            else:
                since = self.active.pop(name)
                new_events.append(self._event(step, name, "clear", since=since))
        return new_events

    def _event(self, step: int, name: str, state: str, since: int | None = None) -> dict[str, Any]:
        d = DIAGNOSES[name]
        event: dict[str, Any] = {
            "step": step,
            "event": "health",
            "diagnosis": name,
            "state": state,
            "message": d.message,
        }
        if state == "start":
            advice = advise(name, self.settings or {})
            event["remedies"] = [a.text for a in advice]
            event["suggested"] = [a.sets for a in advice]
            event.update(self._evidence())
            text = f"[gandist health] step {step}: {d.message}."
            if advice:
                text += " Try: " + "; ".join(a.text for a in advice[:2])
        else:
            event["since"] = since
            text = f"[gandist health] step {step}: cleared '{d.message}' (active since step {since})"
        self.events.append(event)
        if self.log_fn is not None:
            self.log_fn(event)
        if self.echo:
            try:
                from tqdm import tqdm

                tqdm.write(text, file=sys.stderr)
            except ImportError:
                print(text, file=sys.stderr)
        return event

    def _evidence(self) -> dict[str, float]:
        out = {}
        for key in ("d_acc", "g_grad_norm", "d_grad_norm", "g_loss", "d_loss"):
            m = self._median(key)
            if m is not None:
                out[f"median_{key}"] = m
        out.update({f"probe_{k}": v for k, v in self.diversity.items()})
        return out
