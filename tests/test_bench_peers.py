"""The peer harness never downloads a peer: without its source a family is skipped with the reason, recorded
in every result file."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_family_without_peer_source_is_skipped_with_its_reason(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks" / "train"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_peers import main

    rows = main(["--family", "stylegan,pggan", "--peer-path", f"pggan={tmp_path / 'nowhere'}", "--out",
                 str(tmp_path), "--tag", "t"])  # fmt: skip
    assert [r["family"] for r in rows] == ["stylegan", "pggan"]
    assert "no --peer-path stylegan=DIR" in rows[0]["skipped"]
    assert "pggan" in rows[1]["skipped"]
    (json_file,) = tmp_path.glob("peers-*-t.json")
    saved = json.loads(json_file.read_text())
    assert saved["rows"] == rows and {"commit", "device", "torch", "date"} <= set(saved["provenance"])
    md = json_file.with_suffix(".md").read_text()
    assert "| stylegan | skipped: no --peer-path stylegan=DIR" in md
    assert json_file.with_suffix(".csv").is_file()
