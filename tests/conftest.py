import os

import torch

# Triton kernels run on CPU through the interpreter; it must be chosen before triton is imported,
# and gandist imports triton only when a Triton path first runs, so setting it here is early enough.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import signal

import pytest
import torch

from gandist.config import load_config
from gandist.metrics.sources import Source

# Under pytest-xdist (`-n auto`, the README's fast tier) the suite runs in parallel processes: each takes a
# share of the cores for torch's own threads, so two workers on two cores do not oversubscribe them.
# The processes the tests start (gandist train, torchrun ranks, SLURM jobs) get the same thread count through
# OMP_NUM_THREADS, so a run compared bit for bit with one in this process sums in the same order.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    torch.set_num_threads(_THREADS)
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Cached reference statistics and the digits classifier go to a folder of this test session, not
    ~/.cache; the parallel workers of one session share it (its writes are atomic renames)."""
    if _WORKERS > 1:  # every worker's base folder is a sibling under the session's
        cache = tmp_path_factory.getbasetemp().parent / "gandist-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("gandist-cache")
    os.environ["GANDIST_CACHE"] = str(cache)
    yield


@pytest.fixture(autouse=True)
def _deterministic_defaults():
    # The loop switches deterministic algorithms on for CPU runs; keep tests independent of each other.
    yield
    torch.use_deterministic_algorithms(False)


TINY = ["name=tiny", "model.name=dcgan", "model.z_dim=8", "model.g_width=8", "model.d_width=8", "data.name=digits",
        "data.resolution=8", "data.batch_size=8", "train.steps=6", "train.log_every=2", "train.sample_every=3",
        "train.ckpt_every=3", "train.sample_n=4", "train.progress=false"]  # fmt: skip


@pytest.fixture
def tiny_cfg():
    """A DCGAN on 8 px digits small enough for dozens of steps per second (TINY, then the overrides)."""

    def make(*overrides: str):
        return load_config(None, TINY + list(overrides))

    return make


@pytest.fixture
def tiny_points_cfg():
    def make(*overrides: str):
        base = [
            "name=tinypts",
            "model.name=mlp",
            "model.z_dim=2",
            "model.g_width=16",
            "model.d_width=16",
            "model.g_layers=2",
            "model.d_layers=2",
            "model.d_norm=none",
            "data.name=ring",
            "data.batch_size=16",
            "train.steps=6",
            "train.log_every=2",
            "train.sample_every=3",
            "train.ckpt_every=3",
            "train.sample_n=32",
            "train.progress=false",
        ]
        return load_config(None, base + list(overrides))

    return make


@pytest.fixture
def small_chunks(monkeypatch):
    """Force the kernels' chunked multi-pass path (what planes above 2048 elements take) on small planes."""
    from gandist.kernels import _plane_triton

    monkeypatch.setattr(_plane_triton, "MAX_BLOCK_HW", 16)


# ---------------------------------------------------------------------------------------------------
# Growing families: a tiny PGGAN and a tiny StyleGAN on 16 px digits, 4 -> 8 -> 16 px in 0.2 kimg
# (0.02 kimg stable and 0.02 kimg fade per resolution), the configs the schedule, StyleGAN and resume tests share.

PGGAN = ["name=pg", "model.name=pggan", "model.z_dim=8", "model.fmap_base=64", "model.fmap_max=8",
         "model.mbstd_group=2", "loss.name=wgan-gp", "loss.drift=0.001", "optim.beta1=0.0", "optim.beta2=0.99",
         "optim.lr_g=0.001", "optim.lr_d=0.001", "data.name=digits", "data.resolution=16", "data.batch_size=4",
         "schedule.kind=progressive", "schedule.start_resolution=4", "schedule.stable_kimg=0.02",
         "schedule.fade_kimg=0.02", "schedule.batch={4: 8, 8: 4, 16: 4}", "schedule.lr={16: 0.002}",
         "train.kimg=0.2", "train.log_every=5", "train.sample_every=1000", "train.ckpt_every=1000",
         "train.sample_n=4", "train.ema_kimg=0.01", "train.progress=false", "health.enabled=false"]  # fmt: skip

