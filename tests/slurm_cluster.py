"""A real one-node SLURM cluster in a temporary folder, for tests (tests/test_slurm.py).

`SlurmCluster(root).start()` writes `slurm.conf` under `root` (its own ports, state, spool and logs;
no munge: auth/none, cred/none), starts `slurmctld -D` and `slurmd -D` as child processes and waits until
`sinfo` shows the node idle. Client commands run with `SLURM_CONF` pointing at that file, so nothing of
a system-wide SLURM is touched. `stop()` cancels this cluster's jobs, waits for them to leave, and ends
the two daemons by their PIDs. Needs the slurm-wlm binaries and root (slurmd runs jobs as their user).
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import secrets
import shutil
import signal
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


def _node_line(host: str, addr: str = "127.0.0.1") -> str:
    """This machine as `slurmd -C` describes it (CPUs, sockets, cores, memory), under `host` at `addr`."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60, check=True).stdout
    fields = [f for f in out.split("\n")[0].split() if not f.startswith(("NodeName=", "UpTime="))]
    return f"NodeName={host} NodeAddr={addr} {' '.join(fields)} State=UNKNOWN"


class SlurmCluster:
    """One node: this machine under its own name, slurmctld and slurmd on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen] = {}
        self.ctld_addr = "127.0.0.1"
        self.nodes: dict[str, str] = {self.host: "127.0.0.1"}  # node name -> NodeAddr

    def write_conf(self) -> None:
        ctld_port, d_port = _free_ports(2)
        for d in ("state", "log", *(f"spool/{n}" for n in self.nodes)):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "plugstack.conf").write_text("")
        r = self.root
        lines = [
            "ClusterName=gandisttest",
            f"SlurmctldHost={self.host}({self.ctld_addr})",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            "AuthType=auth/none",
            "CredType=cred/none",
            # a requeued job may start again only after the credential lifetime (default 120 s)
            "AuthInfo=cred_expire=5",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            # %n: the node's name, so that several slurmd share the folder (one per node)
            f"SlurmdSpoolDir={r / 'spool' / '%n'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
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
            *(_node_line(name, addr) for name, addr in self.nodes.items()),
            f"PartitionName=test Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP",
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

    def _spawn(self, key: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{key}.out", "w")
        self.procs[key] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _start_daemons(self) -> None:
        for name in DAEMONS:
            self._spawn(name, [name, "-D", "-f", str(self.conf)])

    def start(self, timeout: float = 60) -> SlurmCluster:
        try:
            self.write_conf()
            self._start_daemons()
        except BaseException:
            self.stop()
            raise
        t0 = time.time()
        while True:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited ({p.returncode}) at start\n{self.logs()}")
            r = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=20)
            if r.returncode == 0 and r.stdout.split() == ["idle"] * len(self.nodes):
                return self
            if time.time() - t0 > timeout:
                self.stop()
                raise RuntimeError(
                    f"the nodes are not idle after {timeout} s: {r.stdout or r.stderr}\n{self.logs()}"
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
        for name in sorted(self.procs, key=lambda k: k == "slurmctld"):  # the node daemons first
            p = self.procs.pop(name)
            if p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=20)


NET = ipaddress.ip_network("198.18.0.0/24")  # RFC 2544's benchmarking range: nothing else here uses it
PREFIX = (
    28  # 16 addresses per cluster: the bridge and up to 13 nodes; clusters side by side take other blocks
)


def netns_missing_reason() -> str | None:
    """Why a multi-node cluster in network namespaces cannot start here (None when it can)."""
    reason = missing_reason()
    if reason:
        return reason
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found: apt-get install iproute2 util-linux hostname (.ci/run does)"
    name = f"gdprobe{os.getpid() % 100000}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"network namespaces are not available here (ip netns add: {r.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    return None


def _free_block() -> ipaddress.IPv4Network:
    """A /28 of 198.18.0.0/24 that no interface of this machine has an address in."""
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    used = {ipaddress.ip_interface(f.split()[3]).ip for f in out.splitlines() if len(f.split()) > 3}
    for block in NET.subnets(new_prefix=PREFIX):
        if not any(a in block for a in used):
            return block
    raise RuntimeError(f"no free /28 left in {NET}: {sorted(str(a) for a in used if a in NET)}")


class NetnsSlurmCluster(SlurmCluster):
    """Several nodes on this machine: slurmctld in the root network namespace, one slurmd per node, each in
    its own network namespace and UTS namespace (its own hostname `nodeN`), joined by veth pairs to a bridge
    the cluster creates. Addresses come from one free /28 of 198.18.0.0/24: the bridge (slurmctld's address)
    takes the first, node i the (i+1)-th. Each slurmd sees the cluster's `hosts` file over /etc/hosts (bound in
    a private mount namespace) naming every node, so a node's name resolves to its bridge address on every node:
    torchrun's c10d rendezvous on the first node's name, gloo's own address (the hostname's) and srun's
    replies all cross the bridge as on a real cluster. Jobs run inside their node's namespaces (slurmd's
    children). `stop()` cancels the jobs, ends the daemons by PID, SIGKILLs what is left in each namespace
    (all started by its slurmd) and deletes the namespaces and the bridge by name.
    """

    def __init__(self, root: Path, nodes: int = 2) -> None:
        super().__init__(root)
        self.tag = f"gd{os.getpid() % 100000}{secrets.token_hex(2)}"  # <= 11 characters: interface names
        self.block = _free_block()
        hosts = list(self.block.hosts())
        self.ctld_addr = str(hosts[0])
        self.nodes = {f"node{i + 1}": str(hosts[i + 1]) for i in range(nodes)}
        self.bridge = f"{self.tag}b"
        self.netns = {name: f"gandist-{self.tag}-{name}" for name in self.nodes}
        self.made: list[tuple[str, str]] = []  # ("netns"|"link", name), in creation order

    def _ip(self, *args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")

    def _network(self) -> None:
        prefix = self.block.prefixlen
        self._ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        self._ip("addr", "add", f"{self.ctld_addr}/{prefix}", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in self.nodes.items())
        (self.root / "hosts").write_text(hosts)
        for i, (name, addr) in enumerate(self.nodes.items()):
            ns, outer, inner = self.netns[name], f"{self.tag}v{i}", f"{self.tag}p{i}"
            self._ip("netns", "add", ns)
            self.made.append(("netns", ns))
            self._ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            self.made.append(("link", outer))  # deleting one end deletes the pair
            self._ip("link", "set", outer, "master", self.bridge)
            self._ip("link", "set", outer, "up")
            self._ip("link", "set", inner, "netns", ns)
            self._ip("-n", ns, "addr", "add", f"{addr}/{prefix}", "dev", inner)
            self._ip("-n", ns, "link", "set", inner, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")

    def _start_daemons(self) -> None:
        self._network()
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        for name in self.nodes:
            # nsenter -> unshare -> sh -> slurmd, each exec'ing the next: the PID is slurmd's. A private mount
            # namespace binds the node's hosts file over /etc/hosts (nothing outside sees it); /sys stays the
            # machine's (slurmd reads cgroups there; `ip netns exec` would remount it without them).
            cmd = f'mount --bind "$1" /etc/hosts && hostname {name} && exec slurmd -D -N {name} -f "$0"'
            self._spawn(f"slurmd-{name}", ["nsenter", f"--net=/run/netns/{self.netns[name]}", "unshare", "--mount",
                                           "--uts", "--propagation", "private", "--", "sh", "-c", cmd,
                                           str(self.conf), str(self.root / "hosts")])  # fmt: skip

    def leftovers(self) -> list[str]:
        """This cluster's network namespaces and links that still exist (none after `stop()`)."""
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30).stdout
        return [f"netns {line.split()[0]}" for line in netns.splitlines() if f"gandist-{self.tag}-" in line] + [
            f"link {line.split(':')[1].strip().split('@')[0]}" for line in links.splitlines() if self.tag in line
        ]

    def pids(self, node: str) -> list[int]:
        """Every process in `node`'s network namespace."""
        r = subprocess.run(
            ["ip", "netns", "pids", self.netns[node]], capture_output=True, text=True, timeout=30
        )
        return [int(x) for x in r.stdout.split()]

    def exec(self, node: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A command inside `node`'s network namespace (as a job there would see it, hostname aside)."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns[node]}", *cmd], env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for name in self.nodes:  # whatever a job left behind in the node's namespace
                if ("netns", self.netns[name]) in self.made:
                    for pid in self.pids(name):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            for kind, name in reversed(self.made):
                if kind == "netns":
                    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
                else:
                    subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)
            self.made.clear()
