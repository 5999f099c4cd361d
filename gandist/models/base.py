"""Model-family interface and registry."""

from __future__ import annotations

import dataclasses

from torch import nn

from gandist.config import ConfigError, DataConfig, ModelConfig

MODELS: dict[str, type[ModelFamily]] = {}


class ModelFamily:
    @staticmethod
    def check(cfg: ModelConfig, data: DataConfig) -> None:
        """Raise ConfigError when this family cannot model the configured data."""

    @staticmethod
    def build(cfg: ModelConfig, shape: tuple[int, ...], kind: str) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError


def build_models(cfg: ModelConfig, shape: tuple[int, ...], kind: str) -> tuple[nn.Module, nn.Module]:
    if cfg.name not in MODELS:
        raise ConfigError(f"unknown model '{cfg.name}'; valid: {', '.join(sorted(MODELS))}")
    if cfg.latent == "normal":
        return MODELS[cfg.name].build(cfg, shape, kind)
    from gandist.models.layers import LatentPriorGenerator, MixtureLatent

    prior = MixtureLatent(cfg.z_dim, cfg.latent_components, cfg.latent_std)
    G, D = MODELS[cfg.name].build(dataclasses.replace(cfg, z_dim=prior.out_dim), shape, kind)
    return LatentPriorGenerator(prior, G), D