STYLEGAN = ["name=sg", "model.name=stylegan", "model.z_dim=8", "model.w_dim=8", "model.mapping_layers=2",
            "model.mapping_width=8", "model.fmap_base=64", "model.fmap_max=8", "model.mbstd_group=2",
            "loss.name=nonsaturating", "loss.r1_gamma=10", "loss.reg_interval=2", "optim.beta1=0.0",
            "optim.beta2=0.99", "optim.lr_g=0.001", "optim.lr_d=0.001", "data.name=digits", "data.resolution=16",
            "data.batch_size=4", "schedule.kind=progressive", "schedule.start_resolution=4",
            "schedule.stable_kimg=0.02", "schedule.fade_kimg=0.02", "schedule.batch={4: 8, 8: 4, 16: 4}",
            "train.kimg=0.2", "train.log_every=5", "train.sample_every=1000", "train.ckpt_every=1000",
            "train.sample_n=4", "train.ema_kimg=0.01", "train.progress=false", "health.enabled=false"]  # fmt: skip

GROWING = {"pggan": PGGAN, "stylegan": STYLEGAN}


@pytest.fixture
def pggan_cfg():
    return lambda *extra: load_config(None, PGGAN + list(extra))


@pytest.fixture
def stylegan_cfg():
    return lambda *extra: load_config(None, STYLEGAN + list(extra))


# ---------------------------------------------------------------------------------------------------
# Comparing runs


class TensorSource(Source):
    """Images held in memory as an evaluation source."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.n, self.kind = x, len(x), "images"

    def batches(self, start, stop, batch):
        for a in range(start, stop, batch):
            yield self.x[a : min(stop, a + batch)]


class ConstantG(torch.nn.Module):
    """A generator made constant: every latent gives the same image."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("image", image)

    def forward(self, z):
        return self.image.expand(z.shape[0], *self.image.shape)


def make_trainer(cfg, run_dir, **kwargs):
    """A Trainer on the strategy the config asks for, built here as `gandist train` builds it: the test is
    the entry point that starts the run."""
    from gandist.strategies import strategy_from_config
    from gandist.train.loop import Trainer

    return Trainer(cfg, run_dir, strategy_from_config(cfg.train), **kwargs)


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The largest ||a_k - b_k|| / ||a_k|| over the floating tensors k (weights, buffers, EMA), and its name;
    integer tensors must be equal. Per tensor and relative: Adam's first steps after a (re)start move a
    parameter by about lr * sign(g), so where g is a sum of per-sample terms that nearly cancel, the summation
    order alone can move single elements by up to lr; the norm of a tensor's difference stays at float
    rounding unless something is wrong."""
    assert a.keys() == b.keys()
    worst, name = 0.0, ""
    for k in a:
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
            continue
        x, y = a[k].double(), b[k].double()
        rel = ((x - y).norm() / x.norm().clamp_min(1e-12)).item()
        if rel > worst:
            worst, name = rel, k
    return worst, name


# Ranks against one process (tests/test_ddp*.py, tests/test_slurm_multinode.py): the largest ||a_k - b_k|| /
# ||a_k|| of a tensor, and the output change (relative, float64) under which a tensor's own difference does not
# matter, a tenth of what a whole network's output must meet
REL_TOL = 1e-4
IMMATERIAL = REL_TOL / 10


def _probe(ckpt_path, name: str, n: int, dtype: torch.dtype):
    """Network `name` of a checkpoint in `dtype` and what it reads: n fixed latents (a generator), or the
    checkpoint's G's images of them (a discriminator)."""
    from gandist.load import load_network

    loaded = load_network(ckpt_path, name)
    z = torch.randn(n, loaded.cfg.model.z_dim, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        x = z if name.startswith("G") else load_network(ckpt_path, "G").net.to(dtype)(z)
    return loaded.net.to(dtype), x


def output_effects(ref_ckpt, other_ckpt, names: list[str], n: int = 256) -> dict[str, float]:
    """For each checkpoint parameter name (`G.synthesis...`, `D...`), how far its network's output moves when
    that parameter alone takes `other_ckpt`'s value: ||y' - y|| / ||y||, in float64 from `ref_ckpt`'s weights
    (see `_probe` for the inputs). A parameter whose gradient a normalisation cancels (a bias before an instance
    norm on a map that keeps its sign) holds only rounding, so two summation orders give it different values
    that move nothing the network computes. A buffer (running statistics, StyleGAN's w_avg, which only the
    truncated sampling reads) gets infinity: it is never excused."""
    from gandist.train import checkpoint as ckpt

    other = ckpt.load_checkpoint(other_ckpt, ("tensors",))["tensors"]
    nets, out = {}, {}
    for full in names:
        name, key = full.split(".", 1)
        if name not in nets:
            nets[name] = _probe(ref_ckpt, name, n, torch.float64)
        net, x = nets[name]
        if key not in dict(net.named_parameters()):
            out[full] = float("inf")
            continue
        with torch.no_grad():
            before = {k: v.clone() for k, v in net.state_dict().items()}
            y0 = net(x)
            net.load_state_dict({**before, key: other[full].double()})
            y = net(x)
            net.load_state_dict(before)
        out[full] = ((y - y0).norm() / y0.norm()).item()
    return out


def network_output_diff(ref_ckpt, other_ckpt, name: str, n: int = 256) -> float:
    """||y_other - y_ref|| / ||y_ref|| of network `name` of two checkpoints (as loaded, float32), on the
    reference's inputs (`_probe`)."""
    from gandist.load import load_network

    net, x = _probe(ref_ckpt, name, n, torch.float32)
    with torch.no_grad():
        y0, y = net(x), load_network(other_ckpt, name).net(x)
    return ((y - y0).double().norm() / y0.double().norm()).item()


