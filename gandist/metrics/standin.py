"""Stand-ins for the Inception and VGG-16 weights files, for tests and benchmarks on machines that cannot
fetch them.

The file has the real architecture (torch-fidelity's Inception-v3, the same state-dict keys, so
gandist, torch-fidelity and pytorch-fid all load it), seeded random weights, and BatchNorm statistics
calibrated on smooth random images so every layer's activations have unit scale (with PyTorch's
default statistics, mean 0 and variance 1, pool3 features shrink to ~1e-8 and FID, KID and IS say
nothing). Timings and memory with it are those of the real network; its FID values are only good for
comparing tools with each other, never for reporting a model's quality.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F


def calibration_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random 8-bit RGB images [n, 3, size, size]: upsampled noise, like blurry photographs."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return (F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 255).to(
        torch.uint8
    )


def make_standin_inception(path: str | Path, seed: int = 0, calibration: int = 16) -> Path:
    """Write the stand-in weights to `path` (a few seconds on 2 CPU cores) and return it."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with (
        mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None),
        torch.random.fork_rng(),
    ):
        torch.manual_seed(seed)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(calibration_images(calibration, 64, seed + 1))
    net.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)
    return path


def make_standin_vgg16(path: str | Path, seed: int = 0) -> Path:
    """Write seeded random VGG-16 weights in torchvision's layout (`vgg16-397923af.pth`: `features.*`,
    `classifier.{0,3,6}.*`, float32, 528 MB) to `path` and return it. Weights are He-scaled
    (std sqrt(2 / fan_in)), so activations keep their scale through the ReLUs; biases are small. A few
    seconds on 2 CPU cores."""
    from gandist.metrics.vgg import VGG16_FC, VGG16_LAYERS

    g = torch.Generator().manual_seed(seed)

    def layer(cout: int, fan_in: int, *shape: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.randn(cout, *shape, generator=g).mul_((2.0 / fan_in) ** 0.5)
        return w, torch.randn(cout, generator=g).mul_(0.01)

    sd, idx, cin = {}, 0, 3
    for v in VGG16_LAYERS:
        if v == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"] = layer(v, 9 * cin, cin, 3, 3)
        idx, cin = idx + 2, v  # the conv and its ReLU
    dims = (*VGG16_FC, 1000)  # fc1, fc2, fc3 (the 1000 ImageNet classes)
    for i, (fin, fout) in zip((0, 3, 6), zip(dims, dims[1:])):
        sd[f"classifier.{i}.weight"], sd[f"classifier.{i}.bias"] = layer(fout, fin, fin)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(sd, tmp)
    tmp.replace(path)
    return path
