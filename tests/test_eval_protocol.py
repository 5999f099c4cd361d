"""The evaluation protocol of the papers by default: 50,000 generated samples for `gandist eval` and the
training-time metrics, and a smaller count is allowed with a line saying FID and KID are then biased upward."""

from __future__ import annotations

from gandist.cli import build_parser
from gandist.config import MetricsConfig
from gandist.metrics.commands import PROTOCOL_N, small_n_line


def test_eval_and_training_metrics_default_to_fifty_thousand_samples():
    assert PROTOCOL_N == 50_000  # Heusel et al. 2017 and the StyleGAN paper report FID at 50,000 samples
    assert build_parser().parse_args(["eval", "RUN"]).n == 50_000
    assert MetricsConfig().n == 50_000


def test_fewer_samples_are_said_to_bias_fid_and_kid_upward():
    line = small_n_line(["fid", "kid", "modes"], 10_000)
    assert line.startswith("[gandist] eval --n 10000: FID and KID at fewer than 50000 samples are biased upward")
    assert "same --n" in line
    assert small_n_line(["fid"], 49_999) is not None and small_n_line(["fid"], 50_000) is None
    assert small_n_line(["modes", "parzen"], 600) is None  # no bias statement for metrics without one
    # below a metric's meaningful count the stronger line wins, naming what each metric needs
    assert "too few samples for meaningful values of fid" in small_n_line(["fid"], 1000)
    assert small_n_line(["kid"], 20_000, "metrics.n =").startswith("[gandist] metrics.n = 20000: KID at fewer")


def test_the_reals_are_the_whole_set_up_to_the_sample_count():
    """As the official StyleGAN metrics: min(n, dataset size) reals, so 50,000 of FFHQ's 70,000 and every
    image of a smaller set (here the 1797 digits)."""
    from conftest import ConstantG

    from gandist.config import load_config
    from gandist.data.digits import load_digits_tensor
    from gandist.metrics.evaluate import evaluate

    images, _ = load_digits_tensor(8)
    cfg = load_config(None, ["data.name=digits", "data.resolution=8", "model.z_dim=8"])
    for n, want in ((64, 64), (2000, len(images))):
        res = evaluate(ConstantG(images[0]), cfg, "images", ["parzen"], n=n)
        assert (res["n_fake"], res["n_real"]) == (n, want) and len(images) == 1797
