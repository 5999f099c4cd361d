"""VGG-16 for the metrics defined on it: LPIPS, the distance of the perceptual path length, and the
feature space of improved precision and recall.

| use | network | what | weights (read from a path, never downloaded) |
|---|---|---|---|
| LPIPS distance (Zhang et al. 2018, v0.1 "vgg") | VGG-16 conv layers | relu1_2 .. relu5_3, unit-normalised per position, squared difference, 1x1 "lin" weights, spatial mean, summed | torchvision's `vgg16-397923af.pth` + LPIPS' `vgg.pth` (the lin layers) |
| precision and recall (Kynkaanniemi et al. 2019) | VGG-16 up to fc2 (torchvision's `classifier[:5]`) | the 4096 fc2 activations after their ReLU, of 8-bit images area-resized to 224x224, ImageNet mean/std | torchvision's `vgg16-397923af.pth` |

StyleGAN's perceptual path length is measured with LPIPS on VGG-16 (the official code loads
`vgg16_zhang_perceptual.pkl`, a conversion of the same network); its images are [-1, 1] as G makes them.

Precision and recall: the paper's code (kynkaat/improved-precision-and-recall-metric, NVlabs/stylegan2,
stylegan2-ada-pytorch's `vgg16.pt` called with `return_features=True`) embeds 8-bit images with its own
file of an ImageNet VGG-16 (a TensorFlow pickle, then TorchScript) and reads "fc2". gandist reads
torchvision's ImageNet weights instead (the same architecture, other weights: values are close to the
official network's, not equal). Two choices are gandist's reading
of that code, not verified against it: fc2 *after* its ReLU (the Keras layer `fc2` the name comes from has
the ReLU built in; torch-fidelity's `prc` reads `fc2_relu` too), and the resize to 224x224 with
`F.interpolate(mode="area")` (what stylegan2-ada's `vgg16.pt` is recalled to do with `resize_images=True`;
torch-fidelity resizes with its TF1 bilinear instead).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gandist.errors import UserError
from gandist.metrics.extractors import Extractor, _NoTF32

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG-16
LPIPS_FILE = "vgg.pth"  # the LPIPS v0.1 linear layers for VGG-16 (the `lpips` package's weights/v0.1/vgg.pth)
VGG16_ENV, LPIPS_ENV = "GANDIST_VGG16_WEIGHTS", "GANDIST_LPIPS_WEIGHTS"

# LPIPS' ScalingLayer: inputs in [-1, 1] are shifted and scaled to the statistics VGG was trained on.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_SLICES = (4, 9, 16, 23, 30)  # ends of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16.features
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_MIN_SIZE = 16  # relu5_3 comes after four 2x max-poolings
LPIPS_EPS = 1e-10  # lpips.normalize_tensor's epsilon


def _cache_dir() -> Path:
    return Path(os.environ.get("GANDIST_CACHE", Path.home() / ".cache" / "gandist"))


def find_weights(filename: str, env: str, explicit: str | Path | None, what: str, flag: str) -> Path:
    """The weights file: the explicit path, the environment variable, gandist's cache or torch hub's."""
    if explicit:
        if not Path(explicit).is_file():
            raise UserError(f"{what} weights '{explicit}' not found; {flag} names a file ({filename})")
        return Path(explicit)
    candidates = [Path(os.environ[env])] if os.environ.get(env) else []
    candidates += [_cache_dir() / filename, Path(torch.hub.get_dir()) / "checkpoints" / filename]
    for p in candidates:
        if p.is_file():
            return p
    raise UserError(
        f"{what} needs the weights file {filename}, and this machine has none; gandist never downloads at "
        f"run time. Copy it from a machine with internet to {candidates[-2]} (or {candidates[-1]}), or point "
        f"{flag} / {env} at it."
    )


def _load(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise UserError(f"{what} weights '{path}' are not a PyTorch state dict ({type(e).__name__}); "
                        "expected the file named in the docs") from None  # fmt: skip
    if not isinstance(sd, dict):
        raise UserError(f"{what} weights '{path}' hold a {type(sd).__name__}, expected a state dict")
    return sd


VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _conv_layers() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG16_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers)


def _load_vgg16(net: nn.Module, weights: str | Path | None, prefixes: tuple[str, ...]) -> Path:
    """Load the keys of torchvision's VGG-16 file that start with `prefixes` into `net` (the same key names),
    as float32; returns the file's path."""
    path = find_weights(VGG16_FILE, VGG16_ENV, weights, "VGG-16", "--vgg16")
    sd = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
          for k, v in _load(path, "VGG-16").items() if k.startswith(prefixes)}  # fmt: skip
    try:
        net.load_state_dict(sd, assign=True)  # the loaded tensors become the parameters, no second copy
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        raise UserError(f"'{path}' is not torchvision's VGG-16 ({VGG16_FILE}): {lines[-1]}") from None
    return path


