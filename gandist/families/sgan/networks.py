"""The semi-supervised GAN's networks (Salimans et al. 2016, Sec. 5, and their code's permutation-invariant
MNIST models): an MLP G with batch norm, optionally fed a one-hot class (class-conditional); an MLP D with
Gaussian noise on its input and hidden layers whose head gives K class logits (the fake class implicit,
its logit fixed at 0) or K + 1 (the last one "fake", Odena 2016). D exposes its last hidden layer for
feature matching (Salimans et al. Sec. 3.1).

model.arch=digits (`SGANGenerator`, `SGANDiscriminator`): the CPU-sized MLPs. model.arch=salimans_mnist
(`SalimansGenerator`, `SalimansDiscriminator`): openai/improved-gan's MNIST networks
(mnist_svhn_cifar10/train_mnist_feature_matching.py and the DenseLayer, l2normalize and BatchNormLayer of its
nn.py). They work on pixels in [0, 1] as theirs: D reads gandist's [-1, 1] images as (x + 1) / 2 and G serves
2 sigmoid(.) - 1, so D, its noise and G's output are the paper's up to that affine map."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gandist.families.sgan.config import SGANModel
from gandist.models.base import MODELS
from gandist.models.layers import output_activation
from gandist.registry import register


def classes_of(z: torch.Tensor, classes: int) -> torch.Tensor:
    """The class a latent asks for when none is given: floor(K * Phi(z[:, 0])), uniform over the K classes
    for z ~ N(0, I) and a function of z alone (so sample i is the same in any batch). [N, D] -> [N] int64."""
    u = 0.5 * (1 + torch.erf(z[:, 0].float() / math.sqrt(2)))
    return (u * classes).long().clamp_(0, classes - 1)


class SGANGenerator(nn.Module):
    def __init__(self, cfg: SGANModel, shape: tuple[int, ...], kind: str) -> None:
        super().__init__()
        self.z_dim, self.shape, self.classes, self.conditional = (
            cfg.z_dim,
            tuple(shape),
            cfg.classes,
            cfg.conditional,
        )
        width = cfg.z_dim + (cfg.classes if cfg.conditional else 0)
        layers: list[nn.Module] = []
        for _ in range(cfg.g_layers):
            layers += [nn.Linear(width, cfg.g_width), nn.BatchNorm1d(cfg.g_width), nn.ReLU()]
            width = cfg.g_width
        layers += [nn.Linear(width, math.prod(shape)), output_activation("auto", kind)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z [N, z_dim], labels [N] int64 (conditional G; None: the class `classes_of(z)`) -> [N, *shape]."""
        assert z.dim() == 2 and z.shape[1] == self.z_dim, f"G expects [N, {self.z_dim}], got {list(z.shape)}"
        if self.conditional:
            labels = classes_of(z, self.classes) if labels is None else labels
            z = torch.cat([z, F.one_hot(labels, self.classes).to(z.dtype)], dim=1)
        return self.net(z).view(z.shape[0], *self.shape)


