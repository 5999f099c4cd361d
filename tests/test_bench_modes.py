"""The stacked-digits mode benchmark runs end to end in its CI smoke mode and writes what it promises."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality" / "modes.py"


@pytest.mark.slow
def test_modes_benchmark_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_modes", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--smoke", "--jobs", "1", "--settings", "quarter", "--out", str(tmp_path)])
    stem = tmp_path / "modes-stacked16-smoke"
    for ext in (".json", ".csv", ".md", ".png"):
        assert stem.with_suffix(ext).is_file(), ext
    data = json.loads(stem.with_suffix(".json").read_text())
    assert [r["row"] for r in data["rows"]] == list(bench.ROWS)
    assert data["provenance"]["commit"] and data["provenance"]["device"]
    for r in result["runs"]:
        assert 1 <= r["modes"] <= 1000 and 0 <= r["modes_kl"] <= 6.91 and r["steps"] >= 1
        assert r["seconds"] >= 1.0  # trained for the CPU time asked for
    with open(stem.with_suffix(".csv")) as f:
        assert len(list(csv.DictReader(f))) == len(bench.ROWS)
    md = stem.with_suffix(".md").read_text()
    assert "PacDCGAN4 (PacGAN Table 3) | 667" in md and "RpGAN + R1 + R2" in md
