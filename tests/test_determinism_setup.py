"""train.deterministic on the CPU: deterministic algorithms on, uninitialised memory not filled (bit-exact
resume itself is pinned by the resume tests)."""

import pytest
import torch
import torch.utils.deterministic
from conftest import make_trainer

from gandist.train.determinism import set_deterministic


@pytest.fixture
def _restore_fill():
    before = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.utils.deterministic.fill_uninitialized_memory = before


def test_trainer_switches_determinism_on_without_the_fill(tiny_cfg, tmp_path, _restore_fill):
    torch.use_deterministic_algorithms(False)
    torch.utils.deterministic.fill_uninitialized_memory = True
    make_trainer(tiny_cfg("train.deterministic=true"), tmp_path / "run", log_enabled=False)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.utils.deterministic.fill_uninitialized_memory
    # and the fill is really off: with it on, torch.empty under deterministic mode is all NaN
    torch.utils.deterministic.fill_uninitialized_memory = True
    assert torch.empty(64).isnan().all()


def test_set_deterministic_off_again(_restore_fill):
    set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled()
    set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
