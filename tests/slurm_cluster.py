"""A real one-node SLURM cluster in a temporary folder, for tests (tests/test_slurm.py).

`SlurmCluster(root).start()` writes `slurm.conf` under `root` (its own ports, state, spool and logs;
no munge: auth/none, cred/none), starts `slurmctld -D` and `slurmd -D` as child processes and waits until
`sinfo` shows the node idle. Client commands run with `SLURM_CONF` pointing at that file, so nothing of
a system-wide SLURM is touched. `stop()` cancels this cluster's jobs, waits for them to leave, and ends
the two daemons by their PIDs. Needs the slurm-wlm binaries and root (slurmd runs jobs as their user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")


def missing_reason() -> str | None:
    """Why a local SLURM cannot start here (None when it can)."""
    absent = [b for b in DAEMONS + CLIENTS if shutil.which(b) is None]
    if absent:
        return f"SLURM binaries not found ({', '.join(absent)}): apt-get install slurm-wlm (.ci/run does)"
    if os.geteuid() != 0:
        return "a local slurmd must run as root to start jobs"
    host = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(host)  # train.sbatch's rendezvous host is the node's name
    except OSError:
        return f"this machine's name '{host}' does not resolve (add it to /etc/hosts)"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_line(host: str) -> str:
    """This machine as `slurmd -C` describes it (CPUs, sockets, cores, memory), under `host`."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60, check=True).stdout
    fields = [f for f in out.split("\n")[0].split() if not f.startswith(("NodeName=", "UpTime="))]
    return f"NodeName={host} NodeAddr=127.0.0.1 {' '.join(fields)} State=UNKNOWN"


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen] = {}

    def write_conf(self) -> None:
        ctld_port, d_port = _free_ports(2)
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "plugstack.conf").write_text("")
        r = self.root
        lines = [
            "ClusterName=gandisttest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            "AuthType=auth/none",
            "CredType=cred/none",
            # a requeued job may start again only after the credential lifetime (default 120 s)
            "AuthInfo=cred_expire=5",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            f"PlugStackConfig={r / 'plugstack.conf'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "JobRequeue=1",
            "ReturnToService=2",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MinJobAge=3600",  # finished jobs stay visible to `scontrol show job` (no slurmdbd here)
            "KillWait=30",
            _node_line(self.host),
            f"PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """A client command against this cluster; `env` adds to the environment (sbatch passes it to the job)."""
        r = subprocess.run(
            list(cmd), env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}\n{self.logs()}")
        return r

    def start(self, timeout: float = 60) -> SlurmCluster:
        self.write_conf()
        for name in DAEMONS:
            log = open(self.root / "log" / f"{name}.out", "w")
            self.procs[name] = subprocess.Popen(
                [name, "-D", "-f", str(self.conf)], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
        t0 = time.time()
        while True:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited ({p.returncode}) at start\n{self.logs()}")
            r = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=20)
            if r.returncode == 0 and r.stdout.strip() == "idle":
                return self
            if time.time() - t0 > timeout:
                self.stop()
                raise RuntimeError(
                    f"the node is not idle after {timeout} s: {r.stdout or r.stderr}\n{self.logs()}"
                )
            time.sleep(0.5)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def wait_job(self, job_id: str, until, timeout: float, what: str) -> dict[str, str]:
        t0 = time.time()
        while True:
            info = self.job(job_id)
            if until(info):
                return info
            if time.time() - t0 > timeout:
                raise AssertionError(
                    f"job {job_id}: timed out after {timeout} s waiting for {what}; now {info}"
                )
            time.sleep(0.5)

    def logs(self, tail: int = 40) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {f.name} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            user = pwd.getpwuid(os.geteuid()).pw_name  # every job of this private cluster
            self.run("scancel", f"--user={user}", "--full", "--signal=KILL", "--state=RUNNING", check=False)
            self.run("scancel", f"--user={user}", check=False)
            t0 = time.time()
            while time.time() - t0 < 30:
                r = self.run("squeue", "-h", "-o", "%i", check=False, timeout=20)
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=20)
