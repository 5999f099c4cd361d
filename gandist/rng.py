"""Every random stream gandist derives from a seed: one salted, position-keyed generator.

`stream(seed, salt, position)` returns a fresh CPU generator that is a pure function of its three
arguments, so any sample a run draws can be redrawn from (seed, what it is for, where it is) without
replaying the stream before it. This is what makes resume exact with any number of loader workers or
ranks, and why no module picks an unexplained offset such as `seed + 7919` for a stream of its own.

The salts are named here, in one table, so two streams can never collide by accident. The numbers of
the data streams are part of every existing dataset order (changing them would change the samples
of every resumed run): append, never renumber.
"""

from __future__ import annotations

import torch

SALTS: dict[str, int] = {
    "data": 0,  # the synthetic samples at each stream position (2-D mixtures, procedural images)
    "epoch_order": 1,  # the permutation of a finite dataset in each epoch
    "mirror": 2,  # horizontal flips of each sample
    "fixed_latents": 3,  # the latents of the fixed-z sample grids of a run
    "health_probe": 4,  # the latents of the health monitor's diversity probe
    "eval_latents": 5,  # the latents of the evaluation samples, per chunk
    "eval_reals": 6,  # which real samples an evaluation reads
    "labelled_subset": 7,  # which training digits keep their labels (semi-supervised GAN)
    "domain_order": 8,  # the permutation of each domain of unpaired data in each epoch (CycleGAN)
    "image_pool": 9,  # CycleGAN's image pools: which past fake is returned in place of a new one
    "rank_global": 10,  # under data parallelism, the seed of each rank's global torch RNG (position = rank)
    "labelled_mirror": 11,  # horizontal flips of the labelled digits of semi-supervised batches
    "path_length": 12,  # perceptual path length: each batch's latent pairs, t and noise seed (position = batch)
    "eval_noise": 13,  # a style-based G's per-pixel noise in evaluation samples, per generation piece
    "digit_triples": 14,  # stacked digits: the three digits drawn as R, G, B at each stream position
    "crop_window": 15,  # CycleGAN's random crop: the window offsets of the image at each stream position
}


def position_generator(seed: int, position: int, salt: int = 0) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, position, salt)."""
    # Large odd multipliers spread nearby (seed, position) pairs over the 63-bit seed space.
    mixed = (seed * 0x9E3779B97F4A7C15 + position * 0xBF58476D1CE4E5B9 + salt * 0x94D049BB133111EB) % (2**63)
    return torch.Generator().manual_seed(mixed)


def stream(seed: int, salt: str, position: int = 0) -> torch.Generator:
    """The generator for stream `salt` (a name in SALTS) of seed `seed` at `position`."""
    if salt not in SALTS:
        raise KeyError(f"unknown random stream '{salt}'; add it to gandist.rng.SALTS")
    return position_generator(seed, position, SALTS[salt])
