"""Model families. Each registers a builder: `build(model_cfg, data_shape, kind) -> (G, D)`.

G maps latents [N, z_dim] to samples shaped like the data; D maps samples to logits [N].
Models see tensors only: no devices, ranks or wrappers here.
"""

from __future__ import annotations

from gandist.models import dcgan, mlp  # noqa: F401,E402  (registration side effects)
from gandist.models.base import MODELS, build_models  # noqa: F401
