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
    assert rows[1]["skipped"].startswith(f"peer source not found: {tmp_path / 'nowhere' / 'models'}")
    (json_file,) = tmp_path.glob("peers-*-t.json")
    saved = json.loads(json_file.read_text())
    assert saved["rows"] == rows and {"commit", "device", "torch", "date"} <= set(saved["provenance"])
    md = json_file.with_suffix(".md").read_text()
    assert "| stylegan | skipped: no --peer-path stylegan=DIR" in md
    assert json_file.with_suffix(".csv").is_file()


def test_every_family_has_a_gandist_side_that_trains_and_a_peer_that_names_its_missing_files(tmp_path):
    """Each family the harness compares builds gandist's side at the harness's settings and takes a training
    step that moves G; its peer, pointed at an empty folder, is skipped naming the first file it lacks."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks" / "train"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_peers

    assert set(bench_peers.PEERS) == set(bench_peers.SETTINGS) == {"stylegan", "pggan", "cyclegan"}
    for family, peer in bench_peers.PEERS.items():
        try:
            bench_peers._peer_class(family, tmp_path)
        except bench_peers.Skip as e:
            assert str(tmp_path / peer.FILES[0]) in str(e), e
        else:
            raise AssertionError(f"{family}: an empty peer folder was accepted")
        torch.set_num_threads(1)
        ours = bench_peers.GandistSide(family, [])
        g = "G_AB" if family == "cyclegan" else "G"
        before = [p.detach().clone() for p in ours.trainer.nets[g].parameters()]
        ours.step()
        moved = sum(not torch.equal(a, p) for a, p in zip(before, ours.trainer.nets[g].parameters()))
        assert moved > 0, f"{family}: a step changed no parameter of {g}"
        assert ours.params["G"] > 0 and ours.params["D"] > 0
