"""The live mode-collapse alarm on digits and stacked digits: class (mode) coverage at the health probes.

Pixel diversity (gandist/train/health.py) misses a generator that draws varied sevens and nothing else.
On data the digits classifier reads, every diversity probe also classifies the probe's samples and the
probe's fixed reals: the number of classes (digits: 10; stacked digits: 1000 modes) each covers, and the
KL of each class histogram to uniform. Coverage is judged against the reals of the same count (128 reals
cover ~120 of the 1000 stacked modes, not 1000), so the thresholds mean the same at any probe size:

    coverage_collapse   fakes cover < health.coverage_ratio of the classes the reals cover, or their
                        KL exceeds the reals' by > health.coverage_kl nats

It follows mode_collapse's hysteresis (raised after `persist` probes in a row, cleared after a window of
probes without it). The classifier is built at the first probe past `health.warmup` (training it once if it is
not cached), so short runs never pay for it; samples below 16 px (8 px digits, the first stages of a
growing run) are not judged. The advice reads what the run's
config declares (a `model.pack` key, a model section with `d_features`, the loss registry's
`relativistic` property), never a family's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gandist.train.health import (
    DIAGNOSES,
    Advice,
    Diagnosis,
    HealthMonitor,
    Remedy,
    Settings,
    _advice,
    _fixed,
    _loss,
    _minibatch_std,
    _num,
)

NAME = "coverage_collapse"
MIN_RESOLUTION = 16  # the digits classifier's own resolution (gandist/metrics/extractors.py)
GAMMA = 1.0  # R1 = R2 gamma the advice proposes with rpgan: the setting benchmarks/quality/modes.py runs


def _pack(s: Settings) -> Advice | None:
    # PacGAN (Lin et al. 2018): packing 2 already reaches 1000 stacked-MNIST modes in their Table 2; 4 in Table 3
    p = s.get("model.pack")
    if not isinstance(p, int) or isinstance(p, bool) or p >= 4:
        return None
    return _advice(
        f"let D judge packs of samples at once, PacGAN ({{sets}}; now {p})", {"model.pack": 2 if p < 2 else 4}
    )


def _relativistic(s: Settings) -> Advice | None:
    # RpGAN + R1 + R2 (R3GAN, Huang et al. 2025): pairing each real with a fake removes the mode-dropping
    # optima of the classic loss (Sun et al. 2020); both zero-centred penalties keep it convergent
    from gandist.losses import LOSSES

    loss = _loss(s)
    if loss is None or "loss.r2_gamma" not in s:
        return None
    if loss.relativistic:
        r1, r2 = _num(s, "loss.r1_gamma") or 0.0, _num(s, "loss.r2_gamma") or 0.0
        if r1 > 0 and r2 > 0:
            return None
        return _advice("pay both zero-centred penalties with the relativistic loss ({sets})",
                       {"loss.r1_gamma": r1 or GAMMA, "loss.r2_gamma": r2 or GAMMA})  # fmt: skip
    name = next(n for n, cls in LOSSES.items() if cls.relativistic)
    return _advice("pair each real with a fake in a relativistic loss with R1 and R2 ({sets})",
                   {"loss.name": name, "loss.r1_gamma": GAMMA, "loss.r2_gamma": GAMMA})  # fmt: skip


def _feature_matching(s: Settings) -> Advice | None:
    # Salimans et al. 2016, Sec. 3.1: G matches the statistics of D's features, not D's current verdict
    from gandist.config import _components

    section = _components()["model"].get(s.get("model.name"))
    w = _num(s, "loss.feature_matching")
    if section is None or not getattr(section, "d_features", False) or w is None or w > 0:
        return None
    return _advice(
        "let G match the mean of D's hidden features on reals ({sets})", {"loss.feature_matching": 1.0}
    )


DIAGNOSES[NAME] = Diagnosis(
    NAME,
    "mode collapse: the samples cover far fewer classes (modes) than the data",
    (
        Remedy(("model.pack",), _pack),
        Remedy(("loss.name", "loss.r1_gamma", "loss.r2_gamma"), _relativistic),
        Remedy(("model.minibatch_std",), _minibatch_std),
        Remedy(("loss.feature_matching",), _feature_matching),
        _fixed("check the data: a dataset of few classes also looks collapsed"),
    ),
)


class ClassCoverage:
    """Classes covered and KL to uniform of a batch of images, read by the digits classifier."""

    def __init__(self, data_name: str, device: torch.device | str = "cpu") -> None:
        from gandist.metrics.extractors import build_extractor

        self.extractor = build_extractor("digits", "images", data_name, device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[int, float]:
        from gandist.metrics.coverage import histogram_stats

        _, probs = self.extractor(x)
        s = histogram_stats(probs.argmax(1), probs.shape[1])
        return s["covered"], s["kl"]


class CoverageMonitor(HealthMonitor):
    """HealthMonitor plus the coverage_collapse diagnosis, for runs on the data the digits classifier reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._step = 0
        self._coverage: ClassCoverage | None = None
        self._real_coverage: tuple[int, float] | None = None
        self._fresh_coverage = False

    def update(self, step: int, nonfinite: bool = False) -> list[dict[str, Any]]:
        self._step = step
        return super().update(step, nonfinite)

    def set_reference(self, reference: torch.Tensor) -> None:
        super().set_reference(reference)
        self._real_coverage = None

    def set_diversity(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        out = super().set_diversity(fake, real)
        # before warm-up every GAN is "collapsed"; below 16 px (8 px digits, the first stages of a growing
        # run) the classifier reads upsampled blur it was never trained on
        if self._step < self.cfg.warmup or fake.shape[-1] < MIN_RESOLUTION:
            return out
        if self._coverage is None:
            self._coverage = ClassCoverage((self.settings or {}).get("data.name", "digits"))
        if self._real_coverage is None:
            self._real_coverage = self._coverage(real)
        covered, kl = self._coverage(fake)
        real_covered, real_kl = self._real_coverage
        out.update(coverage=covered / max(real_covered, 1), covered=float(covered),
                   covered_real=float(real_covered), coverage_kl=kl, coverage_kl_real=real_kl)  # fmt: skip
        self._fresh_coverage = True
        return out

    def conditions(self, step: int, regular: bool = True) -> dict[str, bool | None]:
        out = super().conditions(step, regular)
        out[NAME] = None
        if regular and self._fresh_coverage:
            self._fresh_coverage = False
            d, c = self.diversity, self.cfg
            out[NAME] = bool(
                d["coverage"] < c.coverage_ratio or d["coverage_kl"] - d["coverage_kl_real"] > c.coverage_kl
            )
        return out

    def clear_after(self, name: str) -> int:
        return super().clear_after("mode_collapse" if name == NAME else name)


def health_monitor_class(settings: Mapping[str, Any]) -> type[HealthMonitor]:
    """The monitor for a run with these settings (dotted keys): with the coverage alarm on digit data."""
    from gandist.config import registered

    section = registered("data").get(settings.get("data.name") or "")
    return CoverageMonitor if getattr(section, "digit_channels", 0) else HealthMonitor  # digits the classifier reads