def assert_ranks_match(ref_ckpt, other_ckpt, label: str, networks=("G", "G_ema", "D"), skip=()) -> None:
    """The networks of two runs (ranks against one process) are the same: every tensor within REL_TOL, or a
    parameter whose difference alone moves its network's output by at most IMMATERIAL (`output_effects`), and
    then every network's output within REL_TOL (`networks`: those that read latents or G's images). `skip`:
    tensors left out by structure (CycleGAN's cancelled biases); the objective's rank-local state is not compared."""
    from gandist.train import checkpoint as ckpt

    a, b = ({k: v for k, v in ckpt.load_checkpoint(p, ("tensors",))["tensors"].items()
             if not k.startswith("objective.")} for p in (ref_ckpt, other_ckpt))  # fmt: skip
    assert a.keys() == b.keys(), f"{label}: tensors differ: {sorted(a.keys() ^ b.keys())[:5]}"
    keep = [k for k in a if k not in skip]
    beyond = {k: max_rel_diff({k: a[k]}, {k: b[k]})[0] for k in keep if a[k].is_floating_point()}
    beyond = {k: r for k, r in beyond.items() if r > REL_TOL}
    effects = output_effects(ref_ckpt, other_ckpt, sorted(beyond)) if beyond else {}
    outputs = {n: network_output_diff(ref_ckpt, other_ckpt, n) for n in networks}
    within = [k for k in keep if k not in beyond]
    rel, name = max_rel_diff({k: a[k] for k in within}, {k: b[k] for k in within})  # integers equal
    print(f"{label}: max relative difference {rel:.3g} ({name}); beyond REL_TOL {beyond}, their output effects "
          f"{effects}; network outputs {outputs}")  # fmt: skip
    assert rel <= REL_TOL, f"{label}: {rel:.3g} relative in {name}"
    material = {k: (beyond[k], e) for k, e in effects.items() if e > IMMATERIAL}
    assert not material, f"{label}: beyond REL_TOL and not immaterial (relative, output effect): {material}"
    assert max(outputs.values(), default=0.0) <= REL_TOL, f"{label}: network outputs differ: {outputs}"


