"""The `model` section of StyleGAN (Karras et al. 2019), torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gandist.config import Config, NamedSection, register_section, setting
from gandist.models.config import check_growing


@register_section("model", "stylegan")
@dataclass
class StyleGANModel(NamedSection):
    """Karras et al. 2019 (StyleGAN), Sec. 2-3 and Appendix C, with the official defaults
    (NVlabs/stylegan networks_stylegan.py G_style / G_mapping / G_synthesis): a mapping network z -> w, a
    synthesis network from a learned constant whose every layer ends in noise + bias + leaky ReLU + AdaIN
    with a style A(w), progressive growing like PGGAN; D is PGGAN's with the blur before each downsampling of
    the official D_basic. Trained with the classic objective (the paper's FFHQ runs: non-saturating loss with
    R1 gamma 10, set in the loss section)."""

    grows: ClassVar[bool] = True  # G and D implement set_growth(resolution, alpha)
    # G_ema with a half-life of 10k images: beta = 0.5 ** (batch / 10000) per step (official training_loop.py:
    # G_smoothing_kimg 10)
    paper_ema: ClassVar[dict[str, float]] = {"ema_kimg": 10.0}

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
    # D: the same low-pass before each downsampling conv, the block's activation after the pool (official
    # D_basic: act(bias(conv2d_downscale2d(blur(x))))); false: PGGAN's D block (Table 2)
    d_blur: bool = True
    # the fused layer epilogue (gandist.kernels.styled_epilogue): auto = Triton on CUDA, the pure-torch
    # reference elsewhere; triton on CPU runs the Triton interpreter (tests)
    epilogue_impl: str = setting("auto", choices=("auto", "triton", "reference"))
    # noise when G is in eval mode (G_ema's pictures, evaluation, `gandist generate`): const = the fixed noise
    # images stored with G (pictures and metrics are then functions of z alone; stylegan2-ada's generate.py
    # default), random = fresh noise from the global RNG each call. Training always draws fresh noise.
    sample_noise: str = setting("const", choices=("const", "random", "none"))

    def check(self, cfg: Config) -> None:
        check_growing(cfg, "stylegan", "StyleGAN", self.fmap_base, self.mbstd_group)
