"""Faults during training, through real `gandist train` processes: a full disk (a small tmpfs, as root),
a second Ctrl-C, and the "Continue with" hint followed as printed. Each ends in one line, no traceback,
and no half-written checkpoint folder."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each row starts one or two fresh interpreters with torch: ~30 s each

# ring_gan at its own width (a checkpoint of several MB) with nothing else written after step 0
RING = ["--set", "train.log_every=1", "--set", "train.sample_every=100000", "--set", "train.ckpt_every=100000", "--set", "train.sample_n=16",
        "--set", "health.enabled=false", "--no-progress"]  # fmt: skip


def _gandist(*args: str) -> list[str]:
    return [sys.executable, "-m", "gandist", *args]


def _error_lines(stderr: str, command: str = "train") -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [x for x in stderr.splitlines() if x.startswith(f"gandist {command}: ")]


def _temporaries(run: Path) -> list[Path]:
    return list((run / "checkpoints").glob(".tmp-*")) if (run / "checkpoints").is_dir() else []


def test_full_disk_while_saving(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        run = disk / "run"
        for extra in ([], ["--resume", "auto"]):  # and once more on the still-full disk
            p = subprocess.run(_gandist("train", "ring_gan", "--out", str(run), "--set", "train.steps=2", *RING, *extra),
                               capture_output=True, text=True, timeout=600)  # fmt: skip
            assert p.returncode == 2, p.stderr
            (line,) = _error_lines(p.stderr)
            assert "No space left on device" in line and "free space on that disk" in line
            assert _temporaries(run) == []  # the failed save removed its folder
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _start(run: Path, cmd: list[str]) -> tuple[subprocess.Popen, list[str]]:
    """Start a training and return once its start line is out and a step is logged (the loop runs)."""
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if "run directory" in line:
            log = run / "log.jsonl"
            while time.monotonic() < deadline and not (log.is_file() and log.stat().st_size > 0):
                time.sleep(0.2)
            return p, seen
    p.kill()
    pytest.fail(f"training did not start: {seen}")


def test_second_ctrl_c_is_one_line_and_leaves_no_temporary(tmp_path):
    run = tmp_path / "run"
    # steps of a few tenths of a second (a batch of 2000), so the run is still inside one, or saving after it,
    # when the second Ctrl-C comes: a run that had already saved and ended would print no abort line
    p, seen = _start(run, _gandist("train", "ring_gan", "--out", str(run), "--set", "train.steps=1000000",
                                   "--set", "data.batch_size=2000", *RING))  # fmt: skip
    p.send_signal(signal.SIGINT)
    while True:  # the second only once the first has been taken (two pending SIGINTs would merge into one)
        line = p.stderr.readline()
        assert line, f"the run ended before it acknowledged the first Ctrl-C: {seen}"
        seen.append(line.rstrip("\n"))
        if "SIGINT received" in line:
            break
    p.send_signal(signal.SIGINT)  # abort without saving
    rest = p.stderr.read()
    p.wait(timeout=120)
    assert p.returncode == 130
    (line,) = _error_lines("\n".join(seen) + rest)
    assert "interrupted by Ctrl-C: stopped without saving" in line
    assert _temporaries(run) == []


def test_the_continue_hint_works_as_printed(tmp_path):
    run = tmp_path / "run"
    overrides = ["--set", "model.g_width=24", "--set", "train.steps=1000000"]  # differs from ring_gan's 400
    p, _ = _start(run, _gandist("train", "ring_gan", "--out", str(run), *overrides, *RING))
    p.send_signal(signal.SIGINT)
    out = p.stderr.read()
    p.wait(timeout=300)
    assert p.returncode == 130, out
    hint = out.split("Continue with: ", 1)[1].splitlines()[0]
    words = shlex.split(hint)
    assert words[:2] == ["gandist", "train"]
    (run / "log.jsonl").unlink()  # the resumed run rewrites it: wait for its first step
    q, seen = _start(run, _gandist(*words[1:]))  # resumes: the config fits the checkpoint
    q.send_signal(signal.SIGINT)
    q.stderr.read()
    q.wait(timeout=300)
    assert any("resumed from" in x for x in seen), seen
    assert q.returncode == 130