class GaussianNoise(nn.Module):
    """x + N(0, std^2) in training mode (from the global RNG, which checkpoints keep); identity in eval."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


class SGANDiscriminator(nn.Module):
    def __init__(self, cfg: SGANModel, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.classes = cfg.classes
        self.outputs = cfg.classes + (1 if cfg.fake_logit == "explicit" else 0)
        layers: list[nn.Module] = [nn.Flatten(), GaussianNoise(cfg.d_input_noise)]
        width = math.prod(shape)
        for _ in range(cfg.d_layers):
            layers += [nn.Linear(width, cfg.d_width), nn.LeakyReLU(0.2), GaussianNoise(cfg.d_hidden_noise)]
            width = cfg.d_width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.outputs)

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """x [N, *shape] -> logits [N, K] (implicit fake) or [N, K + 1]; with_features: also the last hidden
        layer [N, d_width] (feature matching)."""
        h = self.features(x)
        logits = self.head(h)
        return (logits, h) if with_features else logits


# -- model.arch=salimans_mnist ------------------------------------------------------------------------------


class WeightNormLinear(nn.Module):
    """y = x W^T + b with W = diag(s) V / ||V|| row by row (weight normalisation, Salimans & Kingma 2016):
    direction V [out, in], scale s [out], bias b [out]. `train_scale=False` keeps s a buffer, set only by
    `data_init` (improved-gan's DenseLayer: theta ~ N(0, 0.1^2), weight_scale 1 and trainable only with
    train_scale=True, no epsilon in the norm; its l2normalize: Lasagne's Glorot-uniform W, W_scale 1 trainable,
    sqrt(1e-6 + ||W||^2))."""

    def __init__(self, n_in: int, n_out: int, train_scale: bool, init: str = "normal", eps: float = 0.0) -> None:
        super().__init__()
        self.direction = nn.Parameter(torch.empty(n_out, n_in))
        if init == "normal":
            nn.init.normal_(self.direction, std=0.1)
        else:  # Lasagne's GlorotUniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), as xavier_uniform_
            nn.init.xavier_uniform_(self.direction)
        scale = torch.ones(n_out)
        if train_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.eps = eps

    def weight(self) -> torch.Tensor:
        """W [out, in]: each row of V scaled to norm s."""
        norm = (self.direction.square().sum(1) + self.eps).sqrt() if self.eps else self.direction.norm(dim=1)
        return self.direction * (self.scale / norm)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> torch.Tensor:
        """Data-dependent initialisation on the layer's inputs x [N, in] (improved-gan's DenseLayer with
        init=True): s /= std and b = -mean / std of the pre-activations over the batch (biased std, no epsilon),
        so they leave with zero mean and unit std. Returns those normalised pre-activations [N, out]."""
        a = F.linear(x, self.weight())
        mean = a.mean(0)
        std = (a - mean).square().mean(0).sqrt()
        self.scale.div_(std)
        self.bias.copy_(-mean / std)
        return (a - mean) / std


class BatchNormBias(nn.Module):
    """Batch norm without a learned scale, then a learned bias (improved-gan's `nn.batch_norm(layer, g=None)`):
    (x - mean) / sqrt(var + 1e-6) over the batch (biased variance) + b; running statistics for eval mode."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n, eps=1e-6, affine=False)
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.bias


SALIMANS_G = (500, 500)  # G's hidden widths
SALIMANS_D = (1000, 500, 250, 250, 250)  # D's hidden widths


class SalimansGenerator(nn.Module):
    """z [N, z_dim] ~ N(0, I) -> u = Phi(z), uniform on (0, 1) as their `theano_rng.uniform` noise (so gandist's
    normal latents of sampling, interpolation and evaluation keep their meaning) -> dense 500 (Glorot, no bias)
    -> batch norm + bias -> softplus, twice -> weight-normalised dense to C*H*W -> sigmoid -> 2 s - 1 in [-1, 1].
    A conditional G appends the one-hot class to u."""

    def __init__(self, cfg: SGANModel, shape: tuple[int, ...], kind: str) -> None:
        super().__init__()
        self.z_dim, self.shape, self.classes, self.conditional = cfg.z_dim, tuple(shape), cfg.classes, cfg.conditional
        width = cfg.z_dim + (cfg.classes if cfg.conditional else 0)
        layers: list[nn.Module] = []
        for units in SALIMANS_G:
            dense = nn.Linear(width, units, bias=False)  # its bias is the batch norm's
            nn.init.xavier_uniform_(dense.weight)  # Lasagne's DenseLayer default, GlorotUniform
            layers += [dense, BatchNormBias(units), nn.Softplus()]
            width = units
        self.body = nn.Sequential(*layers)
        self.out = WeightNormLinear(width, math.prod(shape), train_scale=True, init="glorot", eps=1e-6)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z [N, z_dim], labels [N] int64 (conditional G; None: the class `classes_of(z)`) -> [N, *shape]."""
        assert z.dim() == 2 and z.shape[1] == self.z_dim, f"G expects [N, {self.z_dim}], got {list(z.shape)}"
        u = 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # the normal CDF: uniform noise
        if self.conditional:
            labels = classes_of(z, self.classes) if labels is None else labels
            u = torch.cat([u, F.one_hot(labels, self.classes).to(u.dtype)], dim=1)
        pixels = torch.sigmoid(self.out(self.body(u)))  # their output, in [0, 1]
        return (2 * pixels - 1).view(z.shape[0], *self.shape)


class SalimansDiscriminator(nn.Module):
    """x [N, *shape] in [-1, 1] -> (x + 1) / 2 -> noise 0.3 -> dense 1000 -> ReLU -> noise 0.5 -> dense 500 -> ReLU
    -> noise -> dense 250 -> ReLU, three times -> noise -> dense K (K + 1 with an explicit fake logit); every
    dense weight-normalised (the hidden scales fixed after the data-dependent initialisation, the last one
    trained). Feature matching reads the last 250-unit ReLU before its noise (their `layers[-3]`)."""

    data_init_samples = 500  # their init_param(trainx[:500])

    def __init__(self, cfg: SGANModel, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.classes = cfg.classes
        self.outputs = cfg.classes + (1 if cfg.fake_logit == "explicit" else 0)
        self.input_noise, self.noise = GaussianNoise(cfg.d_input_noise), GaussianNoise(cfg.d_hidden_noise)
        widths = (math.prod(shape), *SALIMANS_D)
        self.hidden = nn.ModuleList(WeightNormLinear(a, b, train_scale=False) for a, b in zip(widths, widths[1:]))
        self.head = WeightNormLinear(widths[-1], self.outputs, train_scale=True)

    def _layers(self, x: torch.Tensor, init: bool) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input_noise((x.flatten(1) + 1) / 2)  # pixels in [0, 1], as their data
        for i, layer in enumerate(self.hidden):
            h = h if i == 0 else self.noise(h)
            h = F.relu(layer.data_init(h) if init else layer(h))
        features = h
        h = self.noise(h)
        return (self.head.data_init(h) if init else self.head(h)), features

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """x [N, *shape] -> logits [N, K] (implicit fake) or [N, K + 1]; with_features: also the last hidden
        layer [N, 250] (feature matching)."""
        logits, features = self._layers(x, init=False)
        return (logits, features) if with_features else logits

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> None:
        """Their init pass: x [N, *shape] through the network in training mode (noise on), each layer's scale
        and bias set so its pre-activations over x have zero mean and unit std, in order, each layer seeing the
        layers below already initialised."""
        was = self.training
        self.train()
        self._layers(x, init=True)
        self.train(was)


@register(MODELS, "sgan")
def build(cfg: SGANModel, shape: tuple[int, ...], kind: str) -> dict[str, nn.Module]:
    if cfg.arch == "salimans_mnist":
        return {"G": SalimansGenerator(cfg, shape, kind), "D": SalimansDiscriminator(cfg, shape)}
    return {"G": SGANGenerator(cfg, shape, kind), "D": SGANDiscriminator(cfg, shape)}
