"""The run directory: config.yaml, log.jsonl, TensorBoard scalars, sample pictures, plots.

Only the main process writes (the caller passes `enabled=False` elsewhere), and only one training
at a time (gandist.train.runlock). The .jsonl files are append-only (gandist.jsonl): a resumed run
first drops a torn last line and the records past its checkpoint.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from gandist.jsonl import append_jsonl, read_jsonl, write_jsonl


def new_run_dir(base: str | Path, name: str) -> Path:
    """Create `base/<id>-<name>` with the next free 5-digit id (the StyleGAN convention)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in base.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    nxt = max(ids) + 1 if ids else 0
    while True:  # mkdir reserves the id atomically: two trainings started together get two folders
        run = base / f"{nxt:05d}-{name}"
        try:
            run.mkdir()
            return run
        except FileExistsError:
            nxt += 1


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
        append_jsonl(self.dir / file, record)
        if self._tb is not None and "step" in record:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, record["step"])

    def truncate_after(self, step: int, file: str = "log.jsonl") -> None:
        """Drop records past `step` (a resumed run rewrites what happened after its checkpoint) and a
        torn last line (a run killed mid-write)."""
        path = self.dir / file
        if not self.enabled or not path.exists():
            return
        records = read_jsonl(path)
        write_jsonl(path, [r for r in records if r.get("step", 0) <= step])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
