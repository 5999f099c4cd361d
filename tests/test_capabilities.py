"""What a data source or family declares decides what the rest of gandist does with it: the metrics that
apply, the automatic extractor, the defaults of metrics.names, and the messages that name the fix."""

import numpy as np
import pytest

from gandist.config import registered
from gandist.errors import UserError


def test_the_modes_metric_follows_the_known_modes_declaration():
    from gandist.metrics.entries import check_request

    sources = registered("data")
    mixtures = [n for n, c in sources.items() if c.known_modes]
    # VEEGAN's two 2-D mixtures and the 1000 stacked-digit modes, in registration order
    assert mixtures == ["ring", "grid", "stacked_digits"]
    for name in mixtures:
        check_request(["modes"], sources[name].kind, name, True)
    with pytest.raises(UserError, match=r"metric 'modes' needs data with known modes \(data.name ring or grid or "
                       r"stacked_digits\); data.name=procedural has none"):  # fmt: skip
        check_request(["modes"], "images", "procedural", True)


def test_mode_coverage_refuses_a_source_without_modes_naming_those_with():
    from gandist.metrics.modes import mode_coverage

    with pytest.raises(ValueError, match=r"dataset must be 'ring' or 'grid', got 'digits'"):
        mode_coverage(np.zeros((4, 2)), "digits")
    # 8 modes on the unit circle (VEEGAN): samples on four of them capture four
    angles = np.arange(4) * 2 * np.pi / 8
    assert mode_coverage(np.stack([np.cos(angles), np.sin(angles)], 1), "ring")["modes"] == 4


def test_the_auto_extractor_is_the_one_the_source_declares(monkeypatch):
    import gandist.metrics.extractors as ex

    built = []  # the digit classifier trains on first use: record the choice instead of building it
    monkeypatch.setattr(ex, "DigitsExtractor", lambda device: built.append(("digits", device)) or "digits")
    assert ex.build_extractor("auto", "images", "digits") == "digits" and built == [("digits", "cpu")]
    assert isinstance(ex.build_extractor("auto", "points", "ring"), ex.PointsExtractor)
    assert registered("data")["procedural"].extractor == "inception"


def test_metric_defaults_are_the_sources_declarations():
    from gandist.metrics.entries import METRICS

    for name, section in registered("data").items():
        assert set(section.default_metrics) <= set(METRICS), name
    assert registered("data")["digits"].default_metrics == ("fid", "is", "kid", "classes")
    assert registered("data")["stacked_digits"].default_metrics == ("fid", "modes")
    assert registered("data")["ring"].default_metrics == ("modes", "fid")
