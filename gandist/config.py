"""One typed config tree: nested dataclasses, loaded from YAML, overridden with `--set a.b=value`.

Strict by design: an unknown key is an error naming the nearest valid key (as a full dotted key), a
value of the wrong type is an error naming the expected type, a value out of range is an error naming
the range. The resolved tree is written into every run directory and every checkpoint, so a run can
always be rebuilt from its own files.

Three sections belong to the components they configure and are chosen by name through a registry:

| section | chosen by | its classes live in |
|---|---|---|
| `model` | `model.name` (the model family) | `gandist/families/<name>/config.py` |
| `loss` | the model family's objective (`loss.name` then picks the adversarial loss) | the family's `config.py`, or `gandist/objectives/config.py` (classic) |
| `data` | `data.name` (the data source) | `gandist/data/config.py` |

Each such class carries its own range metadata and its own `check(cfg)`. The other sections (`optim`,
`train`, `health`, `metrics`) are defined here. This module imports nothing from the rest of gandist
but `errors` and the torch-free family discovery (`gandist.families`), and neither it nor the component config modules import torch: a config loads anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from gandist.errors import UserError


class ConfigError(UserError, ValueError):
    """A user mistake in a config file or override; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------------------
# Declaring settings: a default plus its valid range, checked for every section at load time.


