"""Evaluation samples of a style-based G draw fresh noise per sample (the official metrics'
randomize_noise=True), and stay a function of the seed alone: any batching, any split over ranks."""

from __future__ import annotations

import pytest
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


@pytest.mark.slow  # a tiny StyleGAN run evaluating every step: ~40 s on a loaded 2-core machine
def test_training_metrics_and_gandist_eval_draw_random_noise(tmp_path, stylegan_cfg, monkeypatch):
    """The protocol reaches both callers: a StyleGAN run's periodic metrics and `gandist eval` on its
    checkpoint build their generated side with noise_mode 'random' (pictures keep their own setting)."""
    from conftest import make_trainer

    import gandist.metrics.evaluate as ev
    from gandist.cli import main

    seen = []

    class Recording(GeneratorSource):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.noise_mode)

    monkeypatch.setattr(ev, "GeneratorSource", Recording)
    cfg = stylegan_cfg("schedule.start_resolution=16", "schedule.batch={16: 4}", "train.kimg=0.02",
                       "metrics.names=parzen", "metrics.n=16", "metrics.every=1", "train.ckpt_every=5")  # fmt: skip
    t = make_trainer(cfg, tmp_path / "run")
    t.train(progress=False)
    assert seen and set(seen) == {"random"}, seen  # the run evaluated, every time with random noise
    seen.clear()
    assert main(["eval", str(tmp_path / "run"), "--metrics", "parzen", "--n", "16",
                 "--out", str(tmp_path / "m.jsonl")]) == 0  # fmt: skip
    assert seen == ["random"]
