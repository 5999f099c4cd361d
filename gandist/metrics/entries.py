"""The metrics `gandist eval` computes, by name: what each needs and how it computes its values.

An entry declares its inputs, so the evaluation extracts only what some requested metric reads:

| need | what the pipeline provides |
|---|---|
| `fake_stats`, `real_stats` | streamed mean and covariance (`RunningStats`), or a statistics file for the reals |
| `fake_feats`, `real_feats` | every feature [N, D] float32, in sample order (held in memory: KID, P/R, ...) |
| `fake_logits` | the Inception Score accumulated per split while streaming (class logits, never stored) |
| `fake_probs` | every sample's class probabilities [N, K] float64, in sample order (class and mode coverage) |
| `samples` | the first samples of both sides, as images (pictures) |

`kinds` are the data kinds the metric is defined on; `data_needs` names a capability its data source must
declare (a class attribute of the `data` section, e.g. `known_modes`), so no metric names a dataset.
`features` names the extractor a metric is defined on for images when that is not the evaluation's
(precision and recall: VGG-16 fc2, Kynkaanniemi et al. 2019); `feature_plan` says which metric reads which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gandist.errors import UserError
from gandist.registry import register


@dataclass(frozen=True)
class MetricEntry:
    needs: frozenset[str]
    compute: Callable[[Any], dict[str, Any]]  # (EvalContext) -> values
    kinds: tuple[str, ...] = ("images", "points")
    data_needs: str = ""  # a capability the data section declares ('' = any data of the kinds)
    min_samples: int = 2  # per side
    # On images: the extractor (`build_extractor`'s name) the metric is defined on, in place of the evaluation's
    # ImageNet network ('' = the evaluation's own); its needs are then read from that extractor's features.
    features: str = ""
    # whether an extractor made for the data (the digits classifier, `Extractor.for_data`) serves in its place
    data_features: bool = True


METRICS: dict[str, MetricEntry] = {}
NEEDS = frozenset({"fake_stats", "real_stats", "fake_feats", "real_feats", "fake_logits", "fake_probs", "samples"})
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # Binkowski et al. 2018 and torch-fidelity's defaults
IS_SPLITS = 10  # Salimans et al. 2016
PR_K = 3  # Kynkaanniemi et al. 2019


def metric(name: str, needs: set[str], **kw) -> Callable:
    assert needs <= NEEDS, needs - NEEDS

    def add(fn):
        register(METRICS, name)(MetricEntry(frozenset(needs), fn, **kw))
        return fn

    return add


@metric("fid", {"fake_stats", "real_stats"})
def _fid(ctx) -> dict[str, Any]:
    from gandist.metrics.fid import frechet_distance

    return {"fid": frechet_distance(*ctx.fake_stats, *ctx.real_stats)}


@metric("is", {"fake_logits"}, min_samples=IS_SPLITS)
def _is(ctx) -> dict[str, Any]:
    mean, std = ctx.inception_score
    return {"is": mean, "is_std": std, "is_splits": ctx.is_splits, "is_split_order": ctx.extra.get("is_order", "shuffled")}


@metric("kid", {"fake_feats", "real_feats"})
def _kid(ctx) -> dict[str, Any]:
    from gandist.metrics.kid import kernel_inception_distance

    m = min(KID_SUBSET_SIZE, len(ctx.fake_feats), len(ctx.real_feats))
    mean, std = kernel_inception_distance(ctx.fake_feats, ctx.real_feats, subsets=KID_SUBSETS, subset_size=m)
    return {"kid": mean, "kid_std": std, "kid_subset_size": m}


# The paper's feature space: VGG-16 fc2 for images, in place of Inception; the digits classifier's and the
# 2-D points themselves where the data has its own.
@metric("pr", {"fake_feats", "real_feats"}, min_samples=PR_K + 1, features="vgg16")
def _pr(ctx) -> dict[str, Any]:
    from gandist.metrics.precision_recall import precision_recall

    return {**precision_recall(ctx.real_feats, ctx.fake_feats, k=PR_K), "pr_features": ctx.extractor.name}


# gandist's former `pr`: the same definition on Inception pool3 features, always those
@metric("pr_inception", {"fake_feats", "real_feats"}, kinds=("images",), min_samples=PR_K + 1,
        features="inception", data_features=False)  # fmt: skip
def _pr_inception(ctx) -> dict[str, Any]:
    from gandist.metrics.precision_recall import precision_recall

    pr = precision_recall(ctx.real_feats, ctx.fake_feats, k=PR_K)
    return {"precision_inception": pr["precision"], "recall_inception": pr["recall"]}


@metric("modes", {"fake_feats", "fake_probs"}, data_needs="known_modes", min_samples=1)
def _modes(ctx) -> dict[str, Any]:
    if _data_section(ctx.dataset).digit_channels == 3:  # 1000 modes, each channel read by the digits classifier
        from gandist.metrics.coverage import stacked_modes
        from gandist.metrics.stacked import channel_probs

        _digits_classifier(ctx, "modes", ctx.extractor.classes == 1000)
        return stacked_modes(channel_probs(ctx.fake_probs))
    from gandist.metrics.modes import mode_coverage

    return mode_coverage(ctx.fake_feats, ctx.dataset)


@metric("classes", {"fake_probs"}, kinds=("images",), data_needs="classes", min_samples=1)
def _classes(ctx) -> dict[str, Any]:
    from gandist.metrics.coverage import class_coverage

    _digits_classifier(ctx, "classes", ctx.extractor.classes == 10)
    return class_coverage(ctx.fake_probs)


def _digits_classifier(ctx, name: str, shape_ok: bool) -> None:
    if not ctx.extractor.name.startswith("digits-cnn") or not shape_ok or ctx.fake_probs is None:
        raise UserError(f"metric '{name}' reads gandist's digits classifier, not {ctx.extractor.name}; "
                        "use --extractor digits (or auto)")  # fmt: skip


def _data_section(dataset: str | None):
    """The registered config class of data source `dataset` (its declared capabilities)."""
    from gandist.config import registered

    return registered("data").get(dataset or "", object)


def at_data_resolution(fake, real):
    """Images of a growing G at its current stage, nearest-upsampled to the reals' resolution (as the stage's
    sample grids show them), so a pixel-space metric compares like with like; other inputs unchanged."""
    import torch.nn.functional as F

    if fake.dim() == 4 and fake.shape[-2:] != real.shape[-2:]:
        if real.shape[-1] % fake.shape[-1] or real.shape[-2] % fake.shape[-2]:
            raise ValueError(f"generated images {list(fake.shape[-2:])} do not scale to the reals' {list(real.shape[-2:])}")
        fake = F.interpolate(fake, size=tuple(real.shape[-2:]), mode="nearest")
    return fake


@metric("parzen", {"samples"})
def _parzen(ctx) -> dict[str, Any]:
    """Goodfellow et al. 2014's Parzen window on the samples themselves: 2-D points as they are, images as
    pixels in [0, 1]; sigma chosen on one seeded half of the reals, the log-likelihood of the other half."""
    import torch

    from gandist.metrics.parzen import parzen_log_likelihood

    # every sample each side's features would have come from, in the same order (not `first`, which may
    # show a dataset's first images rather than the evaluation's draw of reals)
    fake, real = (
        torch.cat([b.cpu() for b in s.batches(0, s.n, 4096)]) for s in (ctx.fake_source, ctx.real_source)
    )
    if fake.dim() > 2:  # images in the training format [-1, 1] -> pixels in [0, 1], as the paper's MNIST
        fake = at_data_resolution(fake, real)
        fake, real = (fake.double() + 1) / 2, (real.double() + 1) / 2
    pz = parzen_log_likelihood(fake, real)
    return {"parzen_ll": pz["mean"], "parzen_se": pz["se"], "parzen_sigma": pz["sigma"],
            "parzen_space": "pixels in [0, 1]" if fake.dim() > 2 else "points"}  # fmt: skip


@metric("nn", {"samples"}, kinds=("images",), min_samples=1)
def _nn(ctx) -> dict[str, Any]:
    from gandist.metrics.neighbours import nearest_neighbours_figure

    real = ctx.real_source.first(2000)
    shown = at_data_resolution(ctx.fake_source.first(16), real)
    out = Path(ctx.out_dir or ".") / "nearest_neighbours.png"
    res = nearest_neighbours_figure(shown, real, out, k=5, fake_feats=ctx.extractor(shown)[0],
                                    real_feats=ctx.extractor(real)[0])  # fmt: skip
    return {"nn_figure": res["figure"], "nn_min_pixel_distance": float(np.min(res["pixel_distances"][:, 0]))}


def reads(name: str, extractor, kind: str) -> str:
    """The extractor (`build_extractor`'s name) metric `name` reads when the evaluation's is `extractor`
    (an Extractor, or its name): the evaluation's own, or on images the one the metric is defined on, unless
    the evaluation's is made for the data (and the metric accepts that) or is a module given by the caller."""
    from gandist.metrics.extractors import FOR_DATA

    key = extractor if isinstance(extractor, str) else extractor.key
    for_data = key in FOR_DATA if isinstance(extractor, str) else extractor.for_data
    e = METRICS[name]
    if kind != "images" or not e.features or not key or (for_data and e.data_features):
        return key
    return e.features


def feature_plan(names, extractor, kind: str) -> dict[str, list[str]]:
    """extractor name -> the metrics of `names` that read its features, the evaluation's own first."""
    key = extractor if isinstance(extractor, str) else extractor.key
    plan: dict[str, list[str]] = {key: []}
    for name in names:
        plan.setdefault(reads(name, extractor, kind), []).append(name)
    return plan


def _instead(name: str, dataset: str | None) -> str:
    """What to ask for instead on data the metric does not know (one clause, or nothing)."""
    section = _data_section(dataset)
    others = [m for m, e in METRICS.items() if m != name and e.data_needs and getattr(section, e.data_needs, False)]
    return f": ask for metric {' or '.join(others)}" if others else ""


def check_request(
    names: list[str] | tuple[str, ...], kind: str, dataset: str | None, has_probs: bool
) -> None:
    """One clear line for a metric that does not exist or does not apply here."""
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    for name in names:
        e = METRICS[name]
        if kind not in e.kinds:
            what = "draws images" if e.kinds == ("images",) else f"is defined on {' / '.join(e.kinds)}"
            raise UserError(f"metric '{name}' {what}; these samples are {kind}")
        if e.data_needs and not getattr(_data_section(dataset), e.data_needs, False):
            from gandist.config import registered

            having = [n for n, c in registered("data").items() if getattr(c, e.data_needs, False)]
            what = {"known_modes": "data with known modes", "classes": "labelled classes"}.get(e.data_needs,
                                                                                                 e.data_needs)  # fmt: skip
            raise UserError(
                f"metric '{name}' needs {what} (data.name {' or '.join(having)}); "
                f"data.name={dataset} has none{_instead(name, dataset)}"
            )
        if "fake_logits" in e.needs and not has_probs:
            raise UserError(f"metric '{name}' needs class probabilities; this extractor has none")
