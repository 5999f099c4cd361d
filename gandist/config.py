"""One typed config tree: nested dataclasses, loaded from YAML, overridden with `--set a.b=value`.

Strict by design: an unknown key is an error naming the nearest valid key, a value of the wrong type
is an error naming the expected type. The resolved tree is written into every run directory and
every checkpoint, so a run can always be rebuilt from its own files.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gandist.errors import UserError


class ConfigError(UserError, ValueError):
    """A user mistake in a config file or override; the message names the key and the fix."""


@dataclass
class ModelConfig:
    name: str = "dcgan"  # mlp | dcgan
    z_dim: int = 64
    g_width: int = 64  # DCGAN: channels of the last G feature map (doubles towards 4x4); MLP: hidden units
    d_width: int = 64  # DCGAN: channels of the first D feature map; MLP: hidden units
    g_layers: int = 3  # MLP only: hidden layers of G
    d_layers: int = 2  # MLP only: hidden layers of D
    g_norm: str = "batch"  # batch | none
    d_norm: str = "batch"  # batch | layer | none  (WGAN-GP: no batch norm in the critic)
    maxout_pieces: int = 0  # MLP D: maxout units as in Goodfellow et al. 2014 (0 = LeakyReLU 0.2)
    dropout: float = 0.0  # MLP D input/hidden dropout, as in Goodfellow et al. 2014
    minibatch_std: int = 0  # group size of the minibatch standard deviation feature in D (0 = off)
    output: str = (
        "auto"  # G output nonlinearity: auto (tanh for images, linear for points) | tanh | sigmoid | linear
    )
    latent: str = "normal"  # normal | mixture (K components drawn from z ~ N(0, I), models/layers.py)
    latent_components: int = 1024  # mixture only: K, much larger than the number of data modes
    latent_std: float = 0.1  # mixture only: scale of the continuous part z[:, 1:] beside the one-hot code


@dataclass
class LossConfig:
    name: str = "nonsaturating"  # minimax | nonsaturating | lsgan | wgan | wgan-gp | hinge
    gp_weight: float = 10.0  # WGAN-GP lambda, Gulrajani et al. 2017 Alg. 1
    clip: float = 0.01  # WGAN weight clipping c, Arjovsky et al. 2017 Alg. 1
    r1_gamma: float = 0.0  # R1 on reals, Mescheder et al. 2018 (0 = off)
    reg_interval: int = 1  # apply GP/R1 every this many D steps (lazy regularization, StyleGAN2)
    drift: float = 0.0  # epsilon_drift * E[D(x)^2], PGGAN Sec. A.1 uses 0.001 (0 = off)
    lsgan_a: float = 0.0  # LSGAN target for fakes in the D loss (Mao et al. 2017, Eq. 9)
    lsgan_b: float = 1.0  # LSGAN target for reals in the D loss
    lsgan_c: float = 1.0  # LSGAN target the generator wants D to output for fakes


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | rmsprop | sgd
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5  # DCGAN paper: 0.5 stabilises training
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    decay: str = "none"  # none | linear: both learning rates fall linearly to 0 over train.steps
    # (the schedule of the official WGAN-GP code); a function of the step, so resume stays exact


@dataclass
class DataConfig:
    name: str = "digits"  # ring | grid | digits | procedural | folder
    path: str = ""  # folder only: root of PNG/JPEG images (searched recursively)
    resolution: int = 16  # image side in pixels (ignored by the 2-D sets)
    channels: int = 0  # 0 = the dataset's own (digits 1, procedural/folder 3)
    batch_size: int = 64
    num_workers: int = 0  # folder only: DataLoader worker processes
    mirror: bool = False  # random horizontal flips
    size: int = 10000  # procedural only: number of distinct images
    loader: str = (
        "torch"  # folder only: torch (PIL workers) | dali (DALI pipeline; GPU decode when CUDA is used)
    )
    verify: str = "size"  # prepared datasets: check files against manifest.json by size, or full (sha256)
    dali_threads: int = 2  # DALI CPU threads per process


@dataclass
class TrainConfig:
    steps: int = 2000  # total generator steps
    d_steps: int = 1  # k discriminator steps per generator step (Goodfellow et al. Alg. 1); WGAN n_critic=5
    seed: int = 0
    strategy: str = "single"  # single
    device: str = "auto"  # auto | cpu | cuda
    ema_beta: float = 0.999  # G_ema <- beta * G_ema + (1 - beta) * G after every G step (0 = no EMA)
    log_every: int = 50
    sample_every: int = 500
    ckpt_every: int = 1000
    keep_ckpts: int = 3  # newest complete checkpoints kept on disk (0 = keep all)
    sample_n: int = 64  # samples in each fixed-z grid (2-D data: points in each scatter)
    deterministic: bool = True  # torch.use_deterministic_algorithms on CPU runs
    progress: bool = True  # progress bar on stderr


@dataclass
class HealthConfig:
    enabled: bool = True
    every: int = 25  # evaluate the diagnoses every this many generator steps
    persist: int = 2  # evaluations in a row a condition must hold (or be gone) to start (or clear)
    window: int = 200  # steps of history each diagnosis looks at
    warmup: int = 200  # no diagnosis but non-finite before this step (every GAN starts "collapsed")
    diversity_every: int = 100  # steps between diversity probes (0 = never)
    diversity_n: int = 128  # samples in the probe (fixed latents vs a fixed real batch)
    saturated_accuracy: float = 0.95  # D accuracy (median over the window) that counts as saturated
    vanishing_ratio: float = 0.05  # ||grad G|| median below this share of its peak = vanishing
    oscillation_chunks: int = 10  # the window is cut into this many chunks for the oscillation test
    oscillation_turns: int = 4  # direction changes of the chunk means (of chunks - 2 possible)
    oscillation_amplitude: float = 0.25  # chunk-mean std relative to (|mean loss| + 0.1)
    collapse_ratio: float = 0.3  # sample diversity / data diversity below this = collapse suspected
    duplicate_distance: float = 0.05  # near-duplicate: nearest other sample closer than this x data spread
    duplicate_excess: float = 0.5  # near-duplicate rate this much above the data's = collapse suspected


@dataclass
class MetricsConfig:
    every: int = 0  # evaluate G_ema every this many generator steps, and at the end (0 = never)
    names: str = "auto"  # comma list of fid,is,kid,pr,modes,parzen; auto: modes,fid for 2-D data, fid,is,kid for digits, fid otherwise
    n: int = 2000  # generated samples per evaluation
    extractor: str = "auto"  # auto | inception | digits | points
    inception: str = (
        ""  # path to the TF-ported Inception-v3 weights (else GANDIST_INCEPTION_WEIGHTS or the cache)
    )


@dataclass
class Config:
    name: str = "quickstart"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


# ---------------------------------------------------------------------------------------------------
# Conversion between plain dicts and the typed tree


def _nearest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


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
        raise ConfigError(f"config key '{key}': expected {tp}, got {type(value).__name__} {value!r}")
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


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
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
            raise ConfigError(f"unknown config key '{full}'{_nearest(str(key), valid)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value if value is not None else {}, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b=value` override to a plain dict tree (value parsed as YAML), checking the path."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like key=value, e.g. train.steps=500")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{assignment}': value is not valid YAML ({exc})") from None
    parts = key.split(".")
    cls: Any = Config
    node = tree
    for i, part in enumerate(parts):
        hints = _hints(cls)
        valid = [f.name for f in dataclasses.fields(cls)]
        path = ".".join(parts[: i + 1])
        if part not in hints:
            suggestion = _nearest(part, valid)
            raise ConfigError(f"unknown config key '{path}'{suggestion}")
        tp = hints[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"config key '{path}' is a value, not a section; cannot set '{key}'")
            node = node.setdefault(part, {})
            cls = tp
        else:
            if dataclasses.is_dataclass(tp):
                raise ConfigError(
                    f"config key '{path}' is a section; set one of its keys, e.g. {path}.<key>=..."
                )
            node[part] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (None = the quickstart), apply `--set` overrides, validate everything."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        tree = loaded
    for assignment in overrides:
        apply_override(tree, assignment)
    cfg = from_dict(Config, tree)
    validate(cfg)
    return cfg


def configs_dir() -> Path:
    """The shipped configs: the repository's configs/ (source or editable install)."""
    return Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    for candidate in (configs_dir() / p, configs_dir() / f"{p}.yaml"):
        if candidate.is_file():
            return candidate
    shipped = sorted(x.stem for x in configs_dir().glob("*.yaml"))
    raise ConfigError(
        f"config file '{path}' not found; give a path or one of the shipped configs: {', '.join(shipped)}"
    )


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_from_yaml_text(text: str) -> Config:
    return from_dict(Config, yaml.safe_load(text) or {})


