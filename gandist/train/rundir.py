"""Which folder `gandist train --out` may write into: a new or empty one, or one gandist made.

A run writes config.yaml, log.jsonl, summary.json, samples/ and checkpoints/ into its folder, so a
mistyped --out pointing at the user's own project would overwrite their files. gandist marks each
folder it trains into with `.gandist-run` (written under the run lock, before anything else) and
refuses a non-empty folder without it, unless --allow-nonempty-out says the user means it. Folders
from before the marker are recognised by a gandist checkpoint inside (checkpoints/<step>/MANIFEST.json).

The checks run before the trainer is built, so every refusal is one line and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from gandist.errors import UserError, first_few

MARKER = ".gandist-run"
IGNORED = {".lock"}  # a lock file alone is left by a start that failed on an older gandist


def is_run_dir(path: Path) -> bool:
    """True when gandist made `path`: the marker, or a checkpoint from before the marker existed."""
    if (path / MARKER).is_file():
        return True
    ckpts = path / "checkpoints"
    return ckpts.is_dir() and any((p / "MANIFEST.json").is_file() for p in ckpts.iterdir() if p.name.isdigit())


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_run_dir(path: Path, allow_nonempty: bool = False) -> None:
    """Raise UserError (one line naming the fix) unless `path` can be a run folder. Writes nothing."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out '{path}' is a file, not a folder; name a folder for the run (it is created if new)")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"--out '{path}': '{base}' is a file, not a folder; name a folder for the run")
    if not os.access(base, os.W_OK | os.X_OK):
        ro = "read-only" if _read_only_fs(base) else "not writable by this user"
        raise UserError(f"cannot write the run into '{path}': '{base}' is {ro}; choose a writable folder with --out")
    if base != path.absolute() or allow_nonempty or is_run_dir(path):
        return
    others = sorted(p.name for p in path.iterdir() if p.name not in IGNORED)
    if others:
        raise UserError(
            f"--out '{path}' holds files gandist did not write ({first_few(others)}) and training would overwrite some of "
            "them; choose a new or empty folder, or add --allow-nonempty-out to train among them"
        )


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def mark_run_dir(path: Path) -> None:
    """Write the marker (once; an existing one is kept). Call under the run lock."""
    marker = path / MARKER
    if not marker.exists():
        from gandist import __version__

        marker.write_text(json.dumps({"gandist": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
