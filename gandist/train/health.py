"""Training health: watch a run for the classic GAN failure modes and say what to do.

Fed by the training loop from statistics it computes anyway (losses, mean D outputs, D accuracy,
gradient norms), plus a diversity probe every `health.diversity_every` steps: G_ema on a fixed batch
of latents, its mean pairwise distance and near-duplicate rate in pixel space, next to the same
statistics of a fixed batch of real data. Diagnoses:

  vanishing_gradients  D classifies (almost) everything right and ||grad G|| has collapsed
  oscillation          the losses swing up and down by far more than their noise, without settling
  mode_collapse        samples far less diverse than real data, or many near-duplicates
  non_finite           NaN or Inf in a loss (the loop skipped those updates)

Each diagnosis is logged once when it starts and once when it clears (log.jsonl, stderr, the
progress bar), with remedies. Everything here is local arithmetic on floats the process already
holds: no collectives, no extra device synchronisation beyond the probe's one forward pass.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from gandist.config import HealthConfig


@dataclass(frozen=True)
class Diagnosis:
    name: str
    message: str
    remedies: tuple[str, ...]


DIAGNOSES = {
    d.name: d
    for d in (
        Diagnosis(
            "vanishing_gradients",
            "discriminator saturated, generator gradients vanishing",
            (
                "use the non-saturating generator loss (loss.name=nonsaturating) instead of minimax",
                "lower the discriminator learning rate (optim.lr_d) or take fewer D steps (train.d_steps)",
                "regularise D: R1 (loss.r1_gamma=1..10) or a gradient penalty (loss.name=wgan-gp)",
                "shrink D's capacity (model.d_width) or add dropout (model.dropout)",
            ),
        ),
        Diagnosis(
            "oscillation",
            "losses oscillating, not converging",
            (
                "lower both learning rates (optim.lr_g, optim.lr_d) or use optim.decay=linear",
                "lower Adam's beta1 (optim.beta1=0.0 or 0.5)",
                "add a gradient penalty or R1 (loss.name=wgan-gp, loss.r1_gamma)",
                "average the generator (train.ema_beta=0.999) and judge samples from G_ema",
            ),
        ),
        Diagnosis(
            "mode_collapse",
            "mode collapse suspected: samples much less diverse than the data",
            (
                "add minibatch standard deviation to D (model.minibatch_std=4)",
                "use a Wasserstein loss with gradient penalty (loss.name=wgan-gp)",
                "lower the generator learning rate (optim.lr_g) or raise D steps (train.d_steps)",
                "check the data: a dataset of near-identical images also looks collapsed",
            ),
        ),
        Diagnosis(
            "non_finite",
            "non-finite values (NaN/Inf) in the losses; those updates were skipped",
            (
                "lower the learning rates (optim.lr_g, optim.lr_d)",
                "check the data for NaN/Inf or unnormalised values",
                "use a penalty (loss.r1_gamma, loss.name=wgan-gp) to keep D smooth",
                "resume from the last good checkpoint (--resume PATH)",
            ),
        ),
    )
}


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


class HealthMonitor:
    def __init__(self, cfg: HealthConfig, log_fn=None, echo: bool = True) -> None:
        self.cfg = cfg
        self.history: dict[str, deque] = {}
        self.active: dict[str, int] = {}  # diagnosis -> step it started
        self._streak: dict[str, int] = {}  # evaluations in a row whose condition disagrees with the state
        self.events: list[dict[str, Any]] = []
        self.log_fn = log_fn
        self.echo = echo
        self.grad_peak = 0.0
        self.last_nonfinite = -(10**9)
        self.diversity: dict[str, float] = {}
        self._real_stats: tuple[float, float] | None = None
        self._probe_z: torch.Tensor | None = None

    # -- inputs ----------------------------------------------------------------------------------
    def _push(self, key: str, value: float) -> None:
        self.history.setdefault(key, deque(maxlen=self.cfg.window)).append(value)

    def observe(self, step: int, stats: dict[str, float]) -> None:
        """Record one step's statistics (no trainer needed: tests feed synthetic sequences)."""
        finite = all(math.isfinite(v) for v in stats.values())
        if not finite:
            self.last_nonfinite = step
        for k, v in stats.items():
            if math.isfinite(v):
                self._push(k, v)

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
        return self.diversity

    # -- trainer hooks -----------------------------------------------------------------------------
    def on_step(self, trainer, stats: dict[str, float]) -> None:
        step = trainer.step
        self.observe(step, stats)
        if self.cfg.diversity_every and step % self.cfg.diversity_every == 0:
            self.probe(trainer)
        if step % self.cfg.every == 0 or not math.isfinite(sum(stats.values())):
            self.evaluate(step)

    def on_log(self, trainer, record: dict[str, Any]) -> None:
        record.update(self.diversity)
        record["health"] = ",".join(sorted(self.active))

    @torch.no_grad()
    def probe(self, trainer) -> None:
        n = self.cfg.diversity_n
        if self._probe_z is None:
            g = torch.Generator().manual_seed(trainer.cfg.train.seed + 104729)
            self._probe_z = torch.randn(n, trainer.cfg.model.z_dim, generator=g)
            self._probe_real = trainer.data.peek(n, position=0)
        fake = trainer.ema.shadow(self._probe_z.to(trainer.device))
        self.set_diversity(fake, self._probe_real)

    # -- decisions ---------------------------------------------------------------------------------
    def _median(self, key: str) -> float | None:
        h = self.history.get(key)
        if not h or len(h) < max(4, self.cfg.window // 2):
            return None
        return statistics.median(h)

    def conditions(self, step: int) -> dict[str, bool]:
        c = self.cfg
        out = {"non_finite": step - self.last_nonfinite < c.every}
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
            for key in ("g_loss", "d_loss"):
                h = self.history.get(key)
                if h is None or len(h) < c.window:
                    continue
                turns, amp, noise = oscillation_score(list(h), c.oscillation_chunks)
                level = abs(sum(h) / len(h))
                if (
                    turns >= c.oscillation_turns
                    and amp > 3.0 * noise
                    and amp > c.oscillation_amplitude * (level + 0.1)
                ):
                    osc = True
        out["oscillation"] = osc
        div = self.diversity
        out["mode_collapse"] = bool(
            warm
            and div
            and (
                div["diversity"] < c.collapse_ratio
                or div["dup_rate"] - div["dup_rate_real"] > c.duplicate_excess
            )
        )
        return out

    def evaluate(self, step: int) -> list[dict[str, Any]]:
        """Compare the conditions with the active set; log starts and clears."""
        if not self.cfg.enabled:
            return []
        new_events = []
        for name, on in self.conditions(step).items():
            if on == (name in self.active):
                self._streak[name] = 0
                continue
            # Hysteresis: non-finite values are reported at once; the statistical diagnoses must hold
            # (or be gone) for `persist` evaluations in a row, so noise near a threshold does not flap.
            self._streak[name] = self._streak.get(name, 0) + 1
            if name != "non_finite" and self._streak[name] < self.cfg.persist:
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
            event["remedies"] = list(d.remedies)
            event.update({k: v for k, v in self._evidence().items()})
            text = f"[gandist health] step {step}: {d.message}. Try: " + "; ".join(d.remedies[:2])
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
