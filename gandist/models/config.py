"""The `model` section of each model family: its keys, their ranges and its checks (torch-free).

The networks live beside this file (`mlp.py`, `dcgan.py`, `pggan.py`, `stylegan.py`, `sgan.py`,
`cyclegan.py`) and register their builders under the same names in `gandist.models.base.MODELS`. A family
also names its objective (`gandist/objectives/`), whose config class is the `loss` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gandist.config import Config, ConfigError, NamedSection, register_section, setting

DCGAN_RESOLUTIONS = (8, 16, 32, 64, 128)
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


@register_section("model", "mlp")
@dataclass
class MLPModel(GANModel):
    """The multilayer perceptrons of Goodfellow et al. 2014 and of the 2-D benchmarks."""

    g_layers: int = setting(3, gt=0)  # hidden layers of G
    d_layers: int = setting(2, gt=0)  # hidden layers of D
    maxout_pieces: int = setting(0, ge=0)  # D: maxout units as in Goodfellow et al. 2014 (0 = LeakyReLU 0.2)
    dropout: float = setting(0.0, ge=0, lt=1)  # D input/hidden dropout, as in Goodfellow et al. 2014

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        if self.maxout_pieces == 1:
            raise ConfigError(
                "model.maxout_pieces=1 is a plain linear layer; use 0 (LeakyReLU) or >= 2 pieces"
            )


@register_section("model", "dcgan")
@dataclass
class DCGANModel(GANModel):
    """Radford et al. 2016: transposed-convolution G, strided-convolution D."""

    d_features: ClassVar[bool] = True  # D.features(x): its last hidden layer (loss.feature_matching)
    # PacGAN (Lin et al. 2018): D judges this many samples at once, concatenated along channels (1 = off);
    # the paper's PacDCGAN uses 2, 3 and 4
    pack: int = setting(1, gt=0)

    def check(self, cfg: Config) -> None:
        super().check(cfg)
        check_pack(cfg, self.pack, self.minibatch_std)
        resolution = getattr(cfg.data, "resolution", None)
        if resolution is None:
            raise ConfigError(
                f"model.name=dcgan needs image data, but data.name={cfg.data.name} is 2-D points; use model.name=mlp"
            )
        if resolution not in DCGAN_RESOLUTIONS:
            raise ConfigError(
                f"data.resolution={resolution} is not supported by model.name=dcgan; "
                f"use one of {', '.join(map(str, DCGAN_RESOLUTIONS))}"
            )


def check_pack(cfg: Config, pack: int, group: int) -> None:
    """Packing reads consecutive samples of every batch D sees: the batch and the micro-batch must hold whole
    packs, and the minibatch-stddev groups count packed inputs. (The per-rank batch: gandist.train.loop.)"""
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


@register_section("model", "pggan")
@dataclass
class PGGANModel(NamedSection):
    """Karras et al. 2018 (PGGAN), Table 2 and the official networks.py defaults: G and D grow from 4x4
    to data.resolution. Trained with the classic objective; the paper's loss is WGAN-GP (lambda 10) plus
    drift 0.001 (Appendix A.1), set in the loss section."""

    grows: ClassVar[bool] = True  # G and D implement set_growth(resolution, alpha)

    objective: ClassVar[str] = "classic"
    z_dim: int = setting(512, gt=0)  # latent size (Table 2: 512)
    fmap_base: int = setting(
        8192, gt=0
    )  # channels at resolution r: min(fmap_base / 2^(log2 r - 1), fmap_max)
    fmap_max: int = setting(512, gt=0)
    mbstd_group: int = setting(4, ge=0)  # minibatch stddev group size in D's 4x4 block (Sec. 3: 4; 0 = off)
    normalize_latents: bool = True  # pixel norm on z before G's first layer (official code)
    pixelnorm: bool = True  # pixelwise feature normalisation after every G conv (Sec. 4.2)
    equalized_lr: bool = True  # N(0, 1) weights scaled at run time by He's constant (Sec. 4.1);
    # false: plain layers with the same (He) init, for ablations
    output: str = setting("linear", choices=("linear", "tanh"))  # G output: linear as the paper

    def check(self, cfg: Config) -> None:
        check_growing(cfg, "pggan", "PGGAN", self.fmap_base, self.mbstd_group)


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


@register_section("model", "stylegan")
@dataclass
class StyleGANModel(NamedSection):
    """Karras et al. 2019 (StyleGAN), Sec. 2-3 and Appendix C, with the official defaults
    (NVlabs/stylegan networks_stylegan.py G_style / G_mapping / G_synthesis): a mapping network z -> w, a
    synthesis network from a learned constant whose every layer ends in noise + bias + leaky ReLU + AdaIN
    with a style A(w), progressive growing like PGGAN; D is PGGAN's. Trained with the classic objective
    (the paper's FFHQ runs: non-saturating loss with R1 gamma 10, set in the loss section)."""

    grows: ClassVar[bool] = True  # G and D implement set_growth(resolution, alpha)

    objective: ClassVar[str] = "classic"
    z_dim: int = setting(512, gt=0)  # latent z (Sec. 2: 512)
    w_dim: int = setting(512, gt=0)  # intermediate latent w (dlatent_size 512)
    mapping_layers: int = setting(8, gt=0)  # Sec. 2: an 8-layer MLP
    mapping_width: int = setting(512, gt=0)  # hidden units of the mapping MLP (mapping_fmaps 512)
    mapping_lr_mul: float = setting(0.01, gt=0, le=1)  # Appendix C: the mapping learns 100x slower
    fmap_base: int = setting(
        8192, gt=0
    )  # synthesis and D channels: min(fmap_base / 2^(log2 r - 1), fmap_max)
    fmap_max: int = setting(512, gt=0)
    mbstd_group: int = setting(4, ge=0)  # D's minibatch stddev group size (0 = off)
    style_mixing: float = setting(0.9, ge=0, le=1)  # Sec. 3.1: share of training batches with two latents
    w_avg_beta: float = setting(0.995, ge=0, lt=1)  # w_avg <- mean(w) + beta (w_avg - mean(w)) per G pass
    noise: bool = True  # per-pixel noise inputs (Sec. 3.2)
    blur: bool = True  # [1, 2, 1] binomial low-pass after each upsampling (Sec. 2, from Zhang 2019)
    # the fused layer epilogue (gandist.kernels.styled_epilogue): auto = Triton on CUDA, the pure-torch
    # reference elsewhere; triton on CPU runs the Triton interpreter (tests)
    epilogue_impl: str = setting("auto", choices=("auto", "triton", "reference"))
    # noise when G is in eval mode (G_ema's pictures, evaluation, `gandist generate`): const = the fixed noise
    # images stored with G (pictures and metrics are then functions of z alone; stylegan2-ada's generate.py
    # default), random = fresh noise from the global RNG each call. Training always draws fresh noise.
    sample_noise: str = setting("const", choices=("const", "random", "none"))

    def check(self, cfg: Config) -> None:
        check_growing(cfg, "stylegan", "StyleGAN", self.fmap_base, self.mbstd_group)


@register_section("model", "sgan")
@dataclass
class SGANModel(NamedSection):
    """The semi-supervised GAN (Odena 2016; Salimans et al. 2016, Sec. 5): D classifies K classes and
    tells fakes apart; the networks are Salimans et al.'s permutation-invariant MNIST MLPs (their code's
    `mnist_feature_matching.py`): D with Gaussian noise on its input and hidden layers, G with batch norm."""

    objective: ClassVar[str] = "sgan"
    z_dim: int = setting(64, gt=0)
    classes: int = setting(10, ge=2)  # K
    # implicit: D outputs K logits and the fake logit is fixed at 0 (Salimans et al. Sec. 5);
    # explicit: D outputs K + 1 logits, the last one "fake" (Odena 2016)
    fake_logit: str = setting("implicit", choices=("implicit", "explicit"))
    conditional: bool = False  # G also takes a one-hot class, so it can be asked for a digit
    g_width: int = setting(256, gt=0)  # hidden units of G
    g_layers: int = setting(2, gt=0)
    d_width: int = setting(256, gt=0)  # hidden units of D
    d_layers: int = setting(3, gt=0)
    # Gaussian noise std on D's input and after each hidden layer, training only (Salimans et al. code: 0.3, 0.5)
    d_input_noise: float = setting(0.3, ge=0)
    d_hidden_noise: float = setting(0.5, ge=0)

    def check(self, cfg: Config) -> None:
        classes = {"digits": 10}.get(cfg.data.name)
        if classes is None:
            raise ConfigError(
                f"model.name=sgan needs labelled data, but data.name={cfg.data.name} has no labels; use data.name=digits"
            )
        if self.classes != classes:
            raise ConfigError(f"model.classes={self.classes} but data.name={cfg.data.name} has {classes} classes; "
                              f"set model.classes={classes}")  # fmt: skip


@register_section("model", "cyclegan")
@dataclass
class CycleGANModel(NamedSection):
    """CycleGAN (Zhu et al. 2017, Appendix 7.2, and the official pytorch-CycleGAN-and-pix2pix defaults):
    ResNet generators G_AB, G_BA (c7s1-64, d128, d256, `blocks` residual blocks, u128, u64, c7s1-3; instance
    norm, reflection padding) and 70x70 PatchGAN discriminators D_A, D_B (C64-C128-C256-C512, instance norm)."""

    objective: ClassVar[str] = "cyclegan"
    g_width: int = setting(64, gt=0)  # ngf: channels of G's first layer (x2 per downsampling)
    d_width: int = setting(64, gt=0)  # ndf: channels of D's first layer
    blocks: int = setting(9, gt=0)  # residual blocks: 9 at 256 px, 6 at 128 px (Appendix 7.2)
    d_layers: int = setting(3, gt=0)  # strided layers of the PatchGAN: 3 gives 70x70 receptive fields

    def check(self, cfg: Config) -> None:
        if cfg.data.name not in ("unpaired", "shapes"):
            raise ConfigError(
                f"model.name=cyclegan translates between two domains, but data.name={cfg.data.name} is one; "
                "use data.name=unpaired (trainA/ and trainB/ folders) or shapes"
            )