# ---------------------------------------------------------------------------------------------------
# Cross-field checks: an impossible config fails before training starts, with one line.

LOSSES = ("minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
STRATEGIES = ("single",)
DEVICES = ("auto", "cpu", "cuda")


def _one_of(key: str, value: str, valid: tuple[str, ...] | list[str]) -> None:
    if value not in valid:
        close = difflib.get_close_matches(value, list(valid), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{key}='{value}' is not known{hint}; valid: {', '.join(valid)}")


def validate(cfg: Config) -> None:
    from gandist.data import DATASETS
    from gandist.models import MODELS

    _one_of("model.name", cfg.model.name, sorted(MODELS))
    _one_of("loss.name", cfg.loss.name, LOSSES)
    _one_of("optim.name", cfg.optim.name, OPTIMIZERS)
    _one_of("data.name", cfg.data.name, sorted(DATASETS))
    _one_of("train.strategy", cfg.train.strategy, STRATEGIES)
    _one_of("train.device", cfg.train.device, DEVICES)
    _one_of("model.g_norm", cfg.model.g_norm, ("batch", "none"))
    _one_of("model.d_norm", cfg.model.d_norm, ("batch", "layer", "none"))
    _one_of("model.output", cfg.model.output, ("auto", "tanh", "sigmoid", "linear"))
    _one_of("model.latent", cfg.model.latent, ("normal", "mixture"))
    if cfg.model.latent == "mixture":
        if cfg.model.latent_components < 2:
            raise ConfigError(f"model.latent_components={cfg.model.latent_components} must be at least 2")
        if cfg.model.latent_std < 0:
            raise ConfigError(f"model.latent_std={cfg.model.latent_std} must be >= 0")
        if cfg.model.z_dim < 2:
            raise ConfigError(
                "model.latent=mixture uses z[:, 0] to pick the component: model.z_dim must be >= 2"
            )
    _one_of("optim.decay", cfg.optim.decay, ("none", "linear"))
    _one_of("data.loader", cfg.data.loader, ("torch", "dali"))
    _one_of("data.verify", cfg.data.verify, ("size", "full"))
    if cfg.data.loader == "dali" and cfg.data.name != "folder":
        raise ConfigError(
            f"data.loader=dali reads image folders; data.name={cfg.data.name} is generated in memory"
        )
    positive = {
        "data.batch_size": cfg.data.batch_size,
        "train.steps": cfg.train.steps,
        "train.d_steps": cfg.train.d_steps,
        "model.z_dim": cfg.model.z_dim,
        "model.g_width": cfg.model.g_width,
        "model.d_width": cfg.model.d_width,
        "train.log_every": cfg.train.log_every,
        "train.sample_every": cfg.train.sample_every,
        "train.ckpt_every": cfg.train.ckpt_every,
        "loss.reg_interval": cfg.loss.reg_interval,
        "train.sample_n": cfg.train.sample_n,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}={value} must be positive")
    for key in ("every", "persist", "window", "warmup", "diversity_n", "oscillation_chunks"):
        if getattr(cfg.health, key) < (0 if key == "warmup" else 1):
            raise ConfigError(f"health.{key}={getattr(cfg.health, key)} must be positive")
    if cfg.health.diversity_n < 2:
        raise ConfigError("health.diversity_n must be at least 2")
    if cfg.metrics.every < 0 or cfg.metrics.n < 2:
        raise ConfigError("metrics.every must be >= 0 and metrics.n >= 2")
    _one_of("metrics.extractor", cfg.metrics.extractor, ("auto", "inception", "digits", "points"))
    if cfg.metrics.names != "auto":
        from gandist.metrics.evaluate import METRICS

        for m in cfg.metrics.names.split(","):
            _one_of("metrics.names", m.strip(), METRICS)
    if not 0.0 <= cfg.train.ema_beta < 1.0:
        raise ConfigError(f"train.ema_beta={cfg.train.ema_beta} must be in [0, 1)")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"model.dropout={cfg.model.dropout} must be in [0, 1)")
    if cfg.model.minibatch_std < 0 or cfg.model.minibatch_std == 1:
        raise ConfigError(
            f"model.minibatch_std={cfg.model.minibatch_std} must be 0 (off) or a group size >= 2"
        )
    if cfg.model.minibatch_std and cfg.data.batch_size % cfg.model.minibatch_std:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} must be divisible by model.minibatch_std={cfg.model.minibatch_std}"
        )
    if cfg.loss.name == "wgan-gp" and cfg.model.d_norm == "batch":
        raise ConfigError(
            "loss.name=wgan-gp penalises per-sample gradients, which batch norm in the critic couples; "
            "set model.d_norm=layer or none (Gulrajani et al. 2017, Sec. 4)"
        )
    DATASETS[cfg.data.name].check(cfg.data)
    MODELS[cfg.model.name].check(cfg.model, cfg.data)
