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


def _replace(p, name, data: bytes):
    """Overwrite one file and re-sign it in the manifest: damage the checksum cannot catch."""
    (p / name).write_bytes(data)
    manifest = json.loads((p / "MANIFEST.json").read_text())
    manifest[name] = {"sha256": ckpt._sha256(p / name), "bytes": len(data)}
    (p / "MANIFEST.json").write_text(json.dumps(manifest))


def test_pickled_code_is_refused(tmp_path):
    p = _save(tmp_path, 1)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"G": Evil()}, tmp_path / "evil.pt")
    _replace(p, "optim.pt", (tmp_path / "evil.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"optim\.pt .*refused unread.*Unsupported global") as info:
        ckpt.load_checkpoint(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("optim.pt", b"not a pickle", "optim.pt"),
        ("models.safetensors", b"\xff" * 64, "models.safetensors cannot be read"),
        ("rng.safetensors", b"", "rng.safetensors cannot be read"),
        ("state.json", b"{half", "state.json cannot be read"),
        ("state.json", b"[1, 2]", "state.json cannot be read"),
    ],
)
def test_every_unreadable_file_is_a_checkpoint_error(tmp_path, name, data, reason):
    p = _save(tmp_path, 1)
    _replace(p, name, data)
    with pytest.raises(CheckpointError, match=reason) as info:
        ckpt.load_checkpoint(p)
    assert f"checkpoint '{p}'" in str(info.value)


def test_readers_read_and_verify_only_weights_and_state(tmp_path):
    p = _save(tmp_path, 3, 1.5)
    (p / "optim.pt").write_bytes(b"corrupt")  # fails its checksum, and is not a pickle either
    (p / "rng.safetensors").unlink()
    data = ckpt.read_weights(p)
    assert set(data) == {"path", "tensors", "state"}
    assert torch.equal(data["tensors"]["G.w"], torch.full((3, 4), 1.5))
    with pytest.raises(CheckpointError, match="optim.pt does not match its checksum"):
        ckpt.load_checkpoint(p)
    assert ckpt.resolve_checkpoint(tmp_path, files=ckpt.READER_FILES) == p


def test_no_usable_checkpoint_lists_each_rejected_one(tmp_path):
    a, b = _save(tmp_path, 1), _save(tmp_path, 2)
    (a / "MANIFEST.json").unlink()
    (b / "models.safetensors").write_bytes(b"x")
    found, rejected = ckpt.find_latest(tmp_path)
    assert found is None and [e.path for e in rejected] == [b, a]
    msg = str(ckpt.no_usable_checkpoint(tmp_path, rejected))
    assert "000000002: models.safetensors does not match its checksum" in msg
    assert "000000001: incomplete: no MANIFEST.json" in msg
    assert "start over" in msg and "--resume auto" not in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        ckpt.resolve_checkpoint(tmp_path)


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