def vgg16_features(weights: str | Path | None = None) -> nn.Module:
    """VGG-16's convolutional layers (configuration D of Simonyan & Zisserman; torchvision's `features`,
    same indices) with the ImageNet weights read from `weights` (or found); the classifier's weights in
    the file, if any, are not read (building torchvision's whole VGG-16 would initialise 138M parameters)."""
    holder = nn.Module()
    holder.features = _conv_layers()
    _load_vgg16(holder, weights, ("features.",))
    return holder.features.eval().requires_grad_(False)


VGG16_FC = (512 * 7 * 7, 4096, 4096)  # fc1: the 7x7x512 pool5 map -> 4096, fc2: 4096 -> 4096
VGG16_SIZE = 224  # the ImageNet crop VGG-16 was trained on; pool5 is then 7x7


class VGG16Fc2(nn.Module):
    """torchvision's VGG-16 up to fc2 and its ReLU: `features`, `avgpool`, `classifier[:5]` (fc1, ReLU,
    Dropout, fc2, ReLU), the same module names and indices, so torchvision's state-dict keys load as they are.

    forward: ImageNet-normalised images [N, 3, 224, 224] -> fc2 activations after the ReLU [N, 4096]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _conv_layers()
        # identity at 224x224 input (pool5 is then 7x7); torchvision's, for other sizes
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        # skip_init: 120M parameters every load replaces, not drawn at random first (~1 s on a CPU)
        fc1 = torch.nn.utils.skip_init(nn.Linear, VGG16_FC[0], VGG16_FC[1])
        fc2 = torch.nn.utils.skip_init(nn.Linear, VGG16_FC[1], VGG16_FC[2])
        self.classifier = nn.Sequential(fc1, nn.ReLU(), nn.Dropout(0.5), fc2, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 4 and x.shape[1:] == (3, VGG16_SIZE, VGG16_SIZE), x.shape
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16_fc2(weights: str | Path | None = None) -> tuple[VGG16Fc2, Path]:
    """(VGG16Fc2 with torchvision's ImageNet weights read from `weights` (or found), in eval mode, the
    dropout off; the weights file). fc3 (`classifier.6`) in the file is not read."""
    net = VGG16Fc2()
    path = _load_vgg16(net, weights, ("features.", "classifier.0.", "classifier.3."))
    return net.eval().requires_grad_(False), path


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights expect inputs in [0, 1] normalised so
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_input(x: torch.Tensor) -> torch.Tensor:
    """8-bit images [N, C, H, W] (uint8, C 1 or 3) -> VGG-16's input [N, 3, 224, 224] in x's float dtype
    (float32 for uint8): [0, 1], area-resized to 224x224 (adaptive average pooling: output pixel i is the
    mean of input pixels floor(i H / 224) .. ceil((i + 1) H / 224) - 1, windows of one or two pixels when
    enlarging), ImageNet mean and std."""
    assert x.dim() == 4 and x.shape[1] in (1, 3), x.shape
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    x = (x.float() if x.dtype == torch.uint8 else x) / 255
    if x.shape[-2:] != (VGG16_SIZE, VGG16_SIZE):
        x = F.interpolate(x, size=(VGG16_SIZE, VGG16_SIZE), mode="area")
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class VGG16Extractor(Extractor):
    """VGG-16 fc2 features (4096, after the ReLU) of 8-bit images, for precision and recall: training-format
    images ([-1, 1]) are rounded to 8 bits first, as the Inception extractor does and as the paper's code
    reads its images, so a folder of PNGs and the generator that wrote them give the same features."""

    name, key, resize, dim = "vgg16-fc2", "vgg16", "area-224", VGG16_FC[2]
    # CPU: ~15 GFLOP per 224x224 image, 0.67 s on one thread (measured, 2 images); the conv1 activations
    # (64x224x224 fp32) are 12.8 MB an image. The batch is the Inception extractor's, not measured for VGG-16.
    cpu_batch = 8

    def __init__(self, weights: str | Path | None = None, device: torch.device | str = "cpu") -> None:
        net, path = vgg16_fc2(weights)
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.weights = str(path)

    @torch.no_grad()
    def extract(self, x):
        x = x.to(self.device, non_blocking=True)
        if x.dtype != torch.uint8:
            x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if self.device.type == "cuda":
            with _NoTF32():  # fp32 as on the CPU
                return self.net(vgg16_input(x)), None
        return self.net(vgg16_input(x)), None

    def describe(self) -> dict:
        return {**super().describe(), "layer": "fc2 after ReLU", "weights": self.weights}


class LPIPS(nn.Module):
    """d(x0, x1) [N] for images [N, 3, H, W] in [-1, 1] (Zhang et al. 2018, v0.1, VGG-16, spatial mean).

    d = sum_l mean_hw( w_l . (f_l(x0) / ||f_l(x0)|| - f_l(x1) / ||f_l(x1)||)^2 ), f_l the VGG activations
    after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, the norm over channels per position."""

    def __init__(self, features: nn.Module, lins: list[torch.Tensor]) -> None:
        super().__init__()
        layers = list(features.children())
        bounds = (0,) + LPIPS_SLICES
        self.slices = nn.ModuleList(nn.Sequential(*layers[a:b]) for a, b in zip(bounds, bounds[1:]))
        for w, c in zip(lins, LPIPS_CHANNELS):
            if tuple(w.shape) != (1, c, 1, 1):
                raise UserError(f"LPIPS lin weights of shape {tuple(w.shape)}, expected (1, {c}, 1, 1)")
        self.lins = nn.ParameterList(nn.Parameter(w.clone(), requires_grad=False) for w in lins)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        # the constants made in x's dtype (a float32 buffer cast to float64 would carry float32 rounding)
        shift = torch.tensor(LPIPS_SHIFT, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        scale = torch.tensor(LPIPS_SCALE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        h, out = (x - shift) / scale, []
        for s in self.slices:
            h = s(h)
            out.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + LPIPS_EPS))
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        assert x0.shape == x1.shape and x0.dim() == 4 and x0.shape[1] == 3, (x0.shape, x1.shape)
        if min(x0.shape[-2:]) < LPIPS_MIN_SIZE:
            raise UserError(f"LPIPS on VGG-16 needs images of at least {LPIPS_MIN_SIZE} px (four 2x poolings before "
                            f"relu5_3); these are {x0.shape[-1]}x{x0.shape[-2]} (after any crop)")  # fmt: skip
        total = x0.new_zeros(x0.shape[0])
        for f0, f1, w in zip(self.features(x0), self.features(x1), self.lins):
            total = total + F.conv2d((f0 - f1).square(), w.to(f0.dtype)).mean(dim=(1, 2, 3))
        return total


def lpips_vgg(vgg16_weights: str | Path | None = None, lpips_weights: str | Path | None = None) -> LPIPS:
    """LPIPS on VGG-16 with both weights files read from their paths (or found)."""
    features = vgg16_features(vgg16_weights)
    path = find_weights(LPIPS_FILE, LPIPS_ENV, lpips_weights, "LPIPS", "--lpips")
    sd = _load(path, "LPIPS")
    # the lpips package stores lin{k}.model.1.weight (a Dropout then the 1x1 conv); accept lin{k}.weight too
    lins = []
    for k in range(len(LPIPS_CHANNELS)):
        w = sd.get(f"lin{k}.model.1.weight", sd.get(f"lin{k}.weight"))
        if w is None:
            raise UserError(f"'{path}' is not LPIPS' VGG lin-layer file ({LPIPS_FILE}): no lin{k} weights")
        lins.append(w.float())
    return LPIPS(features, lins)
