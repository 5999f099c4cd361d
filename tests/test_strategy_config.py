"""The strategy is built in one place from the config (`strategy_from_config`): train.backend and
train.sync_batchnorm reach it, from the library and from `gandist train`."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn

from gandist.cli import main
from gandist.config import load_config
from gandist.errors import UserError
from gandist.strategies import DataParallelStrategy, DistEnv, StrategyError, strategy_from_config
from gandist.strategies.syncbn import SyncedBatchNorm


@pytest.fixture
def rendezvous(monkeypatch):
    """A free local address for a one-rank process group; restored after the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))


def _ddp(*sets: str):
    return load_config("quickstart", ["train.strategy=ddp", "train.device=cpu", *sets]).train


@pytest.mark.parametrize("sync", [True, False])
def test_sync_batchnorm_and_backend_reach_the_strategy(sync, rendezvous):
    with strategy_from_config(_ddp("train.backend=gloo", f"train.sync_batchnorm={sync}"), DistEnv(0, 1, 0)) as s:
        assert isinstance(s, DataParallelStrategy) and s.sync_batchnorm is sync
        assert torch.distributed.get_backend() == "gloo"
        net = s.wrap(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)), "G")
        assert isinstance(net[1], SyncedBatchNorm) is sync  # converted only when asked


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: NCCL is available")
def test_backend_nccl_reaches_the_strategy_and_is_refused_on_the_cpu():
    with pytest.raises(StrategyError, match="train.backend=nccl needs GPUs"):
        strategy_from_config(_ddp("train.backend=nccl"), DistEnv(0, 1, 0))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: NCCL is available")
def test_gandist_train_passes_the_backend(tmp_path, capsys):
    rc = main(["train", "quickstart", "--out", str(tmp_path / "run"), "--no-progress", "--set", "train.strategy=ddp",
               "--set", "train.backend=nccl", "--set", "train.device=cpu", "--set", "train.steps=1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "gandist train: error: train.backend=nccl needs GPUs" in err, err
    assert not (tmp_path / "run").exists()


def test_gandist_train_passes_sync_batchnorm(tmp_path, capsys, monkeypatch, rendezvous):
    """The strategy `gandist train` builds is read where it wraps the first network; the run stops there."""
    seen = {}

    def record(self, module, role):
        seen.update(sync=self.sync_batchnorm, backend=torch.distributed.get_backend())
        raise UserError("stopped after reading the strategy")

    monkeypatch.setattr(DataParallelStrategy, "wrap", record)
    rc = main(["train", "quickstart", "--out", str(tmp_path / "run"), "--no-progress", "--set", "train.strategy=ddp",
               "--set", "train.sync_batchnorm=false", "--set", "train.backend=gloo"])  # fmt: skip
    assert rc == 2 and "stopped after reading the strategy" in capsys.readouterr().err
    assert seen == {"sync": False, "backend": "gloo"}
    assert not torch.distributed.is_initialized(), "the CLI closes the process group it opened"


def test_every_registered_strategy_is_a_choice_of_train_strategy_and_nothing_else():
    """`train.strategy` accepts exactly the registered training strategies (config.py imports no torch, so
    the two lists are kept equal here), and each registered builder builds that strategy by name."""
    import dataclasses

    from gandist.config import TrainConfig
    from gandist.strategies import STRATEGIES

    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "strategy")
    assert tuple(field.metadata["choices"]) == tuple(STRATEGIES)
    from gandist.strategies import build_strategy

    with pytest.raises(StrategyError, match="valid: single, ddp, deepspeed"):
        build_strategy("none", "cpu", DistEnv())
    assert type(build_strategy("single", "cpu", DistEnv())).name == "single"
