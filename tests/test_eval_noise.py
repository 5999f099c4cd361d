"""Evaluation samples of a style-based G draw fresh noise per sample (the official metrics'
randomize_noise=True), and stay a function of the seed alone: any batching, any split over ranks."""

from __future__ import annotations

import torch

from gandist.families.stylegan.networks import StyleGANGenerator
from gandist.metrics.sources import GEN_PIECE, GeneratorSource, eval_latents


def tiny_styled():
    torch.manual_seed(0)
    G = StyleGANGenerator(4, (1, 8, 8), fmap_base=64, fmap_max=4, w_dim=4, mapping_layers=2, mapping_width=4)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)  # strengths start at 0: make the noise visible
    return G.eval()


def all_of(src, batch, start=0, stop=None):
    return torch.cat(list(src.batches(start, src.n if stop is None else stop, batch)))


def test_random_noise_per_sample_and_independent_of_batching_and_ranks():
    G, n = tiny_styled(), 2 * GEN_PIECE + 7
    src = GeneratorSource(G, 4, n, seed=3, device="cpu")
    whole = all_of(src, 16)
    assert torch.equal(whole, all_of(src, 5))  # another extraction batch
    halves = torch.cat([all_of(src, 9, 0, n // 2), all_of(src, 9, n // 2)])  # rank 0's share, then rank 1's
    assert torch.equal(whole, halves)
    z = eval_latents(3, 0, n, 4)
    with torch.no_grad():  # G on the source's pieces of GEN_PIECE latents: a convolution's float32 sums may
        # differ in the last bit between batch sizes (thread-count dependent), so the reference batches alike
        pieces = [z[i : i + GEN_PIECE] for i in range(0, n, GEN_PIECE)]
        const = torch.cat([G(p, noise_mode="const") for p in pieces])
        none = torch.cat([G(p, noise_mode="none") for p in pieces])
    assert torch.equal(all_of(GeneratorSource(G, 4, n, 3, "cpu", noise_mode="const"), 16), const)
    # random noise: every sample off both the const-noise and the noise-free image, by a different amount
    diff = (whole - none).flatten(1).abs().amax(1)
    assert torch.all(diff > 0) and torch.all((whole - const).flatten(1).abs().amax(1) > 0)
    # per-sample noise: the residual images (noise contribution) are not one image repeated
    resid = (whole - none).flatten(1)
    assert torch.corrcoef(resid[:20]).fill_diagonal_(0).abs().max() < 0.99
    assert src.describe()["noise_mode"] == "random"
    other = GeneratorSource(G, 4, n, seed=4, device="cpu")
    assert not torch.equal(
        all_of(other, 16)[:5], all_of(GeneratorSource(G, 4, n, 4, "cpu", noise_mode="none"), 16)[:5]
    )


def test_a_generator_without_noise_inputs_is_called_as_before():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh())
    src = GeneratorSource(G, 4, 60, seed=1, device="cpu")
    with torch.no_grad():
        assert torch.equal(all_of(src, 16), G(eval_latents(1, 0, 60, 4)))
    assert "noise_mode" not in src.describe()
