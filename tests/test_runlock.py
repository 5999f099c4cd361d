"""One writer per run folder (gandist.train.runlock)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from gandist.cli import main
from gandist.errors import UserError
from gandist.train import checkpoint as ckpt
from gandist.train.runlock import LOCK_FILE, RunLock, RunLockedError


def test_second_writer_is_refused_with_the_holder(tmp_path):
    with RunLock(tmp_path / "run") as first:
        assert first.held and (tmp_path / "run" / LOCK_FILE).is_file()
        with pytest.raises(RunLockedError) as info:
            RunLock(tmp_path / "run").acquire()  # another open file description: flock conflicts
        msg = str(info.value)
        assert isinstance(info.value, UserError) and "\n" not in msg
        for part in (f"host {socket.gethostname()}", f"PID {os.getpid()}", "started 20", "--out"):
            assert part in msg, (part, msg)
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released: the folder is left clean
    RunLock(tmp_path / "run").acquire().release()


def test_lock_of_a_dead_process_is_taken_over_with_a_notice(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    # what a training killed by SIGKILL leaves: its holder line, and no flock (the kernel dropped it)
    holder = {"host": socket.gethostname(), "pid": dead.pid, "started": time.time() - 60}
    (run / LOCK_FILE).write_text(json.dumps(holder) + "\n")
    lock = RunLock(run).acquire()
    err = capsys.readouterr().err
    assert "taking over" in err and f"PID {dead.pid}" in err
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def _tiny(steps: int, *extra: str, images: bool = True) -> list[str]:
    sets = ["model.z_dim=8", "model.g_width=8", "model.d_width=8", "data.batch_size=8",
            f"train.steps={steps}", "train.log_every=10", "train.sample_every=1000000",
            "train.ckpt_every=1000000", "train.sample_n=4", "health.enabled=false", *extra]  # fmt: skip
    sets += ["data.resolution=8"] if images else []  # 2-D points have no resolution
    return [x for s in sets for x in ("--set", s)] + ["--no-progress"]


def _listing(root):
    """name -> (size, mtime) of everything under root."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _wait(cond, what, proc, timeout=120):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"the first training exited ({proc.returncode}) before {what}"
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_second_training_into_a_busy_folder_fails_and_the_first_resumes_bit_exactly(tmp_path, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "gandist", "train", "digits_dcgan", "--out", str(run), *_tiny(10**6)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(
            lambda: (run / LOCK_FILE).is_file() and (run / LOCK_FILE).read_text().strip(), "the lock", first
        )
        first.send_signal(signal.SIGSTOP)  # frozen, still holding the lock: any change now is the second's
        try:
            before = _listing(run)
            assert main(["train", "digits_dcgan", "--out", str(run), *_tiny(20)]) == 2
            after = _listing(run)
        finally:
            first.send_signal(signal.SIGCONT)
        assert after == before  # the second training touched nothing
        err = capsys.readouterr().err.strip().splitlines()
        assert len([x for x in err if "error" in x]) == 1
        line = next(x for x in err if "error" in x)
        for part in (
            "is being written by another training",
            f"PID {first.pid}",
            "host ",
            "started ",
            "--out",
        ):
            assert part in line, (part, line)
        _wait(lambda: (run / "log.jsonl").is_file(), "the first log record", first)
        first.send_signal(signal.SIGTERM)  # a graceful stop: checkpoint after the current step
        assert first.wait(timeout=120) == 75, first.stderr.read()  # EXIT_REQUEUE: saved, start it again
    finally:
        if first.poll() is None:
            first.kill()
    k = int(ckpt.latest_checkpoint(run / "checkpoints").name)
    assert not (run / LOCK_FILE).exists()

    # the first run continues, and equals one uninterrupted run of the same length bit for bit; both run in a
    # child process as the first did, so all three sum in the same numeric setting whatever this test process
    # carries (in a full pytest-xdist session the in-process runs once left the child's result by rounding)
    ref = tmp_path / "ref"
    for args in ([str(run), "--resume", "auto"], [str(ref)]):
        r = subprocess.run([sys.executable, "-m", "gandist", "train", "digits_dcgan", "--out", *args, *_tiny(k + 3)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
    a = load_file(str(ckpt.latest_checkpoint(run / "checkpoints") / "models.safetensors"))
    b = load_file(str(ckpt.latest_checkpoint(ref / "checkpoints") / "models.safetensors"))
    assert a.keys() == b.keys() and all(a[x].equal(b[x]) for x in a)

    def steps(r):
        return [json.loads(x)["step"] for x in (r / "log.jsonl").read_text().splitlines() if '"step"' in x]

    assert steps(run) == steps(ref)  # one writer: no interleaved or repeated records


def test_readers_need_no_lock(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "ring_wgangp", "--out", str(run), *_tiny(2, "model.g_width=8", images=False)]) == 0
    with RunLock(run):  # as if a training were writing into it
        assert main(["generate", str(run), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 0
        assert main(["health", str(run)]) == 0


def test_failed_start_leaves_no_folder_behind(tmp_path, monkeypatch):
    new = tmp_path / "new"
    assert (
        main(
            [
                "train",
                "ring_wgangp",
                "--out",
                str(new),
                "--resume",
                str(tmp_path / "nope"),
                *_tiny(2, images=False),
            ]
        )
        == 2
    )
    assert not new.exists()
    monkeypatch.chdir(tmp_path)  # runs/<id>-<name>/ is made by this call: removed too
    assert main(["train", "ring_wgangp", "--resume", str(tmp_path / "nope"), *_tiny(2, images=False)]) == 2
    assert not any((tmp_path / "runs").iterdir())


def test_lock_is_held_during_training_and_released_after(tmp_path, monkeypatch):
    from gandist.train import loop

    seen = {}
    original = loop.Trainer.train

    def train(self, *a, **k):
        seen["holder"] = json.loads((self.run_dir / LOCK_FILE).read_text())
        return original(self, *a, **k)

    monkeypatch.setattr(loop.Trainer, "train", train)
    assert main(["train", "ring_wgangp", "--out", str(tmp_path / "r"), *_tiny(2, images=False)]) == 0
    assert seen["holder"]["pid"] == os.getpid()
    assert not (tmp_path / "r" / LOCK_FILE).exists()
