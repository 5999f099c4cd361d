"""The digits classifier reading stacked digits: each of the three channels as a digit of its own.

Features are the three channels' 128-d features side by side [N, 384] (FID on stacked digits: the
"digits FID" of the mode benchmark); the logits are over the 1000 modes, log p(r) + log p(g) + log p(b)
with the channels' digit probabilities taken as independent, so their softmax is the product
p(r) p(g) p(b) and its marginals are the channels' own probabilities again (`channel_probs`).
"""

from __future__ import annotations

import torch

from gandist.errors import UserError
from gandist.metrics.extractors import DigitsExtractor

CHANNELS = 3


class StackedDigitsExtractor(DigitsExtractor):
    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.name = f"{self.name}-stacked"
        self.dim, self.classes = CHANNELS * 128, 10**CHANNELS

    @torch.no_grad()
    def extract(self, x):
        if x.dim() != 4 or x.shape[1] != CHANNELS:
            raise UserError(
                f"the stacked-digits extractor expects 3-channel images [N, 3, H, W], got {list(x.shape)}"
            )
        n = x.shape[0]
        f, logits = super().extract(x.reshape(n * CHANNELS, 1, *x.shape[2:]))
        logp = torch.log_softmax(logits.double(), dim=1).view(n, CHANNELS, 10)
        joint = logp[:, 0, :, None, None] + logp[:, 1, None, :, None] + logp[:, 2, None, None, :]
        return f.reshape(n, CHANNELS * f.shape[1]), joint.reshape(n, self.classes).float()


def channel_probs(joint: torch.Tensor) -> torch.Tensor:
    """Probabilities over the 1000 modes [N, 1000] (mode 100 r + 10 g + b) -> each channel's digit
    probabilities [N, 3, 10], the marginals of the joint."""
    p = joint.reshape(-1, 10, 10, 10)
    return torch.stack([p.sum((2, 3)), p.sum((1, 3)), p.sum((1, 2))], dim=1)
