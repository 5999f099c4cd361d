"""DeepSpeed (`train.strategy=deepspeed`, gloo on CPU): one engine per optimizer (G and D) under ZeRO 0 and 1
trains, checkpoints each engine, resumes with `--resume auto` bit for bit, equals the `ddp` strategy, and
refuses a JSON that contradicts the config (or a missing package) with one line.

Equivalence with `ddp`, measured (2 ranks, quickstart DCGAN with synchronised batch norm, R1 every step,
2 micro-batches of 16 per rank, 4 generator steps, 2026-11-26, torch 2.14.1, deepspeed 0.19.8): ZeRO 0 and
ZeRO 1 equal ddp bit for bit (max relative difference 0.0 in every weight, buffer and EMA tensor). Both sum
the same per-rank gradients in one gloo all-reduce and divide by the world size, then run the same fused
Adam, so the test asserts equality. Lazy R1 (a phase `Dreg` of R1 alone) is not compared: D's output bias
gets no gradient from R1; the ddp strategy (and torch's Adam) then leave it alone, but DeepSpeed fills a
missing gradient with zeros (ZeRO flattens every parameter into one buffer) and Adam still moves it by its
momentum: measured 0.25 relative in that bias after 4 steps. Resuming is compared with lazy R1 on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed")

from gandist.train.checkpoint import load_checkpoint  # noqa: E402

MP_TIMEOUT = 300  # seconds for one multi-process launch; a hang fails with the workers' output instead
# R1 paid every step (phase Dboth: every D parameter gets a gradient), gradient accumulation over 2
# micro-batches per rank, layer-norm D (R1 through batch norm would differentiate the batch statistics)
BASE = ["health.enabled=false", "model.d_norm=layer", "loss.r1_gamma=1.0", "loss.reg_interval=1",
        "train.micro_batch=16"]  # fmt: skip


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _train_args(out: Path, sets: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    args = ["-m", "gandist", "train", "quickstart", "--out", str(out), "--no-progress", *extra]
    for s in sets:
        args += ["--set", s]
    return args


def torchrun(out: Path, sets: list[str], extra: tuple[str, ...] = (), check: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *_train_args(out, sets, extra)]  # fmt: skip
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=MP_TIMEOUT, env=_env())
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"torchrun did not finish in {MP_TIMEOUT} s; stderr:\n{err[-6000:]}")
    if check:
        assert r.returncode == 0, f"torchrun exited {r.returncode}; stderr:\n{r.stderr[-6000:]}"
    return r


def deepspeed_sets(stage: int) -> list[str]:
    return ["train.strategy=deepspeed", f"train.deepspeed_config=zero{stage}"]


def newest(run: Path) -> Path:
    return sorted((run / "checkpoints").iterdir())[-1]


def final_tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(newest(run), parts=("tensors",))["tensors"]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1])
def test_deepspeed_checkpoints_and_resumes_exactly(stage, tmp_path):
    """2 ranks, 4 steps in one go against 2 steps, a checkpoint, and `--resume auto` to 4: bit for bit. Lazy R1
    (phase Dreg every 2 steps) runs the penalty pass through engine.module and steps D's engine twice a step."""
    sets = [*BASE, "loss.reg_interval=2", *deepspeed_sets(stage)]
    torchrun(tmp_path / "straight", [*sets, "train.steps=4"])
    torchrun(tmp_path / "resumed", [*sets, "train.steps=2"])
    ckpt = newest(tmp_path / "resumed")
    manifest = json.loads((ckpt / "MANIFEST.json").read_text())
    for engine in ("G", "D"):  # each engine's own checkpoint, inside gandist's and listed in its manifest
        files = [n for n in manifest if n.startswith(f"deepspeed/{engine}/")]
        assert any(n.endswith("mp_rank_00_model_states.pt") for n in files), files
        if stage > 0:  # one optimizer partition per rank
            assert sum("zero_pp_rank_" in n for n in files) == 2, files
    assert not list((tmp_path / "resumed" / "checkpoints").glob(".deepspeed-*")), "staging folder left behind"
    r = torchrun(tmp_path / "resumed", [*sets, "train.steps=4"], extra=("--resume", "auto"))
    assert "resumed from" in r.stderr
    a, b = final_tensors(tmp_path / "straight"), final_tensors(tmp_path / "resumed")
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, (
        f"ZeRO {stage}: the resumed run differs from the uninterrupted one in {different[:5]}"
    )


