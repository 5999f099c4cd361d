"""`load_network(path, name)`: any network of a checkpoint comes back with exactly the weights the trainer
held when it wrote it, an EMA network built as the one it averages; a wrong name or a refusing tool is one line."""

import pytest
import torch
from conftest import make_trainer

from gandist.errors import UserError
from gandist.load import load_network


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from gandist.config import load_config

    cfg = load_config(None, [
        "name=tiny", "model.name=mlp", "model.z_dim=4", "model.g_width=8", "model.d_width=8", "data.name=ring",
        "data.batch_size=8", "train.steps=2", "train.ckpt_every=2", "train.sample_every=100", "train.log_every=2",
        "train.progress=false", "health.enabled=false", "train.ema_kimg=0.01"])  # fmt: skip
    t = make_trainer(cfg, tmp_path_factory.mktemp("run"))
    t.train(progress=False)
    return t


@pytest.mark.parametrize("name", ["G", "D", "G_ema"])
def test_each_network_comes_back_with_the_weights_the_trainer_held(run, name):
    held = run.ema[name].shadow if name in run.ema else run.nets[name]
    loaded = load_network(run.run_dir, name)
    assert loaded.step == 2 and loaded.kind == "points" and loaded.shape == (2,) and not loaded.net.training
    mine, theirs = held.state_dict(), loaded.net.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert torch.equal(mine[k].cpu(), theirs[k]), f"{name}.{k}"
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    if name != "D":
        held.eval()
        torch.testing.assert_close(loaded.net(z), held(z), rtol=0, atol=0)


def test_a_name_the_family_lacks_is_one_line(run):
    with pytest.raises(UserError, match=r"holds a mlp model, which has no network 'G_AB' \(it has G, D\)") as info:
        load_network(run.run_dir, "G_AB")
    assert "\n" not in str(info.value)


def test_a_tool_refuses_before_anything_is_built(run, monkeypatch):
    import gandist.models.base as base

    def refuse(cfg, path):
        raise UserError(f"no thanks: {cfg.model.name}")

    monkeypatch.setattr(base, "build_networks", lambda *a: pytest.fail("built before refusing"))
    with pytest.raises(UserError, match="no thanks: mlp"):
        load_network(run.run_dir, "G", refuse)
