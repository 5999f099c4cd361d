"""The `model` section of PGGAN (Karras et al. 2018), torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gandist.config import Config, NamedSection, register_section, setting
from gandist.models.config import check_growing


@register_section("model", "pggan")
@dataclass
class PGGANModel(NamedSection):
    """Karras et al. 2018 (PGGAN), Table 2 and the official networks.py defaults: G and D grow from 4x4
    to data.resolution. Trained with the classic objective; the paper's loss is WGAN-GP (lambda 10) plus
    drift 0.001 (Appendix A.1), set in the loss section."""

    grows: ClassVar[bool] = True  # G and D implement set_growth(resolution, alpha)
    # G_ema <- 0.999 G_ema + 0.001 G once per minibatch, whatever its size (official train.py: G_smoothing)
    paper_ema: ClassVar[dict[str, float]] = {"ema_beta": 0.999}

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