@pytest.mark.distributed
@pytest.mark.slow
def test_deepspeed_zero0_and_zero1_equal_ddp(tmp_path, max_rel_diff):
    """Measured bit-identical (module docstring), so asserted bit-identical: the same gradients are averaged
    once (by the engine; the loop's own reduction is off under DeepSpeed) and stepped by the same Adam."""
    sets = [*BASE, "train.steps=4"]
    torchrun(tmp_path / "ddp", ["train.strategy=ddp", *sets])
    ref = final_tensors(tmp_path / "ddp")
    for stage in (0, 1):
        torchrun(tmp_path / f"zero{stage}", [*deepspeed_sets(stage), *sets])
        rel, name = max_rel_diff(ref, final_tensors(tmp_path / f"zero{stage}"))
        print(f"ZeRO {stage} vs ddp: max relative difference {rel:.3g} ({name})")
        assert rel == 0.0, f"ZeRO {stage} differs from ddp by {rel:.3g} relative in {name}"


@pytest.mark.distributed
def test_contradicting_json_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train_batch_size": 32, "gradient_clipping": 0.0}))
    r = torchrun(tmp_path / "run", ["train.strategy=deepspeed", f"train.deepspeed_config={bad}", "train.steps=1"],
                 check=False)  # fmt: skip
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.startswith("gandist train: error:")]
    assert lines, r.stderr[-3000:]
    assert "sets train_batch_size=32, but data.batch_size=64 over 2 rank(s)" in lines[0]
    assert "needs train_batch_size=64; delete these keys from the JSON" in lines[0]
    # torchrun reports the failed worker with a traceback of its own; the workers print none
    assert "gandist/train" not in r.stderr and "gandist/cli.py" not in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "run").exists(), "a launch that fails leaves no run folder"


def test_missing_deepspeed_package_is_one_line(tmp_path):
    """Without the package (an importable `deepspeed` that fails like a missing one), one line names the install."""
    fake = tmp_path / "site" / "deepspeed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'deepspeed'\")\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, *_train_args(tmp_path / "run", ["train.strategy=deepspeed", "train.steps=1"])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=MP_TIMEOUT, env=env)
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.startswith("gandist train: error:")]
    assert len(lines) == 1 and "pip install deepspeed" in lines[0] and "gandist[deepspeed]" in lines[0], (
        r.stderr
    )
    assert "Traceback" not in r.stderr


SKIP_SCRIPT = """
import sys, torch
from pathlib import Path
from gandist.config import load_config
from gandist.objectives.base import PhaseResult
from gandist.strategies import strategy_from_config
from gandist.train.loop import Trainer
out, sets = sys.argv[1], sys.argv[2:]
cfg = load_config("quickstart", ["health.enabled=false", "train.skip_limit=0", "loss.r1_gamma=1.0",
                                 "loss.reg_interval=1", "model.d_norm=layer", "train.micro_batch=32", *sets])
t = Trainer(cfg, Path(out) / "run", strategy_from_config(cfg.train), log_enabled=False)
weights = lambda: {f"{n}.{k}": v.detach().clone() for n, net in t.nets.items() for k, v in net.named_parameters()}
t.train_step()
before, real = weights(), t.objective.accumulate
t.objective.accumulate = lambda ph, b, c: (lambda r: PhaseResult(r.loss * float("nan"), r.stats))(real(ph, b, c))
t.train_step()  # every update of this step is skipped
assert int(t.skipped) == 2 and all(torch.equal(before[k], v) for k, v in weights().items()), "a skipped step moved"
t.objective.accumulate = real
t.train_step()
torch.save(weights(), Path(out) / "weights.pt")
t.strategy.close()
"""


@pytest.mark.slow
def test_skipped_update_leaves_no_trace(tmp_path):
    """A non-finite loss skips the engine's step and drops every gradient it holds (ZeRO 2 keeps reduced
    partitions of its own): the next step equals ddp's after the same skip, bit for bit (one process each)."""
    runs = {"ddp": ["train.strategy=ddp"], **{f"zero{s}": deepspeed_sets(s) for s in (1, 2)}}
    for name, sets in runs.items():
        out = tmp_path / name
        out.mkdir()
        r = subprocess.run([sys.executable, "-c", SKIP_SCRIPT, str(out), *sets], capture_output=True, text=True,
                           timeout=MP_TIMEOUT, env=_env())  # fmt: skip
        assert r.returncode == 0, f"{name}:\n{r.stderr[-3000:]}"
    ref = torch.load(tmp_path / "ddp" / "weights.pt")
    for name in ("zero1", "zero2"):
        got = torch.load(tmp_path / name / "weights.pt")
        assert all(torch.equal(ref[k], got[k]) for k in ref), (
            f"{name} differs from ddp after a skipped update"
        )


