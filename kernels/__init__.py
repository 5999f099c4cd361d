"""gandist.kernels: fused GPU ops, each beside a pure-torch reference with the same signature.

This package never imports the rest of gandist.
"""

from .gradient_penalty import gradient_penalty, gradient_penalty_reference  # noqa: F401
