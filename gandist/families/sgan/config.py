"""The `model` and `loss` sections of the semi-supervised GAN (Odena 2016; Salimans et al. 2016), torch-free."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from gandist.config import Config, ConfigError, NamedSection, Section, register_section, setting


@register_section("model", "sgan")
@dataclass
class SGANModel(NamedSection):
    """The semi-supervised GAN (Odena 2016; Salimans et al. 2016, Sec. 5): D classifies K classes and
    tells fakes apart. Two sets of networks (`arch`):

    - `digits` (the CPU default): MLPs in the shape of Salimans et al.'s permutation-invariant MNIST models,
      sized for the 8x8 digits by g_width, g_layers, d_width, d_layers: D with Gaussian noise on its input and
      after each hidden layer (leaky ReLU), G with batch norm (ReLU) and tanh.
    - `salimans_mnist`: their networks exactly (openai/improved-gan, mnist_svhn_cifar10/
      train_mnist_feature_matching.py): D 1000-500-250-250-250, weight-normalised with a data-dependent
      initialisation, ReLU, Gaussian noise 0.3 on the input and 0.5 on every later layer's input; G on
      uniform noise, 500-500 softplus with batch norm, a weight-normalised sigmoid output
      (gandist/families/sgan/networks.py has each detail). Its widths are fixed: the width settings stay unset."""

    objective: ClassVar[str] = "sgan"
    has_classes: ClassVar[bool] = True
    arch: str = setting("digits", choices=("digits", "salimans_mnist"))
    z_dim: int = setting(64, gt=0)
    classes: int = setting(10, ge=2)  # K
    # implicit: D outputs K logits and the fake logit is fixed at 0 (Salimans et al. Sec. 5);
    # explicit: D outputs K + 1 logits, the last one "fake" (Odena 2016)
    fake_logit: str = setting("implicit", choices=("implicit", "explicit"))
    conditional: bool = False  # G also takes a one-hot class, so it can be asked for a digit
    g_width: int = setting(256, gt=0)  # hidden units of G (arch=digits)
    g_layers: int = setting(2, gt=0)  # (arch=digits)
    d_width: int = setting(256, gt=0)  # hidden units of D (arch=digits)
    d_layers: int = setting(3, gt=0)  # (arch=digits)
    # Gaussian noise std on D's input and on each later layer's input, training only (Salimans et al. code: 0.3,
    # 0.5; with arch=salimans_mnist on pixels in [0, 1], as theirs)
    d_input_noise: float = setting(0.3, ge=0)
    d_hidden_noise: float = setting(0.5, ge=0)

    def check(self, cfg: Config) -> None:
        classes = type(cfg.data).classes
        if not classes:
            raise ConfigError(
                f"model.name=sgan needs labelled data, but data.name={cfg.data.name} has no labels; "
                "use data.name=digits (or mnist)"
            )
        if self.classes != classes:
            raise ConfigError(f"model.classes={self.classes} but data.name={cfg.data.name} has {classes} classes; "
                              f"set model.classes={classes}")  # fmt: skip
        if self.arch == "salimans_mnist":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for key in ("g_width", "g_layers", "d_width", "d_layers"):
                if getattr(self, key) != defaults[key]:
                    raise ConfigError(
                        f"model.{key}={getattr(self, key)} is not used by model.arch=salimans_mnist (D 1000-500-250-"
                        "250-250, G 500-500, as Salimans et al.); remove it, or use model.arch=digits"
                    )


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
    # weight of the real/fake terms -E log(1 - p(fake | x)) - E log p(fake | G(z)); Salimans et al.'s code writes
    # them with a factor 0.5 (loss_unl) and weights them 1, which is 0.5 here
    unsupervised_weight: float = setting(1.0, ge=0)
    # which real rows the real/fake terms and feature matching read. all: every row (labelled ones too), one
    # fake per row. unlabelled: only the unlabelled rows, one fake per unlabelled row, as Salimans et al.'s code
    # (a labelled minibatch for the cross-entropy beside an unlabelled one for the rest, 100 fakes per 100)
    unsupervised_reals: str = setting("all", choices=("all", "unlabelled"))
    # > 0: also keep D_ema, D's weights averaged with this decay per step, and read the held-out accuracy from
    # it (`gandist eval --metrics accuracy`); Salimans et al.'s code tests with such an average at 0.9999
    d_average: float = setting(0.0, ge=0, lt=1)
    class_weight: float = setting(1.0, ge=0)  # conditional G: weight of -log p(y | G(z, y)) in G's loss

    def check(self, cfg: Config) -> None:
        data = cfg.data
        if not getattr(data, "semi_supervised", False) and self.mode == "semi":
            raise ConfigError(
                "the semi-supervised GAN needs a labelled subset: set data.labels_per_class (e.g. 10) "
                "or data.label_file, with data.labelled_batch"
            )
        if self.unsupervised_reals == "unlabelled" and self.mode == "semi":
            # one fake per unlabelled row: every (micro-)batch of n rows draws n (N - k) / N fakes
            n, k = data.batch_size, data.labelled_batch
            step = n // math.gcd(n, n - k)
            chunk = cfg.train.micro_batch or n
            if chunk % step:
                raise ConfigError(
                    f"train.micro_batch={chunk}: loss.unsupervised_reals=unlabelled draws {n - k} fakes per {n} rows "
                    f"(data.batch_size - data.labelled_batch), so micro-batches and rank shares must be multiples "
                    f"of {step}"
                )
