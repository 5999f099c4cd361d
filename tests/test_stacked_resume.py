"""Resume on stacked digits with packing and RpGAN + lazy R1 + R2 continues bit for bit."""

import pytest
import torch
from conftest import make_trainer

from gandist.train import checkpoint as ckpt
from gandist.train.loop import Trainer

EXTRA = (
    "data.name=stacked_digits",
    "data.resolution=16",
    "model.pack=2",
    "loss.name=rpgan",
    "loss.r1_gamma=1",
    "loss.r2_gamma=1",
    "loss.reg_interval=2",
    "loss.feature_matching=0.5",
)


def _state(t: Trainer) -> dict:
    out = {f"t.{k}": v.clone() for k, v in t.state_tensors().items()}
    for name, opt in t.optimizers.items():
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                out[f"{name}.{i}.{k}"] = torch.as_tensor(v).clone()
    out["rng"] = t.gen.get_state().clone()
    return out


@pytest.mark.slow
def test_resume_on_stacked_digits_with_packing_is_exact(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=4", "train.ckpt_every=2", *EXTRA)
    full = make_trainer(cfg, tmp_path / "full")
    assert full.nets["D"].net[0].in_channels == 6  # two RGB samples per packed input
    full.train(progress=False)

    make_trainer(tiny_cfg("train.steps=2", "train.ckpt_every=2", *EXTRA), tmp_path / "half").train(progress=False)
    resumed = make_trainer(cfg, tmp_path / "half")
    resumed.load(ckpt.latest_checkpoint(tmp_path / "half" / "checkpoints"))
    assert resumed.step == 2
    resumed.train(progress=False)

    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert resumed.data.position == full.data.position > 0
