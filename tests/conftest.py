import os

import torch

# Triton kernels run on CPU through the interpreter; it must be chosen before triton is imported,
# and gandist imports triton only when a Triton path first runs, so setting it here is early enough.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from gandist.config import load_config


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Cached reference statistics and the digits classifier go to a per-session folder, not ~/.cache."""
    os.environ["GANDIST_CACHE"] = str(tmp_path_factory.mktemp("gandist-cache"))
    yield


@pytest.fixture(autouse=True)
def _deterministic_defaults():
    # The loop switches deterministic algorithms on for CPU runs; keep tests independent of each other.
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def tiny_cfg():
    """A DCGAN on 8 px digits small enough for dozens of steps per second."""

    def make(*overrides: str):
        base = [
            "name=tiny",
            "model.name=dcgan",
            "model.z_dim=8",
            "model.g_width=8",
            "model.d_width=8",
            "data.name=digits",
            "data.resolution=8",
            "data.batch_size=8",
            "train.steps=6",
            "train.log_every=2",
            "train.sample_every=3",
            "train.ckpt_every=3",
            "train.sample_n=4",
            "train.progress=false",
        ]
        return load_config(None, base + list(overrides))

    return make


@pytest.fixture
def tiny_points_cfg():
    def make(*overrides: str):
        base = [
            "name=tinypts",
            "model.name=mlp",
            "model.z_dim=2",
            "model.g_width=16",
            "model.d_width=16",
            "model.g_layers=2",
            "model.d_layers=2",
            "model.d_norm=none",
            "data.name=ring",
            "data.batch_size=16",
            "train.steps=6",
            "train.log_every=2",
            "train.sample_every=3",
            "train.ckpt_every=3",
            "train.sample_n=32",
            "train.progress=false",
        ]
        return load_config(None, base + list(overrides))

    return make


@pytest.fixture
def small_chunks(monkeypatch):
    """Force the kernels' chunked multi-pass path (what planes above 2048 elements take) on small planes."""
    from gandist.kernels import _plane_triton

    monkeypatch.setattr(_plane_triton, "MAX_BLOCK_HW", 16)
