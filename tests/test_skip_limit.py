"""train.skip_limit stops a run within one step of the limit (not at the next log point), and its line
says which checkpoints exist."""

import pytest
from conftest import make_trainer

from gandist.config import load_config
from gandist.errors import DivergedError
from gandist.objectives.base import PhaseResult
from gandist.train.loop import Trainer


def _never_finite(trainer: Trainer) -> None:
    real = trainer.objective.accumulate

    def nan_loss(phase, batch, ctx):
        r = real(phase, batch, ctx)
        return PhaseResult(r.loss * float("nan"), r.stats)

    trainer.objective.accumulate = nan_loss


@pytest.mark.parametrize("ckpt_every,kept", [(1000, "no checkpoint was written yet (the first was due at step 1000)"),
                                             (1, "2 checkpoints kept, the newest")])  # fmt: skip
def test_skip_limit_counts_updates_and_names_the_checkpoints(tmp_path, ckpt_every, kept):
    # log_every 50: before, the limit was read only at step 50, after 100 skipped updates
    # without the quickstart's lazy R1, whose extra D phase every 4th step would change the count below
    cfg = load_config("quickstart", ["model.g_width=8", "model.d_width=8", "data.batch_size=8", "train.steps=200",
                                     "loss.r1_gamma=0",
                                     "train.log_every=50", "train.skip_limit=5", "health.enabled=false",
                                     f"train.ckpt_every={ckpt_every}", "train.sample_every=1000", "train.progress=false"])  # fmt: skip
    trainer = make_trainer(cfg, tmp_path / "run")
    _never_finite(trainer)
    with pytest.raises(DivergedError) as info:
        trainer.train(progress=False)
    # D and G each update once per step: the 5th skipped update comes in step 3 and is read at its end (6)
    assert trainer.step == 3
    assert str(info.value).startswith("6 updates in a row were skipped")
    assert kept in str(info.value)
