"""What model families share: the builder registry (`base.MODELS`), layers (`layers.py`), the growth
machinery of the growing families (`growth.py`) and the shared config bases (`config.py`). Each family is
a folder, `gandist/families/<name>/`: a config class (torch-free) and a builder registered in `base.MODELS`
under the same name: `build(model_cfg, data_shape, kind) -> {"G": ..., "D": ...}`.

G maps latents [N, z_dim] to samples shaped like the data; D maps samples to logits [N] (or [N, K] where a
family's objective wants K outputs: the semi-supervised GAN). A family with a style-based G exposes `G.mapping`
and `G.synthesis`. A network with a data-dependent initialisation declares `data_init(x)` and
`data_init_samples`; the trainer calls it once on the first real samples (`initialise_from_data`). A translation family (CycleGAN) has no G but generators between domains (G_AB, G_BA) that
map images to images, and discriminators that give a map of patch logits [N, 1, H', W'].
Models see tensors only: no devices, ranks or wrappers here.

This package imports torch only when a builder is first asked for, so configs load without it.
"""

from __future__ import annotations

from typing import Any

_LAZY = ("MODELS", "build_networks", "initialise_from_data")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from gandist.models import base

        return getattr(base, name)
    raise AttributeError(f"module 'gandist.models' has no attribute '{name}'")
