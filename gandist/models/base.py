"""The model-family registry: builders of named networks (torch), one per family folder
(`gandist/families/<name>/networks.py`); their config classes are the folders' `config.py`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from gandist.config import Section, section_name

Builder = Callable[[Section, tuple[int, ...], str], dict[str, nn.Module]]
MODELS: dict[str, Builder] = {}


def _registry() -> dict[str, Builder]:
    from gandist import families

    families.import_part("networks")  # every family folder's builder (registration side effects)
    return MODELS


def build_networks(cfg: Section, shape: tuple[int, ...], kind: str) -> dict[str, nn.Module]:
    """The family's networks by name (`G`, `D`, ...), freshly initialised from the global RNG."""
    name = section_name(cfg)
    build = _registry()[name]
    if getattr(cfg, "latent", "normal") == "normal":
        return build(cfg, shape, kind)
    from gandist.models.layers import LatentPriorGenerator, MixtureLatent

    prior = MixtureLatent(cfg.z_dim, cfg.latent_components, cfg.latent_std)
    nets = build(dataclasses.replace(cfg, z_dim=prior.out_dim), shape, kind)
    nets["G"] = LatentPriorGenerator(prior, nets["G"])
    return nets


def initialise_from_data(nets: dict[str, nn.Module], data) -> None:
    """The data-dependent initialisation of the networks that declare one (`data_init(x)` and
    `data_init_samples`; weight normalisation, Salimans & Kingma 2016): each sees the first samples of the
    training stream (`peek`: the same on every rank, the stream not moved). Call it right after
    `build_networks`, before wrapping and EMA copies, while the global RNG is still seeded alike on every rank."""
    for net in nets.values():
        if hasattr(net, "data_init"):
            net.data_init(data.peek(net.data_init_samples))
