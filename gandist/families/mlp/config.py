"""The `model` section of the MLP family (Goodfellow et al. 2014 and the 2-D benchmarks), torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from gandist.config import Config, ConfigError, register_section, setting
from gandist.models.config import GANModel


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
