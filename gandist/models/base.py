"""The model-family registry: builders of named networks (torch). Config classes: `config.py`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from gandist.config import Section, section_name

Builder = Callable[[Section, tuple[int, ...], str], dict[str, nn.Module]]
MODELS: dict[str, Builder] = {}
_FAMILIES = ("gandist.families.mlp.networks", "gandist.families.dcgan.networks", "gandist.families.pggan.networks",
             "gandist.families.stylegan.networks", "gandist.families.sgan.networks", "gandist.families.cyclegan.networks")


def _registry() -> dict[str, Builder]:
    import importlib

    for module in _FAMILIES:  # registration side effects; cached by the import system
        importlib.import_module(module)
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
