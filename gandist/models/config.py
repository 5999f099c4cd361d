"""What several model families' `model` sections share (torch-free): the keys of the classic families
(`GANModel`: MLP, DCGAN) and the rules of the growing families (`check_growing`: PGGAN, StyleGAN).

Each family's own section lives in its folder (`gandist/families/<name>/config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gandist.config import Config, ConfigError, NamedSection, setting

PGGAN_RESOLUTIONS = tuple(2**k for k in range(2, 11))  # 4 .. 1024, the paper's CelebA-HQ top


@dataclass
class GANModel(NamedSection):
    """Keys shared by the classic families (one G fed z ~ N(0, I), one D with one logit)."""

    objective: ClassVar[str] = "classic"
    z_dim: int = setting(64, gt=0)
    g_width: int = setting(
        64, gt=0
    )  # DCGAN: channels of the last G feature map (doubles towards 4x4); MLP: hidden units
    d_width: int = setting(64, gt=0)  # DCGAN: channels of the first D feature map; MLP: hidden units
    g_norm: str = setting("batch", choices=("batch", "none"))
    d_norm: str = setting("batch", choices=("batch", "layer", "none"))  # WGAN-GP: no batch norm in the critic
    minibatch_std: int = setting(
        0, ge=0
    )  # group size of the minibatch standard deviation feature in D (0 = off)
    output: str = setting("auto", choices=("auto", "tanh", "sigmoid", "linear"))  # G output nonlinearity:
    # auto = tanh for images, linear for points
    latent: str = setting(
        "normal", choices=("normal", "mixture")
    )  # mixture: K components drawn from z ~ N(0, I)
    latent_components: int = setting(1024, ge=2)  # mixture only: K, much larger than the number of data modes
    latent_std: float = setting(
        0.1, ge=0
    )  # mixture only: scale of the continuous part z[:, 1:] beside the one-hot code

    def check(self, cfg: Config) -> None:
        if self.minibatch_std == 1:
            raise ConfigError("model.minibatch_std=1 must be 0 (off) or a group size >= 2")
        if self.minibatch_std and cfg.data.batch_size % self.minibatch_std:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} must be divisible by model.minibatch_std={self.minibatch_std}"
            )
        micro = cfg.train.micro_batch
        if self.minibatch_std and micro and micro % self.minibatch_std:
            raise ConfigError(
                f"train.micro_batch={micro} must be divisible by model.minibatch_std={self.minibatch_std}"
            )
        if self.latent == "mixture" and self.z_dim < 2:
            raise ConfigError(
                "model.latent=mixture uses z[:, 0] to pick the component: model.z_dim must be >= 2"
            )


def check_pack(cfg: Config, pack: int, group: int) -> None:
    """Packing (PacGAN) reads consecutive samples of every batch D sees: the batch and the micro-batch must
    hold whole packs, and the minibatch-stddev groups count packed inputs. (Per rank: check_pack_per_rank.)"""
    if pack == 1:
        return
    batch, micro = cfg.data.batch_size, cfg.train.micro_batch
    if batch % pack:
        raise ConfigError(f"data.batch_size={batch} must be divisible by model.pack={pack}: D judges whole packs of "
                          f"{pack} samples; use a batch of {max(pack, batch - batch % pack)} or a pack that divides {batch}")  # fmt: skip
    if micro and micro % pack:
        raise ConfigError(f"train.micro_batch={micro} must be divisible by model.pack={pack}: a micro-batch holds "
                          "whole packs")  # fmt: skip
    packed = (micro or batch) // pack  # D's inputs per (micro-)batch; fewer than the group are one group
    if group and packed > group and packed % group:
        raise ConfigError(f"model.minibatch_std={group} groups D's packed inputs, {packed} per batch with "
                          f"model.pack={pack}; choose a group that divides {packed}")  # fmt: skip


def check_pack_per_rank(cfg: Config, world: int) -> None:
    """Under `world` ranks each rank packs its own share of the global batch: the share holds whole packs."""
    pack = getattr(cfg.model, "pack", 1)
    local = cfg.data.batch_size // world
    if pack > 1 and local % pack:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} over {world} ranks leaves {local} per rank, not divisible by "
            f"model.pack={pack} (each rank packs its own samples); use a global batch that is a multiple of {world * pack}"
        )


def check_growing(cfg: Config, name: str, label: str, fmap_base: int, mbstd_group: int) -> None:
    """The rules of a family built on PGGAN's growing networks (PGGAN, StyleGAN): a power-of-two square
    resolution in 4..1024, at least one feature map at the top, and batches that the minibatch-stddev
    group divides."""
    resolution = getattr(cfg.data, "resolution", None)
    if resolution is None:
        raise ConfigError(
            f"model.name={name} needs image data, but data.name={cfg.data.name} is 2-D points; use model.name=mlp"
        )
    if resolution not in PGGAN_RESOLUTIONS:
        raise ConfigError(
            f"data.resolution={resolution}: {label} grows to a power of two between 4 and 1024; "
            f"use one of {', '.join(map(str, PGGAN_RESOLUTIONS))}"
        )
    if fmap_base < resolution // 2:  # nf(R) = int(fmap_base / (R / 2)) must be >= 1
        raise ConfigError(
            f"model.fmap_base={fmap_base} leaves no feature maps at {resolution}x{resolution}; "
            f"use model.fmap_base >= {resolution // 2}"
        )
    if mbstd_group == 1:
        raise ConfigError("model.mbstd_group=1 must be 0 (off) or a group size >= 2")
    # A batch smaller than the group is one group (the official min(group, batch)); a larger one must divide.
    batch, group = cfg.data.batch_size, mbstd_group
    if group and batch > group and batch % group:
        raise ConfigError(
            f"data.batch_size={batch} must be divisible by model.mbstd_group={group} (or at most {group})"
        )
    micro = cfg.train.micro_batch
    if group and micro and micro > group and micro % group:
        raise ConfigError(
            f"train.micro_batch={micro} must be divisible by model.mbstd_group={group} (or at most {group})"
        )


