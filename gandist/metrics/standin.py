"""A stand-in for the Inception weights file, for tests and benchmarks on machines that cannot fetch it.

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
