"""StyleGAN learns: `stylegan_cpu` grows to 32x32 on digits and its digits-classifier FID at the end is
clearly below its value when the 32x32 phase starts (the 16x16 generator, upsampled)."""

import pytest
from conftest import make_trainer

from gandist.config import load_config
from gandist.metrics.evaluate import evaluate

SETTINGS = ["train.progress=false", "health.enabled=false"]


def _fid(t, cfg) -> float:
    return evaluate(t.sample_net(), cfg, "images", ["fid"], n=1000, seed=7, extractor="digits",
                    strategy=t.strategy)["fid"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.learning
def test_stylegan_cpu_learns_digits_at_32px(tmp_path):
    """The shipped config, 80 kimg (32 px from 40 kimg: fade 8, stable 32); about 7 minutes on one CPU thread.
    Measured (FID over 1000 samples, digits classifier, at the start of the 32 px fade -> at the end):
    seed 0: 126.3 -> 50.4, seed 1: 150.3 -> 50.6 (ratios 0.40 and 0.34); the test asks for a ratio below
    0.6. A copy with half-length phases (stable/fade 4 kimg, 40 kimg) is not reliable enough to test:
    175.5 -> 200.5 with seed 0, 164.2 -> 126.3 with seed 1."""
    cfg = load_config("stylegan_cpu", SETTINGS)
    t = make_trainer(cfg, tmp_path, log_enabled=False)
    while t.schedule.at(t.nimg).resolution != 32:
        t.train_step()
    t.apply_stage()
    assert t.stage.phase == "fade" and t.stage.alpha == 0.0
    start = _fid(t, cfg)
    while not t.done():
        t.train_step()
    end = _fid(t, cfg)
    assert end < 0.6 * start, (start, end)