def trainer_state(t, rng: bool = True) -> dict[str, torch.Tensor]:
    """Everything a bit-exact resume must reproduce, as copies: the trainer's state tensors (networks, EMA,
    objective buffers), every optimizer's per-parameter state, and (rng=True) the loop's random stream."""
    out = {f"t.{k}": v.clone() for k, v in t.state_tensors().items()}
    for name, opt in t.optimizers.items():
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                out[f"{name}.{i}.{k}"] = torch.as_tensor(v).clone()
    if rng:
        out["rng"] = t.gen.get_state().clone()
    return out


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{different[:5]} differ after resume"


def resume_mid_fade(cfg, tmp_path):
    """A growing run interrupted by SIGTERM during the fade to 16 px (alpha > 0.4), resumed from its
    checkpoint and trained to the end, against the same run trained in one go: bit for bit, optimizer
    states, the loop's stream and the counters included. Returns (uninterrupted, resumed) trainers."""
    from gandist.train import checkpoint as ckpt
    full = make_trainer(cfg, tmp_path / "full")
    full.train(progress=False)

    part = make_trainer(cfg, tmp_path / "part")
    original = part.train_step

    def step_then_signal():
        out = original()
        if part.stage.phase == "fade" and part.stage.resolution == 16 and part.stage.alpha > 0.4:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    part.train_step = step_then_signal
    summary = part.train(progress=False)
    assert summary["interrupted"] == "SIGTERM"
    resumed = make_trainer(cfg, tmp_path / "part")
    resumed.load(ckpt.latest_checkpoint(tmp_path / "part" / "checkpoints"))
    assert resumed.stage.phase == "fade" and 0 < resumed.stage.alpha < 1
    resumed.train(progress=False)
    assert_same_state(trainer_state(full), trainer_state(resumed))
    assert resumed.nimg == full.nimg and resumed.step == full.step
    return full, resumed


@pytest.fixture(name="max_rel_diff")
def _max_rel_diff():
    return max_rel_diff


@pytest.fixture(name="trainer_state")
def _trainer_state():
    return trainer_state


@pytest.fixture(name="resume_mid_fade")
def _resume_mid_fade():
    return resume_mid_fade


# ---------------------------------------------------------------------------------------------------
# Runs trained once per session and read by every test that only inspects their outputs

# The health monitor's short cadence of tests/test_health.py's constructed runs.
HEALTH_CADENCE = ["health.every=25", "health.window=100", "health.warmup=150", "health.diversity_every=25"]


@pytest.fixture(scope="session")
def ring_wgangp_600(tmp_path_factory):
    """The shipped ring_wgangp, seed 0, 600 steps (its learning rate decays to 0 over those 600), logged, with
    the short health cadence: tests/test_learning.py's mode coverage and tests/test_health.py's healthy run
    are this one run. The monitor draws from its own stream and only reads the networks, so the cadence
    changes nothing the run computes (checked: the final weights, EMA and loop stream are bitwise those of
    the run with the default cadence and logging off). Returns the trainer, its folder and the mode
    coverage of the untrained generator (2500 samples, seed 5)."""
    from types import SimpleNamespace

    from gandist.metrics import mode_coverage

    cfg = load_config(
        "ring_wgangp", ["train.steps=600", "train.seed=0", "train.progress=false", *HEALTH_CADENCE]
    )
    run_dir = tmp_path_factory.mktemp("ring_wgangp_600")
    t = make_trainer(cfg, run_dir)
    with torch.no_grad():
        z = torch.randn(2500, cfg.model.z_dim, generator=torch.Generator().manual_seed(5))
        before = mode_coverage(t.sample_net()(z), "ring")
    t.train(progress=False)
    return SimpleNamespace(trainer=t, run_dir=run_dir, before=before)


# ---------------------------------------------------------------------------------------------------
# CPU seconds per test module, printed after the run: under pytest-xdist a test's wall time (--durations) also
# counts the cores the other worker took, so the CPU a module costs is the figure to cut when the suite is slow.
# Counted: the test process and the processes it waited for (gandist runs, torchrun and its ranks); not counted:
# what SLURM's daemons start (a SLURM job's ranks), so the SLURM modules show the tests' own share only.
CPU_TABLE_ROWS = 20


