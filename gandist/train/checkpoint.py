"""Atomic, verifiable checkpoints.

A checkpoint is a folder `checkpoints/<step>/` holding
  models.safetensors   G, D and G_ema weights and buffers (prefixes G., D., G_ema.)
  optim.pt             optimizer states (loaded with weights_only=True: no code is unpickled)
  rng.safetensors      every RNG state the loop uses
  state.json           step, counters, data-stream position, resolved config, versions
  MANIFEST.json        sha256 and size of each file above; written last
It is assembled in a hidden temporary folder, flushed to disk and renamed into place, so a crash
leaves either the previous checkpoint or the new one, never half of one. Loading re-hashes every
file against the manifest: a truncated or altered checkpoint is detected and refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gandist.errors import CheckpointError

MANIFEST = "MANIFEST.json"
FILES = ("models.safetensors", "optim.pt", "rng.safetensors", "state.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    optim: dict[str, Any],
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> Path:
    """Write checkpoint `step` under `root` atomically; returns its folder."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:09d}"
    tmp = root / f".tmp-{step:09d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "models.safetensors"))
    torch.save(optim, tmp / "optim.pt")
    save_file({k: v.cpu().contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    manifest = {name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size} for name in FILES}
    for name in FILES:
        _fsync(tmp / name)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    _fsync(tmp / MANIFEST)
    _fsync(tmp)
    if final.exists():  # re-saving the same step (e.g. an interrupt right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    return final


def verify_checkpoint(path: Path) -> None:
    """Raise CheckpointError unless every file matches the manifest."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' does not exist or is not a folder")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' is incomplete (no {MANIFEST}); it was not finished writing"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint '{path}' has a corrupt {MANIFEST}") from None
    for name in FILES:
        f = path / name
        if name not in manifest or not f.is_file():
            raise CheckpointError(f"checkpoint '{path}' is missing {name}")
        if f.stat().st_size != manifest[name]["bytes"] or _sha256(f) != manifest[name]["sha256"]:
            raise CheckpointError(
                f"checkpoint '{path}': {name} does not match its checksum (corrupt or truncated)"
            )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Verify and load a checkpoint into plain dicts: tensors, optim, rng, state."""
    path = Path(path)
    verify_checkpoint(path)
    return {
        "path": path,
        "tensors": load_file(str(path / "models.safetensors")),
        "optim": torch.load(path / "optim.pt", map_location="cpu", weights_only=True),
        "rng": load_file(str(path / "rng.safetensors")),
        "state": json.loads((path / "state.json").read_text()),
    }


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under `root`, newest step first (complete or not)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: -int(p.name))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint under `root` that verifies; broken newer ones are reported and skipped."""
    for p in list_checkpoints(root):
        try:
            verify_checkpoint(p)
            return p
        except CheckpointError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=2)
    return None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep=0 keeps everything)."""
    if keep <= 0:
        return
    for p in list_checkpoints(root)[keep:]:
        shutil.rmtree(p, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder, a run directory (its newest checkpoint) or a checkpoints/ folder."""
    p = Path(path)
    if (p / MANIFEST).exists() or (p.is_dir() and p.name.isdigit()):
        return p
    for root in (p / "checkpoints", p):
        if root.is_dir() and list_checkpoints(root):
            found = latest_checkpoint(root)
            if found is None:
                raise CheckpointError(f"no complete checkpoint under '{root}'")
            return found
    raise CheckpointError(f"'{path}' is neither a checkpoint nor a run directory with checkpoints")
