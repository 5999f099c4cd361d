"""One writer per run folder: an exclusive lock held for the whole training.

Two trainings writing into one folder would interleave their `log.jsonl` records and overwrite each
other's checkpoints. The writer holds `fcntl.flock(LOCK_EX)` on `<run>/.lock` from before its first
write until it ends; a second writer fails at once, before touching anything, with one line naming
the holder (host, PID, start time) and the fix. The kernel drops a flock when its process dies, even
by SIGKILL, so a crashed run never blocks the next one; the holder line it leaves in the file is
taken over with a notice. Readers (generate, eval, health, interpolate) never take the lock.
Under several ranks only the main rank holds it (the caller decides, see `cmd_train`).

flock is advisory and per open file: it works between processes on one host and, on Linux, across
hosts on NFS (emulated with POSIX locks). Where a file system has no locks at all, the lock falls
back to the holder line alone: a live PID on this host still blocks, a dead one is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from gandist.errors import UserError

LOCK_FILE = ".lock"


class RunLockedError(UserError):
    """Another training writes into this run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(holder: dict[str, Any]) -> str:
    """'host h, PID p, started 2025-01-31 12:00:00' (or what is known of it)."""
    if not holder:
        return "holder unknown: it is starting or was written by an older gandist"
    started = holder.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        if isinstance(started, (int, float))
        else "?"
    )
    return f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, started {when}"


class RunLock:
    """`with RunLock(run_dir):` or `acquire()` / `release()`. Creates `run_dir` on acquire."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read_holder(self, fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            holder = json.loads(raw) if raw.strip() else {}
        except ValueError:
            holder = {}
        return holder if isinstance(holder, dict) else {}

    def _refuse(self, holder: dict[str, Any]) -> RunLockedError:
        return RunLockedError(
            f"run folder '{self.dir}' is being written by another training ({describe(holder)}); "
            "wait for it to finish, or train into another folder with --out"
        )

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockedError at once (never waits)."""
        if self._fd is not None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "argv": sys.argv[1:]}
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                have_flock = True
            except BlockingIOError:
                holder = self._read_holder(fd)
                os.close(fd)
                raise self._refuse(holder) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                have_flock = False
            # A releasing holder unlinks the file before unlocking it: if we locked a file that is
            # no longer at self.path, the lock protects nothing; open the current one and try again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            holder = self._read_holder(fd)
            if holder and holder.get("pid") != os.getpid():
                if not have_flock:  # no locks here: judge by the holder line alone
                    if holder.get("host") != me["host"]:
                        raise RunLockedError(
                            f"run folder '{self.dir}' names another writer ({describe(holder)}) and this "
                            f"file system has no locks to tell whether it still runs; if it has ended, "
                            f"delete '{self.path}' and start again"
                        )
                    if isinstance(holder.get("pid"), int) and _pid_alive(holder["pid"]):
                        raise self._refuse(holder)
                # with flock, a free lock is proof: the kernel drops it when its process dies
                print(
                    f"[gandist] taking over the lock of '{self.dir}' left by a training that ended without "
                    f"releasing it ({describe(holder)})",
                    file=sys.stderr,
                )
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(me) + "\n").encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in this order: see the check in `acquire`)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
