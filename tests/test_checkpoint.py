import json

import pytest
import torch

from gandist.errors import CheckpointError
from gandist.train import checkpoint as ckpt


def _save(root, step, value=1.0):
    return ckpt.save_checkpoint(
        root,
        step,
        {"G.w": torch.full((3, 4), value)},
        {"G": {"state": {}, "param_groups": []}},
        {"loop": torch.arange(5, dtype=torch.uint8)},
        {"step": step},
    )


def test_roundtrip(tmp_path):
    p = _save(tmp_path, 7, 2.5)
    data = ckpt.load_checkpoint(p)
    assert torch.equal(data["tensors"]["G.w"], torch.full((3, 4), 2.5))
    assert data["state"] == {"step": 7}
    assert not list(tmp_path.glob(".tmp-*")), "temporary folder left behind"


def test_truncated_file_is_detected_and_skipped(tmp_path):
    _save(tmp_path, 1)
    newest = _save(tmp_path, 2)
    blob = (newest / "models.safetensors").read_bytes()
    (newest / "models.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipping"):
        assert ckpt.latest_checkpoint(tmp_path).name == "000000001"


def test_flipped_byte_is_detected(tmp_path):
    p = _save(tmp_path, 1)
    blob = bytearray((p / "optim.pt").read_bytes())
    blob[-10] ^= 0xFF
    (p / "optim.pt").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="optim.pt"):
        ckpt.verify_checkpoint(p)


def test_half_written_checkpoint_without_manifest_is_not_loaded(tmp_path):
    good = _save(tmp_path, 1)
    partial = tmp_path / "000000002"
    partial.mkdir()
    for f in ("models.safetensors", "optim.pt"):
        (partial / f).write_bytes((good / f).read_bytes())
    with pytest.raises(CheckpointError, match="incomplete"):
        ckpt.load_checkpoint(partial)
    with pytest.warns(UserWarning):
        assert ckpt.latest_checkpoint(tmp_path) == good


def test_pickled_code_is_refused(tmp_path):
    p = _save(tmp_path, 1)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"G": Evil()}, p / "optim.pt")
    manifest = json.loads((p / "MANIFEST.json").read_text())
    manifest["optim.pt"] = {"sha256": ckpt._sha256(p / "optim.pt"), "bytes": (p / "optim.pt").stat().st_size}
    (p / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="(?i)weights only|unsupported|global"):
        ckpt.load_checkpoint(p)


def test_prune_keeps_newest(tmp_path):
    for s in (1, 2, 3, 4):
        _save(tmp_path, s)
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["000000004", "000000003"]


def test_resolve_accepts_run_dir(tmp_path):
    _save(tmp_path / "checkpoints", 5)
    assert ckpt.resolve_checkpoint(tmp_path).name == "000000005"
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "nope")
