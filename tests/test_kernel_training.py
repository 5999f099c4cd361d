"""A tiny StyleGAN-like synthesis block trained for 20 steps through the fused ops (Triton, interpreted
on CPU) and through the references must end at the same parameters. The loss includes a path-length
style penalty on d(image)/d(w), so second-order gradients flow through every op."""

import torch
from gandist.kernels import adain, gradient_penalty, noise_bias_act, styled_epilogue
from kernel_utils import DEVICE
from torch import nn


class TinyBlock(nn.Module):
    def __init__(self, w_dim=6, c=5):
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, c, 4, 4))
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.affine1 = nn.Linear(w_dim, 2 * c)
        self.affine2 = nn.Linear(w_dim, 2 * c)
        self.strength1 = nn.Parameter(torch.full((c,), 0.1))
        self.strength2 = nn.Parameter(torch.full((c,), 0.1))
        self.bias1 = nn.Parameter(torch.zeros(c))
        self.bias2 = nn.Parameter(torch.zeros(c))
        self.to_rgb = nn.Conv2d(c, 3, 1)

    def forward(self, w, noise1, noise2, impl):
        s1 = self.affine1(w)
        s2 = self.affine2(w)
        c = self.const.shape[1]
        x = self.conv1(self.const.expand(w.shape[0], -1, -1, -1))
        x = noise_bias_act(
            x, noise1, self.strength1, self.bias1, impl=impl
        )  # layer 1: the two ops separately
        x = adain(x, 1 + s1[:, :c], s1[:, c:], impl=impl)
        x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2(x).contiguous(memory_format=torch.channels_last)
        x = styled_epilogue(
            x, noise2, self.strength2, self.bias2, 1 + s2[:, :c], s2[:, c:], impl=impl
        )  # layer 2 fused
        return self.to_rgb(x)


def train(impl, steps=20):
    torch.manual_seed(0)
    block = TinyBlock().to(DEVICE)
    # Plain SGD: updates are linear in the gradients, so the two runs differ only by fp32 rounding. (Adam's
    # m / sqrt(v) turns a near-zero gradient component into a full-size step whose sign is rounding noise.)
    opt = torch.optim.SGD(block.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    target = torch.randn(3, 3, 8, 8, generator=g).to(DEVICE)
    for _ in range(steps):
        w = torch.randn(3, 6, generator=g).to(DEVICE).requires_grad_(True)
        n1 = torch.randn(3, 1, 4, 4, generator=g).to(DEVICE)
        n2 = torch.randn(3, 1, 8, 8, generator=g).to(DEVICE)
        img = block(w, n1, n2, impl)
        (dw,) = torch.autograd.grad(img.sum(), w, create_graph=True)
        loss = (img - target).square().mean() + 0.01 * gradient_penalty(dw, center=1.0, impl=impl)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return block, float(loss.detach())


def test_twenty_steps_same_parameters():
    fused, loss_f = train("triton")
    ref, loss_r = train("reference")
    for (name, a), (_, b) in zip(fused.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert abs(loss_f - loss_r) < 1e-4
    # and the block did train (the parameters moved well beyond the tolerance)
    torch.manual_seed(0)
    init = TinyBlock().to(DEVICE)
    assert (fused.conv2.weight - init.conv2.weight).abs().max() > 1e-2
