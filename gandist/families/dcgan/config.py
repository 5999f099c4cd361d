"""The `model` section of DCGAN (Radford et al. 2016), torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gandist.config import Config, ConfigError, register_section, setting
from gandist.models.config import GANModel, check_pack

DCGAN_RESOLUTIONS = (8, 16, 32, 64, 128)


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