def setting(
    default: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field whose value must satisfy the given bounds or be one of `choices`."""
    return field(default=default, metadata={"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices})


def one_of(key: str, value: str, valid: tuple[str, ...] | list[str]) -> None:
    """Raise ConfigError naming the closest valid value when `value` is not in `valid`."""
    if value not in valid:
        close = difflib.get_close_matches(value, list(valid), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{key}='{value}' is not known{hint}; valid: {', '.join(valid)}")


def _check_field(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if value is None:
        return
    if meta.get("choices"):
        one_of(key, value, meta["choices"])
        return
    bounds = [(op, meta.get(op)) for op in ("gt", "ge", "lt", "le") if meta.get(op) is not None]
    if not bounds or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    ok = {
        "gt": lambda b: value > b,
        "ge": lambda b: value >= b,
        "lt": lambda b: value < b,
        "le": lambda b: value <= b,
    }
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value} must be a finite number")
    if all(ok[op](b) for op, b in bounds):
        return
    words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    lower = [f"{words[op]} {b:g}" for op, b in bounds if op in ("gt", "ge")]
    upper = [f"{words[op]} {b:g}" for op, b in bounds if op in ("lt", "le")]
    if bounds == [("gt", 0)]:
        rule = "must be positive"
    elif lower and upper:
        lo, hi = (
            dict(bounds).get("gt", dict(bounds).get("ge")),
            dict(bounds).get("lt", dict(bounds).get("le")),
        )
        rule = f"must be in {'(' if 'gt' in dict(bounds) else '['}{lo:g}, {hi:g}{')' if 'lt' in dict(bounds) else ']'}"
    else:
        rule = "must be " + " and ".join(lower + upper)
    raise ConfigError(f"{key}={value} {rule}")


def check_ranges(section: Any, prefix: str) -> None:
    """Check every field of a section dataclass against its `setting(...)` metadata."""
    for f in dataclasses.fields(section):
        _check_field(f"{prefix}.{f.name}", getattr(section, f.name), f.metadata)


# ---------------------------------------------------------------------------------------------------
# Component-owned sections and their registry


@dataclass
class Section:
    """Base of the `model`, `loss` and `data` sections; subclasses register under a name."""

    registered_name: ClassVar[str] = ""
    # What a model family is, declared on its section and read through the registry instead of its name:
    grows: ClassVar[bool] = False  # networks that grow through resolutions (set_growth): PGGAN, StyleGAN
    has_classes: ClassVar[bool] = False  # D classifies the data's classes; G may draw a class (SGAN)
    translates: ClassVar[bool] = False  # generators map images between domains, none from latents (CycleGAN)
    # G_ema as the family's paper keeps it, where train sets neither ema_beta nor ema_kimg: e.g.
    # {"ema_beta": 0.999} (PGGAN) or {"ema_kimg": 10.0} (StyleGAN); {} = none (the classic GANs)
    paper_ema: ClassVar[dict[str, float]] = {}
    label: ClassVar[str] = ""  # the family's name in messages (e.g. "CycleGAN"; "" = its registered name)

    def check(self, cfg: Config) -> None:
        """Cross-field and cross-section rules; raise ConfigError with one line naming the keys."""


# section -> registered name -> dataclass. Filled by the component config modules below.
SECTIONS: dict[str, dict[str, type[Section]]] = {"model": {}, "loss": {}, "data": {}}
DEFAULT_NAMES = {"model": "dcgan", "data": "digits"}
# Torch-free modules that declare the shared component sections; imported (by name) on first use, with the
# `config.py` of every family folder (`gandist.families`, which finds them without a list).
COMPONENT_MODULES = ("gandist.objectives.config", "gandist.data.config")


def register_section(section: str, name: str):
    """Class decorator: `@register_section("model", "dcgan")` on a Section dataclass."""

    def add(cls: type[Section]) -> type[Section]:
        if name in SECTIONS[section]:
            raise KeyError(f"{section} '{name}' is registered twice")
        SECTIONS[section][name] = cls
        cls.registered_name = name
        return cls

    return add


def _components() -> dict[str, dict[str, type[Section]]]:
    from gandist import families

    for module in COMPONENT_MODULES:  # registration side effects; cached by the import system
        importlib.import_module(module)
    families.import_part("config")  # each call: GANDIST_FAMILIES may name a folder added since
    return SECTIONS


def registered(section: str) -> dict[str, type[Section]]:
    """Every registered class of `section` by name, in registration order (to read declared capabilities)."""
    return dict(_components()[section])


def section_class(section: str, name: str) -> type[Section]:
    """The registered class for `section` named `name` (model family, data source, objective)."""
    registry = _components()[section]
    if name not in registry:
        one_of(f"{section}.name", name, sorted(registry))
    return registry[name]


def make_section(section: str, name: str, **values: Any) -> Section:
    """A component section by its registered name, e.g. `make_section("data", "digits", resolution=16)`."""
    return section_class(section, name)(**values)


def _loss_section_name(model_cls: type[Section]) -> str:
    return getattr(model_cls, "objective", "classic")


# ---------------------------------------------------------------------------------------------------
# The fixed sections


@dataclass
class OptimConfig:
    name: str = setting("adam", choices=("adam", "rmsprop", "sgd"))
    lr_g: float = setting(2e-4, gt=0)
    lr_d: float = setting(2e-4, gt=0)
    beta1: float = setting(0.5, ge=0, lt=1)  # DCGAN paper: 0.5 stabilises training
    beta2: float = setting(0.999, ge=0, lt=1)
    eps: float = setting(1e-8, gt=0)
    # adam: step m / sqrt(v + eps) as Theano-era code (Salimans et al. 2016's nn.adam_updates) instead of
    # PyTorch's m / (sqrt(v) + eps); the two differ where sqrt(v) is near sqrt(eps) = 1e-4
    eps_inside_sqrt: bool = False
    momentum: float = setting(0.0, ge=0, lt=1)  # sgd only
    alpha: float = setting(0.99, ge=0, lt=1)  # rmsprop only: smoothing of the squared-gradient average
    decay: str = setting("none", choices=("none", "linear", "linear_half"))  # linear: both learning rates fall
    # to 0 over train.steps (the schedule of the official WGAN-GP code); linear_half: constant for the first half,
    # then linearly to 0 (CycleGAN, Zhu et al. 2017 Sec. 7.1); a function of the step, so resume stays exact


@dataclass
class TrainConfig:
    steps: int = setting(2000, gt=0)  # total generator steps
    kimg: float = setting(
        0.0, ge=0
    )  # > 0: train until this many thousand real images instead (progressive runs)
    d_steps: int = setting(
        1, gt=0
    )  # k discriminator steps per generator step (Goodfellow et al. Alg. 1); WGAN n_critic=5
    # WGAN's critic warm-up (Arjovsky et al.'s main.py, not in the paper's Algorithm 1): d_steps_warmup D steps
    # instead of d_steps on the first d_steps_warmup_first generator steps and on every d_steps_warmup_every-th
    # one (WGAN: 100, 25 and 500; every 0 = only the first steps); 0 = no warm-up. A function of the generator
    # step, so a resume continues the same schedule.
    d_steps_warmup: int = setting(0, ge=0)
    d_steps_warmup_first: int = setting(25, ge=0)
    d_steps_warmup_every: int = setting(500, ge=0)
    micro_batch: int = setting(
        0, ge=0
    )  # 0: whole batches; else accumulate gradients over chunks of this size
    seed: int = 0
    # single: one process. ddp: data-parallel over the ranks torchrun or SLURM started (gloo on CPUs, NCCL
    # on GPUs); data.batch_size stays the global batch, each rank takes batch / ranks. deepspeed: the same
    # with one DeepSpeed engine per optimizer (train.deepspeed_config: ZeRO stage, precision).
    strategy: str = setting("single", choices=("single", "ddp", "deepspeed"))
    backend: str = setting("auto", choices=("auto", "nccl", "gloo"))  # auto: NCCL on GPUs, gloo on CPUs
    sync_batchnorm: bool = True  # ddp: batch norm over the global batch (W ranks = one process)
    # deepspeed: a JSON file, a path or the name of one in launch/deepspeed/ (zero0, zero1, zero2); gandist fills in
    # its batch sizes and checks it against this config (launch/README.md)
    deepspeed_config: str = "zero1"
    # stop (exit status 1, checkpoints kept) after this many optimizer updates in a row were skipped because a
    # loss or gradient was not finite; 0 never stops
    skip_limit: int = setting(100, ge=0)
    device: str = setting("auto", choices=("auto", "cpu", "cuda"))
    # bf16: autocast on CUDA with fp32 weights and optimizer state; fp16: the same with a dynamic loss scale.
    # Gradient penalties (double backward) always run in fp32.
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))
    # torch.compile the networks; gradient penalties run through the uncompiled modules (compile cannot
    # differentiate twice)
    compile: bool = False
    # G_ema, the moving average of G that sample pictures, evaluations and `gandist generate` use,
    # G_ema <- beta G_ema + (1 - beta) G after every generator step, with beta as each paper defines it:
    #   ema_beta: beta itself, the same every step whatever the batch (PGGAN's official code: 0.999);
    #   ema_kimg: a half-life in thousands of images, beta = 0.5 ** (batch / (1000 ema_kimg)) (StyleGAN: 10),
    #     optionally ramped up as half-life <= images seen x ema_rampup (StyleGAN2-ADA uses 0.05).
    # Set one of the two. Neither: the family's paper (PGGAN ema_beta 0.999, StyleGAN ema_kimg 10, none for the
    # classic GANs). 0: no G_ema; pictures and metrics are G's own, run in eval mode.
    ema_kimg: float | None = setting(None, ge=0)
    ema_rampup: float = setting(0.0, ge=0)
    ema_beta: float | None = setting(None, ge=0, lt=1)
    log_every: int = setting(50, gt=0)
    sample_every: int = setting(500, gt=0)
    ckpt_every: int = setting(1000, gt=0)
    keep_ckpts: int = setting(3, ge=0)  # newest complete checkpoints kept on disk (0 = keep all)
    sample_n: int = setting(64, gt=0)  # samples in each fixed-z grid (2-D data: points in each scatter)
    deterministic: bool = True  # torch.use_deterministic_algorithms on CPU runs
    progress: bool = True  # progress bar on stderr

    @property
    def keeps_ema(self) -> bool:
        """Whether the run keeps G_ema: a positive ema_beta or ema_kimg (read after the family's default is in)."""
        return bool(self.ema_beta) or bool(self.ema_kimg)


@dataclass
class HealthConfig:
    enabled: bool = True
    every: int = setting(25, gt=0)  # evaluate the diagnoses every this many generator steps
    persist: int = setting(
        2, gt=0
    )  # evaluations in a row a condition must hold (or be gone) to start (or clear)
    window: int = setting(200, gt=0)  # steps of history each diagnosis looks at
    warmup: int = setting(
        200, ge=0
    )  # no diagnosis but non-finite before this step (every GAN starts "collapsed")
    diversity_every: int = setting(100, ge=0)  # steps between diversity probes (0 = never)
    diversity_n: int = setting(128, ge=2)  # samples in the probe (fixed latents vs a fixed real batch)
    saturated_accuracy: float = setting(
        0.95, gt=0, le=1
    )  # D accuracy (median over the window) that counts as saturated
    vanishing_ratio: float = setting(
        0.05, gt=0, lt=1
    )  # ||grad G|| median below this share of its peak = vanishing
    oscillation_chunks: int = setting(
        10, ge=3
    )  # the window is cut into this many chunks for the oscillation test
    oscillation_turns: int = setting(4, gt=0)  # direction changes of the chunk means (of chunks - 2 possible)
    # ... and the detrended loss anti-correlated with itself half a period later, at a lag of at most a
    # quarter window (two swings seen). Chunk turns alone are at chance level (5.3 of 8) for any noise:
    # on 300 smooth healthy losses (AR(1), phi 0.95) they flagged 34%, with this test 1.3%; a sine is -1
    oscillation_anticorrelation: float = setting(-0.5, ge=-1, lt=0)
    oscillation_amplitude: float = setting(0.25, gt=0)  # chunk-mean std relative to (|mean loss| + 0.1)
    collapse_ratio: float = setting(
        0.3, gt=0, lt=1
    )  # sample diversity / data diversity below this = collapse suspected
    duplicate_distance: float = setting(
        0.05, gt=0
    )  # near-duplicate: nearest other sample closer than this x data spread
    duplicate_excess: float = setting(
        0.5, gt=0, le=1
    )  # near-duplicate rate this much above the data's = collapse suspected
    # digits and stacked digits (gandist/train/coverage_alarm.py): classes (modes) the probe's samples cover,
    # as a share of those the same number of reals cover, below this = mode collapse; or the KL of their
    # class histogram to uniform this many nats above the reals'
    coverage_ratio: float = setting(0.5, gt=0, le=1)
    coverage_kl: float = setting(1.0, gt=0)


@dataclass
class MetricsConfig:
    every: int = setting(
        0, ge=0
    )  # evaluate G_ema every this many generator steps, and at the end (0 = never)
    names: str = "auto"  # comma list of fid,is,kid,pr,pr_inception,modes,classes,parzen; auto: modes,fid for 2-D data,
    # fid,is,kid,classes for digits, fid,modes for stacked digits, fid otherwise
    n: int = setting(50_000, ge=2)  # generated samples per evaluation (50,000: the published FIDs' protocol)
    extractor: str = setting("auto", choices=("auto", "inception", "digits", "points"))
    # extraction batch for evaluation; 0 = sized for the device (8 on CPU, 256 on CUDA). Results do not depend on it
    batch: int = setting(0, ge=0)
    inception: str = (
        ""  # path to the TF-ported Inception-v3 weights (else GANDIST_INCEPTION_WEIGHTS or the cache)
    )
    vgg16: str = ""  # path to torchvision's vgg16-397923af.pth, for pr on images (else GANDIST_VGG16_WEIGHTS or the cache)


@dataclass
class ScheduleConfig:
    """Progressive growing (gandist/train/schedule.py): phases measured in real images shown to D."""

    kind: str = setting("fixed", choices=("fixed", "progressive"))  # fixed: data.resolution throughout
    start_resolution: int = setting(4, ge=4)  # progressive: the first resolution
    stable_kimg: float = setting(600.0, gt=0)  # images per stabilisation phase (PGGAN: 600k; 800k at 1024)
    fade_kimg: float = setting(600.0, gt=0)  # images per transition phase, alpha rising 0 -> 1
    batch: dict[int, int] = field(default_factory=dict)  # resolution -> batch size (else data.batch_size)
    lr: dict[int, float] = field(
        default_factory=dict
    )  # resolution -> learning rate of G and D (else optim's)
    reset_optimizer: bool = True  # reset the optimizers' state at each phase boundary (the official code)

    def check(self, cfg: Config) -> None:
        if self.kind != "progressive":
            for key in ("batch", "lr"):
                if getattr(self, key):
                    raise ConfigError(
                        f"schedule.{key} is set but schedule.kind=fixed; set schedule.kind=progressive"
                    )
            return
        model_cls = type(cfg.model)
        if not getattr(model_cls, "grows", False):
            raise ConfigError(
                f"schedule.kind=progressive needs a family that grows (model.name=pggan); "
                f"model.name={cfg.model.name} trains at one resolution: set schedule.kind=fixed"
            )
        final = getattr(cfg.data, "resolution", None)
        if final is None:
            raise ConfigError(
                f"schedule.kind=progressive needs image data; data.name={cfg.data.name} is points"
            )
        start = self.start_resolution
        if start & (start - 1) or start > final:
            raise ConfigError(
                f"schedule.start_resolution={start} must be a power of two no larger than data.resolution={final}"
            )
        valid = [start * 2**k for k in range(int(math.log2(final // start)) + 1)]
        for key, table in (("batch", self.batch), ("lr", self.lr)):
            for res, value in table.items():
                if res not in valid:
                    raise ConfigError(
                        f"schedule.{key} has resolution {res}; this run grows through {', '.join(map(str, valid))}"
                    )
                if not value > 0:
                    raise ConfigError(f"schedule.{key}[{res}]={value} must be positive")
        if getattr(cfg.data, "loader", "torch") == "dali" and set(self.batch.values()) - {
            cfg.data.batch_size
        }:
            raise ConfigError(
                "data.loader=dali runs one batch size (data.batch_size); drop schedule.batch or use data.loader=torch"
            )
        micro = cfg.train.micro_batch
        group = getattr(cfg.model, "mbstd_group", getattr(cfg.model, "minibatch_std", 0))
        for res, batch in self.batch.items():
            if micro and batch % micro:
                raise ConfigError(
                    f"schedule.batch[{res}]={batch} must be divisible by train.micro_batch={micro}"
                )
            if group > 1 and batch > group and batch % group:
                raise ConfigError(
                    f"schedule.batch[{res}]={batch} must be divisible by the minibatch-std group size {group} "
                    f"(or at most {group})"
                )


def _default_section(section: str) -> Any:
    return section_class(section, DEFAULT_NAMES[section])()


def _default_loss() -> Any:
    model_cls = section_class("model", DEFAULT_NAMES["model"])
    return section_class("loss", _loss_section_name(model_cls))()


@dataclass
class Config:
    name: str = "quickstart"
    model: Any = field(default_factory=lambda: _default_section("model"))
    loss: Any = field(default_factory=_default_loss)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: Any = field(default_factory=lambda: _default_section("data"))
    train: TrainConfig = field(default_factory=TrainConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    COMPONENTS: ClassVar[tuple[str, ...]] = ("model", "loss", "data")


# ---------------------------------------------------------------------------------------------------
# Conversion between plain dicts and the typed tree


def _nearest(key: str, valid: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; valid keys: {', '.join(prefix + v for v in valid)}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotated type `tp`; ints widen to floats, nothing else converts."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"config key '{key}': expected {names}, got {type(value).__name__} {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        return {
            _coerce(k, key_tp, f"{key} key"): _coerce(v, value_tp, f"{key}[{k}]") for k, v in value.items()
        }
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string; accept what is unambiguously a number
            return float(value)
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(
            f"config key '{key}': expected bool (true/false), got {type(value).__name__} {value!r}"
        )
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got bool {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(
            f"config key '{key}': expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# Keys of the single flat sections of gandist 0.1, which every checkpoint of that version dumped whatever
# its family or data source; reading such a checkpoint's config drops them where the component has no such key.
_LEGACY_KEYS = {
    "model": {"name", "z_dim", "g_width", "d_width", "g_layers", "d_layers", "g_norm", "d_norm", "maxout_pieces",
              "dropout", "minibatch_std", "output", "latent", "latent_components", "latent_std"},
    "data": {"name", "path", "resolution", "channels", "batch_size", "num_workers", "mirror", "size", "loader",
             "verify", "dali_threads"},
}  # fmt: skip


def from_dict(cls: type, data: Any, prefix: str = "", legacy: bool = False) -> Any:
    """Build dataclass `cls` from a nested dict, strictly."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}"
        )
    hints = _hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown config key '{full}'{_nearest(str(key), valid, prefix)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value if value is not None else {}, f"{full}.", legacy)
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def _component(section: str, name: str, values: dict[str, Any], legacy: bool, model_name: str = "") -> Any:
    """Build the registered class of a component section from its values (without 'name' for loss)."""
    cls = section_class(section, name)
    valid = {f.name for f in dataclasses.fields(cls)}
    values = dict(values)
    if legacy and section in _LEGACY_KEYS:
        values = {k: v for k, v in values.items() if k in valid or k not in _LEGACY_KEYS[section]}
    for key in values:
        if key not in valid:
            owners = sorted(
                n for n, c in SECTIONS[section].items() if key in {f.name for f in dataclasses.fields(c)}
            )
            which = f"{section}.name={name}" if section != "loss" else f"model.name={model_name}"
            elsewhere = (
                f" (it belongs to {section}.name={', '.join(owners)})" if owners and section != "loss" else ""
            )
            hint = _nearest(str(key), sorted(valid), f"{section}.")
            raise ConfigError(f"unknown config key '{section}.{key}' for {which}{elsewhere}{hint}")
    return from_dict(cls, values, f"{section}.", legacy)


def build_config(tree: dict[str, Any], legacy: bool = False) -> Config:
    """The typed tree from a plain nested dict: component sections resolved by name, everything checked."""
    if not isinstance(tree, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {tree!r}")
    top = {f.name for f in dataclasses.fields(Config)}
    for key in tree:
        if key not in top:
            raise ConfigError(f"unknown config key '{key}'{_nearest(str(key), sorted(top), '')}")
    for key in Config.COMPONENTS:
        if tree.get(key) is not None and not isinstance(tree[key], dict):
            raise ConfigError(f"config section '{key}' must be a mapping, got {tree[key]!r}")
    fixed = {k: v for k, v in tree.items() if k not in Config.COMPONENTS}
    cfg = from_dict(Config, fixed, "", legacy)
    model = dict(tree.get("model") or {})
    model_name = _coerce(model.get("name", DEFAULT_NAMES["model"]), str, "model.name")
    model_cls = section_class("model", model_name)
    model.pop("name", None)
    cfg.model = _component("model", model_name, model, legacy)
    cfg.loss = _component(
        "loss", _loss_section_name(model_cls), dict(tree.get("loss") or {}), legacy, model_name
    )
    data = dict(tree.get("data") or {})
    data_name = _coerce(data.pop("name", DEFAULT_NAMES["data"]), str, "data.name")
    cfg.data = _component("data", data_name, data, legacy)
    return cfg


def section_name(cfg_section: Any) -> str:
    """The registered name of a component section instance (e.g. 'dcgan' for the model section)."""
    name = type(cfg_section).registered_name
    if not name:
        raise KeyError(f"{type(cfg_section).__name__} is not a registered config section")
    return name


@dataclass
class NamedSection(Section):
    """A section chosen by its `name` key (`model.name`, `data.name`): the name is the class's."""

    @property
    def name(self) -> str:
        return type(self).registered_name


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict; component sections carry their registered name first (model.name, data.name)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("model", "data"):
            out[f.name] = {"name": section_name(value), **dataclasses.asdict(value)}
        elif dataclasses.is_dataclass(value):
            out[f.name] = dataclasses.asdict(value)
        else:
            out[f.name] = value
    return out


def flat_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as dotted keys -> values (for tools that read settings, e.g. health advice)."""
    out: dict[str, Any] = {}
    for sec, values in to_dict(cfg).items():
        if isinstance(values, dict):
            out.update({f"{sec}.{k}": v for k, v in values.items()})
        else:
            out[sec] = values
    return out


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b=value` override to a plain dict tree (value parsed as YAML), checking the path
    as far as it can be checked before every component name is known."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like key=value, e.g. train.steps=500")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override '{assignment}': value is not valid YAML ({_yaml_problem(exc)})"
        ) from None
    parts = key.split(".")
    hints = _hints(Config)
    top = sorted(hints)
    if parts[0] not in hints:
        close = difflib.get_close_matches(parts[0], top, n=1, cutoff=0.5)
        if close:  # suggest the whole dotted key the user meant
            meant = ".".join([close[0], *parts[1:]])
            raise ConfigError(
                f"unknown config key '{key}' (no section '{parts[0]}'); did you mean '{meant}'?"
            )
        raise ConfigError(f"unknown config key '{key}'{_nearest(parts[0], top, '')}")
    if len(parts) == 1:
        if parts[0] in Config.COMPONENTS or dataclasses.is_dataclass(hints[parts[0]]):
            raise ConfigError(f"config key '{key}' is a section; set one of its keys, e.g. {key}.<key>=...")
        tree[key] = value
        return
    if parts[0] not in Config.COMPONENTS and not dataclasses.is_dataclass(hints[parts[0]]):
        raise ConfigError(f"config key '{parts[0]}' is a value, not a section; cannot set '{key}'")
    if len(parts) > 2:
        raise ConfigError(f"config key '{'.'.join(parts[:2])}' is a value, not a section; cannot set '{key}'")
    node = tree.setdefault(parts[0], {})
    if not isinstance(node, dict):
        raise ConfigError(f"config section '{parts[0]}' must be a mapping, got {node!r}")
    if parts[0] not in Config.COMPONENTS:  # fixed sections: check the key now
        cls = hints[parts[0]]
        valid = [f.name for f in dataclasses.fields(cls)]
        if parts[1] not in valid:
            raise ConfigError(f"unknown config key '{key}'{_nearest(parts[1], valid, parts[0] + '.')}")
    node[parts[1]] = value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error: PyYAML keeps the last one
    silently, so `lr_g: 0.001` further down quietly replaced the value the user was looking at."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: the base class says so in its own words
                break
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key '{key}' (first given on line {first.line + 1}); keep one of them",
                    key_node.start_mark,
                )  # fmt: skip
        return super().construct_mapping(node, deep)


def read_yaml_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror})") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if loaded is None:  # an empty file, or comments only: most likely the wrong file or a failed save
        raise ConfigError(
            f"config file {path} is empty; give a config with at least a name, or leave the file out for the "
            "quickstart defaults"
        )
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (None = the defaults), apply `--set` overrides, validate everything."""
    tree: dict[str, Any] = read_yaml_file(resolve_config_path(path)) if path is not None else {}
    for assignment in overrides:
        apply_override(tree, assignment)
    cfg = build_config(tree)
    validate(cfg)
    return cfg


def configs_dir() -> Path:
    """The shipped configs: the package's copy in an installed wheel, the checkout's configs/ otherwise."""
    from gandist.resources import configs_dir as found

    return found()


def shipped_configs() -> list[str]:
    return sorted(x.stem for x in configs_dir().glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    for candidate in (configs_dir() / p, configs_dir() / f"{p}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"config file '{path}' not found; give a path or one of the shipped configs: {', '.join(shipped_configs())}"
    )


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_from_yaml_text(text: str) -> Config:
    """A config dumped into a run directory or checkpoint (also by gandist 0.1, whose flat sections
    carried every family's keys)."""
    cfg = build_config(yaml.safe_load(text) or {}, legacy=True)
    _resolve(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------------
# Validation: an impossible config fails before training starts, with one line.


def _resolve(cfg: Config) -> None:
    """Fill what other settings derive: G_ema as the family's paper keeps it where train names no decay."""
    tc = cfg.train
    if tc.ema_beta is None and tc.ema_kimg is None:
        for key, value in type(cfg.model).paper_ema.items():
            setattr(tc, key, value)


def _check_ema(tc: TrainConfig) -> None:
    if tc.ema_beta is not None and tc.ema_kimg is not None:
        raise ConfigError(
            f"train.ema_beta={tc.ema_beta} (a decay per step) and train.ema_kimg={tc.ema_kimg} (a half-life) are "
            "both set; keep one and set the other to null"
        )
    if tc.ema_rampup > 0 and not tc.ema_kimg:
        raise ConfigError(
            f"train.ema_rampup={tc.ema_rampup} ramps up G_ema's half-life, but train.ema_kimg is "
            f"{tc.ema_kimg}; set train.ema_kimg (ema_beta is the same every step) or train.ema_rampup=0"
        )


def validate(cfg: Config) -> None:
    for name in ("optim", "train", "health", "metrics", "schedule", "model", "loss", "data"):
        check_ranges(getattr(cfg, name), name)
    if cfg.train.micro_batch and cfg.data.batch_size % cfg.train.micro_batch:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} must be divisible by train.micro_batch={cfg.train.micro_batch}"
        )
    if cfg.optim.eps_inside_sqrt and cfg.optim.name != "adam":
        raise ConfigError(f"optim.eps_inside_sqrt is an Adam setting; optim.name={cfg.optim.name} has none: remove it")
    for name in ("data", "model", "loss"):  # a source's own rules first: they are the most basic
        getattr(cfg, name).check(cfg)
    cfg.schedule.check(cfg)
    _resolve(cfg)
    _check_ema(cfg.train)
