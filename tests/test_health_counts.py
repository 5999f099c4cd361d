"""The health monitor stays quiet on the shipped configs: the number of diagnoses a run raises is small.

Bounds come from measured runs (x86_64, 2 CPU cores, torch 2.14.1, one intra-op thread, health
defaults: every 25, persist 2, window 200, warm-up 200, probe every 100), counting the records
{"event": "health", "state": "start"} in log.jsonl of

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python -m gandist train CONFIG --out /tmp/h-CONFIG --no-progress

at commit 782c784 (before: symmetric hysteresis, 2 evaluations to start and 2 to clear) and at
commit 36cb2d2 (after: start after `persist` observations, clear after a `window` without, and
Wasserstein oscillation judged on the critic's loss):

    config            steps  before  after   bound
    quickstart         3000       6      3       4
    ring_wgangp        2500       1      0       1
    grid_wgangp        2500       1      1       2
    ring_wgangp_mix    2500       1      1       2
    grid_wgangp_mix    5000       3      1       2
    ring_gan           4000       0      0       1
    grid_gan           4000       0      0       1

The bound is the measured count plus one: runs are bitwise reproducible on one machine and thread
count, but another BLAS or thread count takes a GAN onto another trajectory. The tests run that command
(one thread) for each config, side by side on the machine's cores. The full-length runs take 1-6 minutes
each and are marked slow; the first 1000 steps of the quickstart's run are checked on their own: there the
old monitor raised oscillation twice (steps 775 and 875, clearing it at 825) and the hysteresis raises it
once.
"""

import json
import os
import subprocess
import sys
import time

import pytest

RUN_TIMEOUT = 3600  # seconds for one full-length run on a loaded machine; a hang fails with the run's stderr

BOUNDS = {
    "quickstart": 4,
    "ring_wgangp": 1,
    "grid_wgangp": 2,
    "ring_wgangp_mix": 2,
    "grid_wgangp_mix": 2,
    "ring_gan": 1,
    "grid_gan": 1,
}
# The longest first, so that the runs sharing the cores end together (steps x width of each config).
LONGEST_FIRST = ["grid_wgangp_mix", "ring_gan", "grid_gan", "quickstart", "ring_wgangp_mix", "grid_wgangp",
                 "ring_wgangp"]  # fmt: skip


class Runs:
    """The shipped configs trained exactly as the bounds were measured (the command in the module docstring:
    one intra-op thread), as many at a time as the machine has cores, each on one core. Runs start when a
    test first asks for one and go on while the tests read the finished ones."""

    def __init__(self, root, names: list[str]):
        self.root, self.queue = root, [n for n in LONGEST_FIRST if n in names]
        self.slots = max(1, os.cpu_count() or 1)
        self.running: dict[str, tuple[subprocess.Popen, float]] = {}
        self.finished: dict[str, int] = {}

    def _start(self, name: str) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(self.root / f"{name}.stderr", "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gandist", "train", name, "--out", str(self.root / name), "--no-progress"],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
            )  # fmt: skip
        self.running[name] = (proc, time.monotonic())

    def _poll(self) -> None:
        for name, (proc, started) in list(self.running.items()):
            if proc.poll() is not None:
                self.finished[name] = proc.returncode
                del self.running[name]
            elif time.monotonic() - started > RUN_TIMEOUT:
                proc.kill()
                proc.wait()
                self.finished[name] = -9
                del self.running[name]
        while self.queue and len(self.running) < self.slots:
            self._start(self.queue.pop(0))

    def starts(self, name: str) -> list[tuple[str, int]]:
        """The (diagnosis, step) of every health record {"event": "health", "state": "start"} of the run."""
        while name not in self.finished:
            self._poll()
            time.sleep(0.5)
        stderr = (self.root / f"{name}.stderr").read_text()
        assert self.finished[name] == 0, f"{name} exited {self.finished[name]}:\n{stderr[-3000:]}"
        records = [json.loads(line) for line in (self.root / name / "log.jsonl").read_text().splitlines()]
        events = [r for r in records if r.get("event") == "health"]
        return [(r["diagnosis"], r["step"]) for r in events if r["state"] == "start"]

    def close(self) -> None:
        for proc, _ in self.running.values():
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Only the configs the selected tests read are trained."""
    wanted = set()
    for item in request.session.items:
        if item.module is request.module:
            params = getattr(item, "callspec", None)
            wanted.add(params.params["name"] if params and "name" in params.params else "quickstart")
    pool = Runs(tmp_path_factory.mktemp("health-counts"), sorted(wanted))
    yield pool
    pool.close()


@pytest.mark.slow
def test_quickstart_first_1000_steps_raise_oscillation_at_most_once(runs):
    # measured: 1 start (oscillation at 775); the old monitor: 2 (775, 875). The first 1000 steps of the
    # full-length run: the quickstart has no learning-rate decay, so they are the run of train.steps=1000.
    starts = [(name, step) for name, step in runs.starts("quickstart") if step <= 1000]
    assert len(starts) <= 1, starts


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_full_length_runs_raise_few_diagnoses(name, runs):
    starts = runs.starts(name)
    assert len(starts) <= BOUNDS[name], starts