@pytest.mark.slow
def test_zero2_reports_gradient_norms(tmp_path):
    """ZeRO 2 frees `.grad` during backward; the health monitor's gradient norms come from the engine instead
    and equal ZeRO 0's (one process: a local norm is the global one; float rounding of another summation)."""
    logs = {}
    for stage in (0, 2):
        sets = [*deepspeed_sets(stage), "train.steps=2", "train.log_every=1", "health.every=1"]
        r = subprocess.run([sys.executable, *_train_args(tmp_path / f"z{stage}", sets)], capture_output=True,
                           text=True, timeout=MP_TIMEOUT, env=_env())  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        logs[stage] = [json.loads(x) for x in (tmp_path / f"z{stage}" / "log.jsonl").read_text().splitlines()]
    for a, b in zip(logs[0], logs[2], strict=True):
        for key in ("d_grad_norm", "g_grad_norm"):
            assert a[key] > 0 and b[key] == pytest.approx(a[key], rel=1e-5), (key, a[key], b[key])


# -- the checks of the JSON against the config, in process ------------------------------------------------
def _cfg(*sets: str):
    from gandist.config import load_config

    return load_config("quickstart", list(sets))


def _build(raw: dict, *sets: str, world: int = 2) -> dict:
    from gandist.strategies.deepspeed import build_ds_config

    return build_ds_config({"gradient_clipping": 0.0, **raw}, "x.json", _cfg(*sets), world)


def test_batch_sizes_are_derived_from_the_config():
    ds = _build({"zero_optimization": {"stage": 1}, "_comment": "for people"}, "train.micro_batch=8")
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
        64, 8, 4)  # fmt: skip
    assert ds["managed_gradient_accumulation"] is False and "bf16" not in ds  # gandist's autocast does bf16
    assert "_comment" not in ds
    assert (
        _build({"train_batch_size": 64, "gradient_accumulation_steps": "auto"})["gradient_accumulation_steps"]
        == 1
    )
    assert "bf16" not in _build({}, "train.precision=bf16")


@pytest.mark.parametrize(
    ("raw", "sets", "message"),
    [
        ({"train_micro_batch_size_per_gpu": 16}, (), "sets train_micro_batch_size_per_gpu=16, but data.batch_size=64 "
         "over 2 rank(s) with train.micro_batch=0 needs train_micro_batch_size_per_gpu=32"),
        ({"bf16": {"enabled": True}}, ("train.precision=bf16",), "enables bf16, which makes DeepSpeed keep the "
         "weights in bf16, but gandist's fp32 gradient penalties, G_ema and checkpoints need fp32 weights; delete"),
        ({}, ("train.precision=fp16",), "fp16 is not supported with train.strategy=deepspeed"),
        ({"fp16": {"enabled": True}}, (), "its loss scale does not reach the autograd.grad"),
        ({"zero_optimization": {"stage": 3}}, (), "ZeRO stage 3; gandist supports stages 0-2"),
        ({"optimizer": {"type": "Adam"}}, (), "defines an optimizer; delete it from the JSON"),
        ({"torch_autocast": {"enabled": True}}, (), 'delete "torch_autocast" from the JSON'),
    ],
)  # fmt: skip
def test_contradictions_name_the_fix(raw, sets, message):
    from gandist.errors import UserError

    with pytest.raises(UserError) as info:
        _build(raw, *sets)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_gradient_clipping_must_be_explicit_and_names_resolve():
    from gandist.errors import UserError
    from gandist.strategies.deepspeed import build_ds_config, resolve_json

    with pytest.raises(UserError, match=r"does not set gradient_clipping; set it explicitly \(0.0 = off"):
        build_ds_config({}, "x.json", _cfg(), 2)
    for stage in (0, 1, 2):  # the shipped files pass the checks
        path = resolve_json(f"zero{stage}")
        ds = build_ds_config(json.loads(path.read_text()), str(path), _cfg(), 2)
        assert ds["zero_optimization"]["stage"] == stage and ds["gradient_clipping"] == 0.0
    with pytest.raises(UserError, match="is neither a JSON file nor one of zero0, zero1, zero2"):
        resolve_json("zero9")


def test_zero_buckets_fit_the_engine_unless_the_json_sets_them():
    from gandist.strategies.deepspeed import DS_BUCKET, _fit_buckets

    def zero(stage: int, n: int, **set_in_json) -> dict:
        return _fit_buckets({"zero_optimization": {"stage": stage, **set_in_json}}, n)["zero_optimization"]

    fitted = zero(1, 1000)
    assert fitted["reduce_bucket_size"] == fitted["allgather_bucket_size"] == 1024  # a multiple of 256
    assert zero(2, 10**10)["reduce_bucket_size"] == DS_BUCKET
    assert zero(1, 1000, reduce_bucket_size=2048)["reduce_bucket_size"] == 2048
    assert "reduce_bucket_size" not in zero(0, 1000)
    kept = {"zero_optimization": {"stage": 1}}
    _fit_buckets(kept, 1000)
    assert kept == {"zero_optimization": {"stage": 1}}  # the JSON's own dict is left as it was
