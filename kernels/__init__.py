"""gandist.kernels: fused GPU ops, each beside a pure-torch reference with the same signature.

| op | fuses |
|---|---|
| `adain(x, scale, bias, eps)` | instance-norm statistics, normalisation and the style affine |
| `noise_bias_act(x, noise, strength, bias, negative_slope, gain)` | noise injection, bias, leaky ReLU, gain |
| `styled_epilogue(x, noise, strength, bias, scale, style_bias, ...)` | all of the above: StyleGAN's layer epilogue |
| `gradient_penalty(grad, center)` | per-sample gradient norms for WGAN-GP (center 1) and R1 (center 0) |

Every op takes `impl="auto"|"triton"|"reference"`: auto runs Triton on CUDA tensors and the reference
elsewhere; "triton" on CPU tensors runs the kernels in the Triton interpreter (TRITON_INTERPRET=1).
The Triton paths are `torch.library` custom ops with fake implementations; their backward passes are
differentiable again (exact double backward, as R1 / WGAN-GP / path-length penalties need).
This package never imports the rest of gandist, and imports triton only when a Triton path runs.
"""

from .adain import adain, adain_reference  # noqa: F401
from .gradient_penalty import gradient_penalty, gradient_penalty_reference  # noqa: F401
from .noise_bias_act import noise_bias_act, noise_bias_act_reference  # noqa: F401
from .styled_epilogue import styled_epilogue, styled_epilogue_reference  # noqa: F401
