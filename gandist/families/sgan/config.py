"""The `model` and `loss` sections of the semi-supervised GAN (Odena 2016; Salimans et al. 2016), torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gandist.config import Config, ConfigError, NamedSection, Section, register_section, setting


@register_section("model", "sgan")
@dataclass
class SGANModel(NamedSection):
    """The semi-supervised GAN (Odena 2016; Salimans et al. 2016, Sec. 5): D classifies K classes and
    tells fakes apart; the networks are Salimans et al.'s permutation-invariant MNIST MLPs (their code's
    `mnist_feature_matching.py`): D with Gaussian noise on its input and hidden layers, G with batch norm."""

    objective: ClassVar[str] = "sgan"
    has_classes: ClassVar[bool] = True
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
        classes = type(cfg.data).classes
        if not classes:
            raise ConfigError(
                f"model.name=sgan needs labelled data, but data.name={cfg.data.name} has no labels; use data.name=digits"
            )
        if self.classes != classes:
            raise ConfigError(f"model.classes={self.classes} but data.name={cfg.data.name} has {classes} classes; "
                              f"set model.classes={classes}")  # fmt: skip


@register_section("loss", "sgan")
@dataclass
class SGANLoss(Section):
    """The semi-supervised GAN (Salimans et al. 2016, Sec. 5): D's loss is the cross-entropy of the labelled
    digits over the K real classes plus the unsupervised real/fake terms on every digit; G's loss is
    feature matching (Sec. 3.1) or the non-saturating -log(1 - p_fake(G(z)))."""

    name: str = setting("feature_matching", choices=("feature_matching", "nonsaturating"))  # G's loss
    # semi: the semi-supervised GAN; supervised: the same D trained on the labelled digits alone, no G
    # (the baseline the semi-supervised accuracy is measured against)
    mode: str = setting("semi", choices=("semi", "supervised"))
    supervised_weight: float = setting(1.0, gt=0)  # weight of the labelled cross-entropy in D's loss
    unsupervised_weight: float = setting(1.0, ge=0)  # weight of the real/fake terms (Salimans et al.: 1)
    class_weight: float = setting(1.0, ge=0)  # conditional G: weight of -log p(y | G(z, y)) in G's loss

    def check(self, cfg: Config) -> None:
        data = cfg.data
        if not getattr(data, "semi_supervised", False) and self.mode == "semi":
            raise ConfigError(
                "the semi-supervised GAN needs a labelled subset: set data.labels_per_class (e.g. 10) "
                "or data.label_file, with data.labelled_batch"
            )
