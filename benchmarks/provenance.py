"""Provenance stamped on every benchmark result: command, device, versions, commit, date."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path


def provenance() -> dict:
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    # A copy of the working tree without .git (the GPU machine's) is told its commit by the caller.
    commit = commit or os.environ.get("GANDIST_COMMIT", "")
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": device,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
