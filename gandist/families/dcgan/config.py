"""The `model` section of DCGAN (Radford et al. 2016), torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from gandist.config import Config, ConfigError, register_section
from gandist.models.config import GANModel

DCGAN_RESOLUTIONS = (8, 16, 32, 64, 128)

@register_section("model", "dcgan")
@dataclass
class DCGANModel(GANModel):
    """Radford et al. 2016: transposed-convolution G, strided-convolution D."""

    def check(self, cfg: Config) -> None:
        super().check(cfg)
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
