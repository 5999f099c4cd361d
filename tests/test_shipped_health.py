"""Every shipped CPU config trains a while without a health warning: a warning on a shipped default
means the config or the rule is wrong (the quickstart raised "losses oscillating": without a penalty its D
won outright for hundreds of steps at a time; it pays R1 now)."""

import pytest
from conftest import make_trainer

from gandist.config import load_config
from gandist.resources import shipped_configs

# GPU-sized configs (and ones that need a dataset folder) are not run on the CPU suite
CPU_CONFIGS = sorted(n for n in shipped_configs() if not n.endswith(("_256", "_1024")))
STEPS, KIMG = 1000, 20.0  # past warm-up (200) and four health windows; the quickstart first warned at step 775


@pytest.mark.slow
@pytest.mark.soak  # about 5 minutes per config on 2 cores: `pytest -m soak`, outside the default run
@pytest.mark.parametrize("name", CPU_CONFIGS)
def test_shipped_cpu_config_trains_without_health_warnings(name, tmp_path):
    cfg = load_config(name, ["train.progress=false"])
    if not cfg.health.enabled:
        pytest.skip(f"{name} switches the health monitor off")
    if cfg.train.kimg > 0:
        cfg.train.kimg = min(cfg.train.kimg, KIMG)
    else:
        cfg.train.steps = min(cfg.train.steps, STEPS)
    t = make_trainer(cfg, tmp_path, log_enabled=False)
    t.health.echo = False
    t.train(progress=False)
    starts = [(e["diagnosis"], e["step"]) for e in t.health.events if e["state"] == "start"]
    assert starts == [], starts
