"""A family is one folder: one written into a temporary directory, named by GANDIST_FAMILIES and touching no
file of gandist, is found, configured strictly, trained, checkpointed and resumed bit-exactly."""

import sys
import textwrap

import pytest
import torch
from conftest import make_trainer

from gandist import families
from gandist.config import SECTIONS, ConfigError, dump_config, load_config
from gandist.errors import UserError
from gandist.train import checkpoint as ckpt
from gandist.train.loop import Trainer

# A 2-D MLP variant with its own config section (`model` and `loss`) and its own objective: least squares
# (Mao et al. 2017) with the real target a key of its loss section.
FILES = {
    "__init__.py": '"""A tiny 2-D family defined outside gandist."""\n',
    "config.py": """
        from dataclasses import dataclass
        from typing import ClassVar

        from gandist.config import ConfigError, NamedSection, Section, register_section, setting


        @register_section("model", "tinymlp")
        @dataclass
        class TinyModel(NamedSection):
            objective: ClassVar[str] = "tinyls"
            z_dim: int = setting(3, gt=0)
            hidden: int = setting(8, gt=0)

            def check(self, cfg):
                if cfg.data.kind != "points":
                    raise ConfigError("model.name=tinymlp draws 2-D points; use data.name=ring")


        @register_section("loss", "tinyls")
        @dataclass
        class TinyLoss(Section):
            real: float = setting(1.0, gt=0)  # D's target for reals; fakes aim at 0
        """,
    "networks.py": """
        from torch import nn

        from gandist.models.base import MODELS
        from gandist.registry import register


        class Gen(nn.Module):
            def __init__(self, z_dim, hidden):
                super().__init__()
                self.z_dim = z_dim
                self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))

            def forward(self, z):
                return self.net(z)


        @register(MODELS, "tinymlp")
        def build(cfg, shape, kind):
            d = nn.Sequential(nn.Linear(2, cfg.hidden), nn.LeakyReLU(0.2), nn.Linear(cfg.hidden, 1), nn.Flatten(0))
            return {"G": Gen(cfg.z_dim, cfg.hidden), "D": d}
        """,
    "objective.py": """
        import torch

        from gandist.objectives.base import OBJECTIVES, Objective, OptimizerSpec, Phase, PhaseResult, backward
        from gandist.registry import register


        @register(OBJECTIVES, "tinyls")
        class TinyLS(Objective):
            def __init__(self, cfg, networks, kind):
                super().__init__(cfg, networks)
                self.d_steps = torch.zeros((), dtype=torch.long)  # objective state, kept in checkpoints

            def optimizers(self):
                return {"G": OptimizerSpec(("G",), self.cfg.optim.lr_g), "D": OptimizerSpec(("D",), self.cfg.optim.lr_d)}

            def phases(self):
                return [Phase("Dmain", "D", ("D",)), Phase("Gmain", "G", ("G",), reals=False)]

            def accumulate(self, phase, batch, ctx):
                G, D, real = self.networks["G"], self.networks["D"], self.cfg.loss.real
                if phase.name == "Dmain":
                    with torch.no_grad():
                        fake = G(ctx.latents())
                    loss = 0.5 * ((D(batch.x) - real) ** 2).mean() + 0.5 * (D(fake) ** 2).mean()
                    self.d_steps += 1
                else:
                    loss = 0.5 * ((D(G(ctx.latents())) - real) ** 2).mean()
                backward(loss, ctx.gain)
                return PhaseResult(loss.detach(), {f"{phase.name}_loss": loss.detach()})

            def state_dict(self):
                return {"tensors": {"d_steps": self.d_steps.clone()}, "values": {}}

            def load_state_dict(self, state):
                self.d_steps = state["tensors"]["d_steps"].clone()
        """,
}


@pytest.fixture
def tiny_family(tmp_path, monkeypatch):
    folder = tmp_path / "families" / "tinymlp"
    folder.mkdir(parents=True)
    for name, text in FILES.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.setenv(families.ENV, str(tmp_path / "families"))
    yield lambda *extra: load_config(None, [
        "name=tiny", "model.name=tinymlp", "data.name=ring", "data.batch_size=8", "train.steps=6",
        "train.ckpt_every=3", "train.log_every=3", "train.sample_every=3", "train.sample_n=8",
        "train.progress=false", "health.enabled=false", "metrics.every=0", *extra])  # fmt: skip
    # Leave the registries as gandist's own folders make them, for the tests that run after this one.
    from gandist.models.base import MODELS
    from gandist.objectives.base import OBJECTIVES

    SECTIONS["model"].pop("tinymlp", None)
    SECTIONS["loss"].pop("tinyls", None)
    MODELS.pop("tinymlp", None)
    OBJECTIVES.pop("tinyls", None)
    for module in [m for m in sys.modules if m.startswith("gandist.families.tinymlp")]:
        del sys.modules[module]
    monkeypatch.delenv(families.ENV)
    families.search_path()
    families._IMPORTED.clear()


def _state(t: Trainer) -> dict:
    out = {f"t.{k}": v.clone() for k, v in t.state_tensors().items()}
    for name, opt in t.optimizers.items():
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                out[f"{name}.{i}.{k}"] = torch.as_tensor(v).clone()
    out["rng"] = t.gen.get_state().clone()
    return out


def test_family_from_a_folder_trains_checkpoints_and_resumes_bit_exactly(tiny_family, tmp_path):
    assert "tinymlp" in families.names() and "mlp" in families.names()
    cfg = tiny_family("loss.real=0.9")
    assert cfg.loss.real == 0.9 and "tinymlp" in dump_config(cfg)

    full = make_trainer(cfg, tmp_path / "full")
    g_before = [p.detach().clone() for p in full.nets["G"].parameters()]
    full.train(progress=False)
    assert int(full.objective.d_steps) == 6
    assert any(not torch.equal(a, b) for a, b in zip(g_before, full.nets["G"].parameters())), "G did not train"

    half = make_trainer(tiny_family("loss.real=0.9", "train.steps=3"), tmp_path / "half")
    half.train(progress=False)
    resumed = make_trainer(cfg, tmp_path / "half")
    resumed.load(ckpt.latest_checkpoint(tmp_path / "half" / "checkpoints"))
    assert int(resumed.objective.d_steps) == 3
    resumed.train(progress=False)
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys() and any(k.startswith("t.G.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_family_from_a_folder_has_a_strict_config(tiny_family):
    with pytest.raises(ConfigError, match=r"unknown config key 'model.g_width' for model.name=tinymlp.*valid keys: model.hidden, model.z_dim"):
        tiny_family("model.g_width=3")
    with pytest.raises(ConfigError, match=r"loss.real=0.0 must be positive"):
        tiny_family("loss.real=0")
    with pytest.raises(ConfigError, match=r"model.name=tinymlp draws 2-D points; use data.name=ring"):
        tiny_family("data.name=digits")


def test_a_family_path_that_is_not_a_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(families.ENV, str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"GANDIST_FAMILIES names .*missing, which is not a directory"):
        families.names()
    monkeypatch.delenv(families.ENV)
    assert "tinymlp" not in families.names()
