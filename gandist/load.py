"""One network out of a checkpoint: `load_network(path, name)`, the one loader behind generate, interpolate,
style-mix, translate and eval, and `load_into`, which the trainer's resume shares.

A checkpoint's `models.safetensors` keeps every network's tensors under its name (`G.`, `D.`, `G_ema.`,
`G_AB.` ...) and `state.json` keeps the resolved config, the data shape and kind and the growth stage. The
network is rebuilt from that config by its family's builder, so a checkpoint needs no source code and
loading unpickles nothing. Only weights and state.json are read and verified: a damaged optimizer or RNG
state does not stop sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gandist.config import Config, config_from_yaml_text
from gandist.errors import CheckpointError, UserError
from gandist.train import checkpoint as ckpt


@dataclass
class LoadedNetwork:
    net: nn.Module  # in eval mode, its weights loaded (a growing one at the stage its run reached)
    cfg: Config  # the run's resolved config
    kind: str  # "images" | "points"
    shape: tuple[int, ...]  # one sample: [C, H, W] or [2]
    step: int  # generator steps the run had taken
    path: Path  # the checkpoint folder


def weights_of(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint keeps under `name.`, with that prefix removed."""
    prefix = f"{name}."
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], name: str) -> str | None:
    """Load the weights kept under `name` into `module`; None, or the first line of why they do not fit
    (names or shapes differ from what the module's config builds), for the caller's one-line error."""
    weights = weights_of(tensors, name)
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:  # name the first tensor that differs, with both shapes, where one does
        return ckpt.first_mismatch(module.state_dict(), weights) or str(exc).strip().splitlines()[0]
    return None


def load_network(
    path: str | Path, name: str, refuse: Callable[[Config, Path], None] | None = None
) -> LoadedNetwork:
    """The network `name` (e.g. 'G_ema', 'G', 'D', 'G_AB') of a checkpoint folder, a run directory (its newest
    checkpoint that verifies) or a checkpoints/ folder. An EMA network is built as the network it averages
    (the family's objective declares which); asked of a run that kept none, it is that network itself.
    `refuse(cfg, path)` may raise a UserError naming the right command before anything is built (a tool
    that needs a family with some capability)."""
    from gandist.models import build_networks
    from gandist.objectives.base import objective_class

    p = ckpt.resolve_checkpoint(path, files=ckpt.READER_FILES)
    data = ckpt.read_weights(p)
    state = data["state"]
    try:
        cfg = config_from_yaml_text(state["config"])
        shape, kind, step = tuple(state["data_shape"]), state["data_kind"], int(state["step"])
    except KeyError as exc:
        raise CheckpointError(
            f"checkpoint '{p}': state.json lacks {exc} (not a gandist checkpoint?)"
        ) from None
    except UserError as exc:  # a config this version no longer accepts
        raise CheckpointError(f"checkpoint '{p}': its config cannot be used ({exc})") from None
    if refuse is not None:
        refuse(cfg, p)
    nets = build_networks(cfg.model, shape, kind)
    averaged = objective_class(type(cfg.model).objective).ema
    built = averaged.get(name, name)
    if name in averaged and not cfg.train.keeps_ema and not weights_of(data["tensors"], name):
        # a run without G_ema samples G itself (the classic GANs): asked for G_ema, it gets G. An average with a
        # decay of its own (the semi-supervised D_ema) is kept whatever train says, and is read where it is
        name = built
    if built not in nets:
        raise UserError(f"checkpoint '{p}' holds a {cfg.model.name} model, which has no network '{name}' "
                        f"(it has {', '.join(nets)})")  # fmt: skip
    net = nets[built]
    if not weights_of(data["tensors"], name):
        raise CheckpointError(f"checkpoint '{p}': models.safetensors holds no {name} weights")
    why = load_into(net, data["tensors"], name)
    if why:
        raise CheckpointError(f"checkpoint '{p}': {name} weights do not fit its config ({why})")
    stage = state.get("stage")
    if stage and hasattr(net, "set_growth"):  # a growing network works at the resolution its run reached
        net.set_growth(int(stage["resolution"]), float(stage["alpha"]))
    return LoadedNetwork(net.eval(), cfg, kind, shape, step, p)

