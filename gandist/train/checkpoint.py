"""Atomic, verifiable checkpoints.

A checkpoint is a folder `checkpoints/<step>/` holding
  models.safetensors   G, D and G_ema weights and buffers (prefixes G., D., G_ema.)
  optim.pt             optimizer states (loaded with weights_only=True: no code is unpickled)
  rng.safetensors      every RNG state the loop uses
  state.json           step, counters, data-stream position, resolved config, versions
  deepspeed/<engine>/  only under train.strategy=deepspeed: each engine's own checkpoint
                       (weights, optimizer partitions of every rank), listed in the manifest too
  MANIFEST.json        sha256 and size of each file above; written last
It is assembled in a hidden temporary folder, flushed to disk and renamed into place, so a crash
leaves either the previous checkpoint or the new one, never half of one. Loading re-hashes each file
it reads against the manifest: a truncated or altered checkpoint is detected and refused, and every
load failure is a CheckpointError that names the folder, the file and the reason. Readers (sampling,
evaluation) read and verify only the weights and state.json, never optimizer or RNG state.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_st

from gandist.errors import CheckpointError

MANIFEST = "MANIFEST.json"
PARTS = {
    "tensors": "models.safetensors",
    "optim": "optim.pt",
    "rng": "rng.safetensors",
    "state": "state.json",
}
FILES = tuple(PARTS.values())
READER_PARTS = ("tensors", "state")  # what sampling and evaluation read
READER_FILES = tuple(PARTS[x] for x in READER_PARTS)


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
    extra: dict[str, Path] | None = None,
) -> Path:
    """Write checkpoint `step` under `root` atomically; returns its folder. `extra` maps a name to a folder
    already written (by every rank: a strategy's own state, e.g. DeepSpeed's engines) that is moved inside
    as `<name>/` before the manifest, which lists its files too, so it counts only together with the rest."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:09d}"
    tmp = root / f".tmp-{step:09d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _fill(tmp, tensors, optim, rng, state, extra)
    except BaseException:  # a full disk, a second Ctrl-C: leave no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # re-saving the same step (e.g. an interrupt right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    return final


