"""The `model` and `loss` sections of CycleGAN (Zhu et al. 2017), torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gandist.config import Config, ConfigError, NamedSection, Section, register_section, registered, setting


@register_section("model", "cyclegan")
@dataclass
class CycleGANModel(NamedSection):
    """CycleGAN (Zhu et al. 2017, Appendix 7.2, and the official pytorch-CycleGAN-and-pix2pix defaults):
    ResNet generators G_AB, G_BA (c7s1-64, d128, d256, `blocks` residual blocks, u128, u64, c7s1-3; instance
    norm, reflection padding) and 70x70 PatchGAN discriminators D_A, D_B (C64-C128-C256-C512, instance norm)."""

    objective: ClassVar[str] = "cyclegan"
    translates: ClassVar[bool] = True
    label: ClassVar[str] = "CycleGAN"
    g_width: int = setting(64, gt=0)  # ngf: channels of G's first layer (x2 per downsampling)
    d_width: int = setting(64, gt=0)  # ndf: channels of D's first layer
    blocks: int = setting(9, gt=0)  # residual blocks: 9 at 256 px, 6 at 128 px (Appendix 7.2)
    d_layers: int = setting(3, gt=0)  # strided layers of the PatchGAN: 3 gives 70x70 receptive fields

    def check(self, cfg: Config) -> None:
        if type(cfg.data).domains != 2:
            two = " or ".join(n for n, c in registered("data").items() if getattr(c, "domains", 1) == 2)
            raise ConfigError(
                f"model.name=cyclegan translates between two domains, but data.name={cfg.data.name} is one; "
                f"use data.name={two} (unpaired: trainA/ and trainB/ folders)"
            )


@register_section("loss", "cyclegan")
@dataclass
class CycleGANLoss(Section):
    """CycleGAN (Zhu et al. 2017, Sec. 3-4 and 7.1): least-squares adversarial losses, cycle consistency
    lambda ||G_BA(G_AB(a)) - a||_1 + lambda ||G_AB(G_BA(b)) - b||_1, identity 0.5 lambda (||G_AB(b) - b||_1 +
    ||G_BA(a) - a||_1), and each D trained on fakes from a pool of past fakes."""

    name: str = setting("lsgan", choices=("lsgan",))  # Sec. 4: least squares (Mao et al. 2017)
    cycle: float = setting(10.0, ge=0)  # lambda, Sec. 4
    identity: float = setting(0.5, ge=0)  # identity weight as a share of lambda (Sec. 5.2: 0.5 lambda)
    pool: int = setting(50, ge=0)  # past fakes kept for each D (Sec. 4, after Shrivastava et al.; 0 = none)
