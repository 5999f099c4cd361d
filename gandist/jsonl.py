"""Append-only JSON-lines files (log.jsonl, metrics.jsonl, prepare's journal): one record per line.

A process killed mid-write can leave a torn (partial) last line. `read_jsonl` drops such a final line
with a notice; a line that does not parse anywhere else is an error naming the file and the line:
that is damage, not an interrupted append, and reading past it would hide it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from gandist.errors import UserError


class JsonlError(UserError):
    """A .jsonl file that cannot be read: names the file, the line and the fix."""


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of an append-only .jsonl file ([] if it does not exist).

    A final line that does not parse is a torn append: it is dropped with a notice on stderr. With
    repair=True the file is also cut back to its last whole record and ends with a newline, so the
    next append starts a fresh line. A bad line anywhere else raises JsonlError."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline after the last record
    records: list[dict[str, Any]] = []
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            why = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
            if number == len(lines):
                print(
                    f"[gandist] {path}: dropping a torn last line (line {number}, {len(line)} bytes) left "
                    "by an interrupted write",
                    file=sys.stderr,
                )
                if repair:
                    with open(path, "r+b") as f:
                        f.truncate(good_bytes)
                return records
            raise JsonlError(
                f"{path} line {number} is not a JSON record ({why}); only a last line can be torn by an "
                "interrupted write, so the file was damaged: fix or delete that line"
            ) from None
        records.append(rec)
        good_bytes += len(line) + 1
    if repair and raw and not raw.endswith(b"\n"):  # a whole last record that lost its newline
        with open(path, "ab") as f:
            f.write(b"\n")
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace `path` with `records` atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as one write of one line (O_APPEND: concurrent appends do not interleave
    within a line; a kill mid-write tears at most this last line)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
