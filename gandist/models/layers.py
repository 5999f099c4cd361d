"""Building blocks shared by the model families."""

from __future__ import annotations

import torch
from torch import nn


class MinibatchStdDev(nn.Module):
    """Append the mean standard deviation over groups of the minibatch as one extra feature
    (Karras et al. 2018, PGGAN Sec. 3). Gives D a direct view of sample diversity, which
    counteracts mode collapse. Works for [N, F] and [N, C, H, W] inputs.

    Group size G must divide N; every sample of a group receives its group's statistic.
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"minibatch std: batch {n} is not divisible by group size {g}")
        y = x.reshape(g, n // g, *x.shape[1:])  # [G, M, ...]: sample i is in group i % M
        y = y - y.mean(dim=0, keepdim=True)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [M, ...] std over the group
        y = y.reshape(n // g, -1).mean(dim=1)  # [M] averaged over features and pixels
        y = y.repeat(g)  # [N]
        if x.dim() == 2:
            return torch.cat([x, y[:, None]], dim=1)
        return torch.cat([x, y[:, None, None, None].expand(n, 1, *x.shape[2:])], dim=1)


class Maxout(nn.Module):
    """Linear layer followed by a max over `pieces` linear pieces (Goodfellow et al. 2013)."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.view(x.shape[0], -1, self.pieces).amax(dim=2)


def output_activation(name: str, kind: str) -> nn.Module:
    """G's output nonlinearity. 'auto': tanh for images in [-1, 1], identity for 2-D points."""
    if name == "auto":
        name = "tanh" if kind == "images" else "linear"
    return {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "linear": nn.Identity()}[name]


class MixtureLatent(nn.Module):
    """A K-component mixture latent drawn from a standard normal z, so every caller still samples
    z ~ N(0, I) and the mapping is a deterministic part of G.

    The component is k = floor(K * Phi(z[:, 0])), uniform over 0..K-1; the output is
    [one_hot(k), std * z[:, 1:]]. G's first layer turns the one-hot into a learned per-component offset,
    so this is a Gaussian mixture with learned means (DeLiGAN, Gurumurthy et al. 2017; GM-GAN,
    Ben-Yosef & Weinshall 2018). A continuous G fed a connected latent must put mass between
    disconnected data modes (Tanielian et al. 2020 bound it below); the gaps between components
    carry no mass, so G need not interpolate between modes. K need not match the number of modes M,
    but K should be much larger: equal shares need K/M components per mode, and when M does not
    divide K a few components straddle two modes and draw the bridge between them; their share of
    the mass is at most about M/K.
    """

    def __init__(self, z_dim: int, components: int, std: float = 0.1) -> None:
        super().__init__()
        self.z_dim, self.components, self.std = z_dim, components, std
        self.out_dim = components + z_dim - 1

    def component(self, z: torch.Tensor) -> torch.Tensor:
        u = 0.5 * (1.0 + torch.erf(z[:, 0].double() / 2.0**0.5))  # Phi in float64: exact bin edges
        return (u * self.components).floor().long().clamp_(0, self.components - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(self.component(z), self.components).to(z.dtype)
        return torch.cat([onehot, z[:, 1:] * self.std], dim=1)


class LatentPriorGenerator(nn.Module):
    """G = net(prior(z)); keeps `z_dim` and `shape` of the wrapped generator's interface."""

    def __init__(self, prior: MixtureLatent, net: nn.Module) -> None:
        super().__init__()
        self.prior, self.net = prior, net
        self.z_dim, self.shape = prior.z_dim, net.shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 2 and z.shape[1] == self.z_dim, f"G expects [N, {self.z_dim}], got {list(z.shape)}"
        return self.net(self.prior(z))
