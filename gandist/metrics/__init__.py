"""Evaluation metrics. All accept numpy arrays or torch tensors."""

from gandist.metrics.modes import mode_coverage  # noqa: F401
