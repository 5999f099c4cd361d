"""The run directory: config.yaml, log.jsonl, TensorBoard scalars, sample pictures, plots.

Only the main process writes (the caller passes `enabled=False` elsewhere).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any


def new_run_dir(base: str | Path, name: str) -> Path:
    """`base/<id>-<name>` with the next free 5-digit id (the StyleGAN convention)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in base.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    run = base / f"{(max(ids) + 1 if ids else 0):05d}-{name}"
    run.mkdir()
    return run


def newest_run_dir(base: str | Path, name: str) -> Path | None:
    """The newest `base/<id>-<name>` holding at least one checkpoint (for `--resume auto`)."""
    base = Path(base)
    if not base.is_dir():
        return None
    runs = sorted(
        (p for p in base.glob(f"[0-9][0-9][0-9][0-9][0-9]-{name}") if (p / "checkpoints").is_dir()),
        reverse=True,
    )
    return runs[0] if runs else None


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "samples").mkdir(exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency, but a trimmed environment may lack it
                warnings.warn(
                    "tensorboard is not installed: no TensorBoard scalars for this run", stacklevel=2
                )

    def write_config(self, text: str) -> None:
        if self.enabled:
            (self.dir / "config.yaml").write_text(text)

    def log(self, record: dict[str, Any], file: str = "log.jsonl") -> None:
        if not self.enabled:
            return
        with open(self.dir / file, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None and "step" in record:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, record["step"])

    def truncate_after(self, step: int, file: str = "log.jsonl") -> None:
        """Drop records past `step` (a resumed run rewrites what happened after its checkpoint)."""
        path = self.dir / file
        if not self.enabled or not path.exists():
            return
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
