"""Building blocks shared by the model families."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


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


# ---------------------------------------------------------------------------------------------------
# Progressive GANs (Karras et al. 2018, "Progressive Growing of GANs", Sec. 4) and the style-based
# networks built on them.


def _weight_scales(fan_in: int, gain: float, lr_mul: float, equalized: bool) -> tuple[float, float, float]:
    """(init std, runtime weight scale, He's constant) of a layer; see EqualizedLinear."""
    he = gain / math.sqrt(fan_in)  # He et al. 2015: std that keeps activations' second moment
    if equalized:
        return 1.0 / lr_mul, he * lr_mul, he
    return he / lr_mul, lr_mul, he


class EqualizedLinear(nn.Module):
    """Fully connected layer with the equalized learning rate of PGGAN (Sec. 4.1) and StyleGAN's
    learning-rate multiplier. [N, in_features] -> [N, out_features].

    The stored weight [out, in] starts at N(0, 1/lr_mul^2) and is multiplied at run time by
    `weight_scale` = he * lr_mul, he = gain / sqrt(in_features) (He's constant; gain sqrt(2) for the
    leaky-ReLU layers, 1 for linear outputs): every weight then has the same dynamic range, so Adam's
    scale-invariant step changes each layer at the same relative speed. lr_mul < 1 slows a layer down
    (StyleGAN's mapping network, lr_mul 0.01, Karras et al. 2019 Sec. C). The bias starts at
    `bias_init` (stored divided by lr_mul) and is multiplied by `bias_scale` = lr_mul.
    `equalized=False` is the plain layer for ablations: the same effective init (std he), weight_scale lr_mul.
    Source: tkarras/progressive_growing_of_gans networks.py `get_weight`/`dense`, NVlabs/stylegan `G_mapping`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        gain: float = math.sqrt(2),
        lr_mul: float = 1.0,
        bias: bool = True,
        bias_init: float = 0.0,
        equalized: bool = True,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        init_std, self.weight_scale, self.he_std = _weight_scales(in_features, gain, lr_mul, equalized)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * init_std)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul)) if bias else None
        self.bias_scale = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.bias_scale if self.bias is not None else None
        return F.linear(x, self.weight * self.weight_scale, b)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, weight_scale={self.weight_scale:.4g}"


class EqualizedConv2d(nn.Module):
    """2-D convolution with the equalized learning rate (PGGAN Sec. 4.1), stride 1, 'same' padding
    (odd kernels). [N, in_channels, H, W] -> [N, out_channels, H, W].

    As EqualizedLinear with fan_in = in_channels * kernel_size^2: weight [out, in, k, k] ~ N(0, 1/lr_mul^2)
    times `weight_scale` = gain / sqrt(fan_in) * lr_mul at run time; bias starts at `bias_init`, scaled by lr_mul.
    Source: tkarras/progressive_growing_of_gans networks.py `conv2d`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        gain: float = math.sqrt(2),
        lr_mul: float = 1.0,
        bias: bool = True,
        bias_init: float = 0.0,
        equalized: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(
                f"EqualizedConv2d pads to the same size: kernel_size must be odd, got {kernel_size}"
            )
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        fan_in = in_channels * kernel_size * kernel_size
        init_std, self.weight_scale, self.he_std = _weight_scales(fan_in, gain, lr_mul, equalized)
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels, kernel_size, kernel_size) * init_std
        )
        self.bias = nn.Parameter(torch.full((out_channels,), bias_init / lr_mul)) if bias else None
        self.bias_scale = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.bias_scale if self.bias is not None else None
        return F.conv2d(x, self.weight * self.weight_scale, b, padding=self.kernel_size // 2)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"weight_scale={self.weight_scale:.4g}"
        )


class PixelNorm(nn.Module):
    """Pixelwise feature vector normalisation (PGGAN Sec. 4.2): x / sqrt(mean over channels of x^2 + eps),
    eps 1e-8. [N, C, ...] -> same shape; every pixel's feature vector gets unit mean square."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + self.eps)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x nearest-neighbour upsampling, [N, C, H, W] -> [N, C, 2H, 2W] (PGGAN's upscale2d). Written as
    expand + reshape: its backward is a plain sum (deterministic on every device) and differentiable again."""
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def binomial_kernel() -> torch.Tensor:
    """The [1, 2, 1] x [1, 2, 1] / 16 low-pass filter [1, 1, 3, 3] of StyleGAN's blur2d (Karras et al. 2019,
    Sec. 2: bilinear resampling after Zhang 2019; NVlabs/stylegan `_blur2d`, outer product normalised to sum 1)."""
    f = torch.tensor([1.0, 2.0, 1.0])
    return (f[:, None] * f[None, :] / 16.0).view(1, 1, 3, 3)


class _DepthwiseFilter(torch.autograd.Function):
    """A fixed depthwise 3x3 filter with zero padding 1, differentiable to any order without the filter's
    gradient. Autograd's own double backward of a depthwise conv (R1 through D's blur) computes the fixed
    kernel's gradient channel by channel, 192 small convolutions per StyleGAN step at 32 px, and throws it
    away. Here the backward is `_DepthwiseFilterAdjoint`, the very `convolution_backward` call autograd makes
    for the input's gradient, and its backward is this filter again (the convolution autograd's double backward
    makes for the incoming gradient): every value is autograd's, bit for bit, without the waste (as
    NVlabs/stylegan's `_blur2d` gradient and rosinality's BlurFunctionBackward, which write the filter's
    adjoint by hand)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, padding=1, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        return _DepthwiseFilterAdjoint.apply(grad, x, weight), None


class _DepthwiseFilterAdjoint(torch.autograd.Function):
    """The input gradient of `_DepthwiseFilter`: grad -> the filter's adjoint applied to grad (`x` gives only
    the shape and layout autograd's call sees); its own gradient is the filter applied to the incoming one."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        weight = weight.to(grad.dtype)  # autocast does not reach a custom backward: the gradient's dtype
        x = x if x.dtype == grad.dtype else torch.empty_like(x, dtype=grad.dtype)  # only its shape is read
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], x.shape[1], [True, False, False]
        )[0]

    @staticmethod
    def backward(ctx, gg: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return _DepthwiseFilter.apply(gg, weight.to(gg.dtype)), None, None


def blur2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 3x3 low-pass with zero padding 1 (the official depthwise conv, padding 'SAME'):
    [N, C, H, W] -> same shape. kernel [1, 1, 3, 3], a fixed filter (no gradient flows to it)."""
    c = x.shape[1]
    return _DepthwiseFilter.apply(x, kernel.to(x.dtype).expand(c, 1, 3, 3))


class Blur(nn.Module):
    """`blur2d` with the binomial filter as a module: [N, C, H, W] -> same shape. The filter is a fixed,
    non-persistent buffer: no parameter, nothing in the state dict (checkpoints written without it load),
    and it follows the module across devices and dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", binomial_kernel(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blur2d(x, self.kernel)


def avgpool2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling, stride 2, [N, C, H, W] -> [N, C, H/2, W/2] (PGGAN's downscale2d box filter)."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"avgpool2x needs even height and width, got {list(x.shape)}")
    return F.avg_pool2d(x, 2)