def _write(path: Path, data) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:  # name the file: a failed write() carries no path of its own
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def _fill(tmp: Path, tensors, optim, rng, state, extra) -> None:
    """Write every file of a checkpoint into the folder `tmp`, the manifest last, all flushed to disk."""
    # Serialised in memory, then written by Python: on a full disk torch.save raises a RuntimeError from
    # its zip writer ("unexpected pos 2752 vs 2644"), while a plain write raises OSError(ENOSPC) with the path.
    _write(tmp / "models.safetensors", save_st({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    buf = io.BytesIO()
    torch.save(optim, buf)
    _write(tmp / "optim.pt", buf.getbuffer())
    _write(tmp / "rng.safetensors", save_st({k: v.cpu().contiguous() for k, v in rng.items()}))
    _write(tmp / "state.json", json.dumps(state, indent=1, sort_keys=True).encode())
    names = list(FILES)
    for name, folder in (extra or {}).items():
        os.replace(folder, tmp / name)
        names += sorted(f.relative_to(tmp).as_posix() for f in (tmp / name).rglob("*") if f.is_file())
    manifest = {name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size} for name in names}
    for name in names:
        _fsync(tmp / name)
    _write(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    _fsync(tmp / MANIFEST)
    _fsync(tmp)


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete the `.tmp-*` folders of saves killed before they finished (SIGKILL, power loss); returns them.
    Only the run's lock holder may call this: a live save's folder looks the same."""
    root = Path(root)
    if not root.is_dir():
        return []
    stale = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(".tmp-"))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _error(path: Path, reason: str) -> CheckpointError:
    """The one checkpoint error: names the folder and the reason (kept as `.reason` for summaries)."""
    exc = CheckpointError(f"checkpoint '{path}': {reason}")
    exc.path, exc.reason = path, reason  # type: ignore[attr-defined]
    return exc


def manifest_files(path: Path, under: str) -> tuple[str, ...]:
    """The files the manifest of checkpoint `path` lists below folder `under` (e.g. 'deepspeed/')."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise _error(Path(path), f"{MANIFEST} is missing or not valid JSON") from None
    return tuple(sorted(name for name in manifest if name.startswith(under)))


def verify_checkpoint(path: Path, files: tuple[str, ...] = FILES) -> None:
    """Raise CheckpointError unless each of `files` matches the manifest (the others are not read)."""
    path = Path(path)
    if not path.is_dir():
        raise _error(path, "does not exist or is not a folder")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise _error(path, f"incomplete: no {MANIFEST} (it was not finished writing)")
    try:
        manifest = json.loads(mpath.read_text())
        entries = {name: (int(manifest[name]["bytes"]), str(manifest[name]["sha256"])) for name in files}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _error(path, f"{MANIFEST} is not valid JSON (corrupt)") from None
    except (KeyError, TypeError, ValueError):
        raise _error(
            path, f"{MANIFEST} does not list {', '.join(files)} (corrupt or not a gandist checkpoint)"
        ) from None
    for name in files:
        f = path / name
        if not f.is_file():
            raise _error(path, f"{name} is missing")
        size, digest = entries[name]
        if f.stat().st_size != size or _sha256(f) != digest:
            raise _error(path, f"{name} does not match its checksum (corrupt or truncated)")


def _unpickling_reason(exc: Exception) -> str:
    """torch's weights_only refusal is a page of advice; keep its one line of diagnosis."""
    m = re.search(r"WeightsUnpickler error: ([^\n]*?)(\.\s|\n|$)", str(exc))
    return m.group(1) if m else (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _read(path: Path, part: str) -> Any:
    name = PARTS[part]
    f = path / name
    try:
        if part in ("tensors", "rng"):
            return load_file(str(f))
        if part == "optim":
            # weights_only: tensors and plain containers only; anything else would run code on load
            return torch.load(f, map_location="cpu", weights_only=True)
        state = json.loads(f.read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        return state
    except pickle.UnpicklingError as exc:
        raise _error(
            path,
            f"{name} holds more than tensors and plain containers and was refused unread, since "
            f"loading it could run code ({_unpickling_reason(exc)})",
        ) from None
    except Exception as exc:  # safetensors, JSON and I/O errors all mean: this file is unusable
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise _error(path, f"{name} cannot be read ({type(exc).__name__}: {first})") from None


def load_checkpoint(path: Path, parts: tuple[str, ...] = tuple(PARTS)) -> dict[str, Any]:
    """Verify and load the named parts of a checkpoint into plain dicts: {'path', 'tensors', 'optim',
    'rng', 'state'} restricted to `parts`. Only the files of those parts are read and verified, so a
    reader asking for ('tensors', 'state') never touches optimizer or RNG state. Every failure is a
    CheckpointError naming the folder, the file and the reason."""
    path = Path(path)
    unknown = [x for x in parts if x not in PARTS]
    if unknown:
        raise ValueError(f"unknown checkpoint parts {unknown}; valid: {', '.join(PARTS)}")
    verify_checkpoint(path, tuple(PARTS[x] for x in parts))
    return {"path": path, **{x: _read(path, x) for x in parts}}


def read_weights(path: Path) -> dict[str, Any]:
    """What generate / interpolate / eval need: weights and state.json, never optimizer or RNG state."""
    return load_checkpoint(path, READER_PARTS)


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under `root`, newest step first (complete or not)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: -int(p.name))


def find_latest(root: Path, files: tuple[str, ...] = FILES) -> tuple[Path | None, list[CheckpointError]]:
    """The newest checkpoint under `root` whose `files` verify, and the errors of the newer ones it
    passed over (all of them when none verifies)."""
    rejected: list[CheckpointError] = []
    for p in list_checkpoints(root):
        try:
            verify_checkpoint(p, files)
            return p, rejected
        except CheckpointError as exc:
            rejected.append(exc)
    return None, rejected


def latest_checkpoint(root: Path, files: tuple[str, ...] = FILES) -> Path | None:
    """The newest checkpoint under `root` that verifies; broken newer ones are reported and skipped."""
    found, rejected = find_latest(root, files)
    for exc in rejected:
        warnings.warn(f"skipping {exc}", stacklevel=2)
    return found


def no_usable_checkpoint(root: Path, rejected: list[CheckpointError]) -> CheckpointError:
    """One line for 'checkpoints exist, none is usable': each rejected folder and why, then the way out."""
    why = "; ".join(
        f"{Path(getattr(e, 'path', '')).name or '?'}: {getattr(e, 'reason', e)}" for e in rejected
    )
    return CheckpointError(
        f"no usable checkpoint in '{root}' ({len(rejected)} rejected: {why}); restore a good copy of one, "
        f"or start over by deleting '{root}' or training into another --out"
    )


def first_mismatch(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> str | None:
    """The first tensor (in the network's own order) that differs between a network's state and a
    checkpoint's, in words with both shapes; None when names and shapes all agree."""
    for name, t in ours.items():
        if name not in theirs:
            return f"tensor {name} {list(t.shape)} of this config is not in the checkpoint (another model family?)"
        if tuple(theirs[name].shape) != tuple(t.shape):
            return f"tensor {name} is {list(theirs[name].shape)} in the checkpoint and {list(t.shape)} in this config"
    extra = [n for n in theirs if n not in ours]
    if extra:
        return f"tensor {extra[0]} {list(theirs[extra[0]].shape)} of the checkpoint is not in this config (another model family?)"
    return None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep=0 keeps everything)."""
    if keep <= 0:
        return
    for p in list_checkpoints(root)[keep:]:
        shutil.rmtree(p, ignore_errors=True)


def resolve_checkpoint(path: str | Path, files: tuple[str, ...] = FILES) -> Path:
    """Accept a checkpoint folder, a run directory (its newest checkpoint whose `files` verify) or a
    checkpoints/ folder."""
    p = Path(path)
    if (p / MANIFEST).exists() or (p.is_dir() and p.name.isdigit()):
        return p
    for root in (p / "checkpoints", p):
        if root.is_dir() and list_checkpoints(root):
            found, rejected = find_latest(root, files)
            if found is None:
                raise no_usable_checkpoint(root, rejected)
            for exc in rejected:
                print(f"[gandist] skipping {exc}", file=sys.stderr)
            return found
    raise CheckpointError(f"'{path}' is neither a checkpoint nor a run directory with checkpoints")