def _cpu_seconds() -> float:
    import resource

    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item._cpu_mark = _cpu_seconds()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    mark = getattr(item, "_cpu_mark", None)
    if mark is not None:  # each phase (setup, call, teardown) reports the CPU since the previous one
        now = _cpu_seconds()
        outcome.get_result().user_properties.append(("cpu_seconds", now - mark))
        item._cpu_mark = now


_CPU_BY_TEST: dict[str, float] = {}


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if key == "cpu_seconds":
            _CPU_BY_TEST[report.nodeid] = _CPU_BY_TEST.get(report.nodeid, 0.0) + value


def pytest_terminal_summary(terminalreporter):
    if not _CPU_BY_TEST:
        return
    modules: dict[str, float] = {}
    for nodeid, seconds in _CPU_BY_TEST.items():
        module = nodeid.split("::")[0]
        modules[module] = modules.get(module, 0.0) + seconds
    total = sum(modules.values())
    terminalreporter.section("CPU seconds by test module")
    terminalreporter.write_line(
        f"{total:.0f} CPU s in {len(_CPU_BY_TEST)} tests (the test processes and the processes they waited for)"
    )
    for module, seconds in sorted(modules.items(), key=lambda kv: -kv[1])[:CPU_TABLE_ROWS]:
        terminalreporter.write_line(f"{seconds:8.1f}  {100 * seconds / total:5.1f}%  {module}")


def pytest_configure(config):
    # pytest-xdist's loadgroup scheduler sorts the work units by their number of tests unless told not to; the
    # order `_longest_first` gives them is the one wanted (the scheduler runs in the controller process)
    if getattr(config.option, "dist", "no") != "no":
        config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    # A distributed test starts two or more Python processes that each import torch (about 3 s apiece on
    # 2 cores before any work), so none stays under a few seconds: each is also slow, which keeps the fast
    # tier (`pytest -m "not slow"`) free of process start-up.
    for item in items:
        if item.get_closest_marker("distributed") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        group = _xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    if _WORKERS > 1:
        items[:] = _longest_first(items)


def _longest_first(items: list) -> list:
    """Under pytest-xdist the workers take units (a group, or one test) in collection order (pytest_configure
    turns off the scheduler's own sort by test count), each when it is almost out of work: the longest go first, so that short tests fill the end of the run instead of one
    worker finishing a long test alone. A unit's length is the sum of its tests' seconds in durations.json (the
    slowest tests of a clean-clone run; it orders the work and nothing else), 10 s for another slow test and
    0.2 s for the rest. Tests keep their order inside a unit."""
    import json
    from pathlib import Path

    known = json.loads((Path(__file__).parent / "durations.json").read_text())["seconds"]
    cost: dict[str, float] = {}
    for item in items:
        unit = _xdist_group(item) or item.nodeid
        guess = 10.0 if item.get_closest_marker("slow") else 0.2
        cost[unit] = cost.get(unit, 0.0) + known.get(item.nodeid, guess)
    rank = {unit: i for i, unit in enumerate(sorted(cost, key=lambda u: -cost[u]))}  # a stable sort
    return sorted(items, key=lambda item: rank[_xdist_group(item) or item.nodeid])


def _xdist_group(item) -> str | None:
    """Under pytest-xdist (`--dist loadgroup`) the tests of one group run in one worker, one after another.
    The SLURM clusters (their daemons, ports and network namespaces) never start side by side, and a run
    trained once for a module or a session (a module- or session-scoped fixture of this suite) is trained
    by one worker, for all the tests that read it, not once per worker."""
    if item.module.__name__.startswith("test_slurm"):
        return "slurm"
    info = getattr(item, "_fixtureinfo", None)
    group = None
    for name, defs in (info.name2fixturedefs.items() if info else ()):
        d = defs[-1]
        ours = d.func.__module__ == "conftest" or d.func.__module__.startswith("test_")
        if not ours or name.startswith("_"):
            continue
        if d.scope == "session":
            return name
        if d.scope == "module":
            group = item.module.__name__
    return group
