"""benchmarks/gpu_check.py: the rehearsal of the one-call GPU check runs every step on the CPU (Triton
interpreted) and writes the summary the GPU run will; its goals, time boxes and argument checks."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_utils import TOL, assert_close, tolerance_ratio

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
STEPS = ["env", "correctness", "throughput", "training", "data", "fid"]
KERNELS = ["adain", "noise_bias_act", "styled_epilogue", "gradient_penalty/wgan-gp", "gradient_penalty/r1"]


def _run(tmp_path, *extra, timeout=900):
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--tiny", "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "work"), *extra],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, "OUT": ""},
    )  # fmt: skip


@pytest.mark.slow
def test_dry_run_writes_every_step_into_one_summary(tmp_path):
    # Budgets far above the steps' needs: on a loaded shared machine a cut would be the load's, not the code's.
    budgets = [x for s in STEPS for x in ("--step-budget", f"{s}=600")]
    r = _run(tmp_path, *budgets)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.log",
        "summary.json",
        "summary.md",
        "summary.png",
    ]
    rec = json.loads((out / "summary.json").read_text())
    assert list(rec["steps"]) == STEPS
    try:
        import nvidia.dali  # noqa: F401

        dali = True
    except ImportError:
        dali = False
    for name, s in rec["steps"].items():
        expected = "skipped" if name == "data" and not dali else "ok"
        assert s["status"] == expected, (name, s)
        assert s["used_s"] <= s["budget_s"] + 5
    if not dali:
        assert "DALI is not importable" in rec["steps"]["data"]["reason"]
    prov = rec["provenance"]
    assert prov["device"].startswith("CPU") and prov["torch"] == torch.__version__ and prov["date"]
    rows = rec["summary"]
    for row in rows:  # every row carries its provenance
        assert {k: row[k] for k in ("device", "torch", "triton", "commit", "date")} == {
            k: prov[k] for k in ("device", "torch", "triton", "commit", "date")
        }

    # Correctness: every kernel in both dtypes, every order, within the kernel tolerance table.
    corr = [x for x in rows if x["step"] == "correctness"]
    assert sorted(x["figure"] for x in corr) == sorted(
        f"{k} {d}" for k in KERNELS for d in ("float32", "bfloat16")
    )
    raw = rec["raw"]["correctness"]
    assert {(x["kernel"], x["dtype"], x["order"]) for x in raw} == {
        (k, d, o) for k in KERNELS for d in ("float32", "bfloat16") for o in ("fwd", "bwd", "double")
    }
    for x in raw:
        assert 0 <= x["tol_ratio"] <= 1, x
        bound = TOL[getattr(torch, x["dtype"])]
        assert x["rel_err"] <= bound["atol"] + bound["rtol"], x  # |err| <= (atol + rtol) max|ref| when within
    for x in corr:
        assert x["meets"] is True and x["ratio"] == max(
            y["tol_ratio"] for y in raw if f"{y['kernel']} {y['dtype']}" == x["figure"]
        )

    # Throughput: a fused row per op, its time distribution ordered, the ratio the one measured.
    thr = rec["raw"]["throughput"]
    fused = [x for x in thr if x["provider"] == "triton"]
    assert {x["op"] for x in fused} >= {"styled_epilogue"}
    for x in fused:
        eager = next(
            y for y in thr if y["provider"] == "eager" and (y["op"], y["pass"]) == (x["op"], x["pass"])
        )
        assert x["p20_ms"] <= x["median_ms"] <= x["p80_ms"] and x["pct_of_copy"] > 0
        assert x["speedup_vs_eager"] == pytest.approx(eager["median_ms"] / x["median_ms"])

    # Training: StyleGAN reference and fused (the interpreter), DCGAN eager; the fused row's ratio.
    train = {(x["family"], x["mode"]): x for x in rec["raw"]["training"]}
    assert set(train) == {("stylegan", "reference"), ("stylegan", "fused"), ("dcgan", "eager")}
    for x in train.values():
        assert "error" not in x, x
        assert x["img_per_s"] > 0 and x["sec_per_kimg"] == pytest.approx(1000 / x["img_per_s"])
    ref, fus = train[("stylegan", "reference")], train[("stylegan", "fused")]
    assert fus["speedup_vs_baseline"] == pytest.approx(ref["mean_s"] / fus["mean_s"])

    # Evaluation: gandist fid (alone in the tiny run) on the stand-in weights printed a finite FID.
    fid = {x["tool"]: x for x in rec["raw"]["fid"]}
    assert set(fid) == {"gandist"} and fid["gandist"]["exit"] == 0 and math.isfinite(fid["gandist"]["fid"])
    assert fid["gandist"]["weights"] == "stand-in" and fid["gandist"]["wall_s"] > 0

    md = (out / "summary.md").read_text()
    assert "| step | figure | value | ratio | goal | meets |" in md
    assert all(f"| {s} |" in md for s in STEPS)


@pytest.mark.slow
def test_a_step_over_its_budget_is_cut_and_recorded(tmp_path):
    """A step that cannot finish in its budget is killed with what it started, recorded as cut, and the
    summary is still written (the FID step alone needs far more than 2 s: it builds the stand-in weights)."""
    r = _run(tmp_path, "--steps", "fid", "--step-budget", "fid=2", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rec = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert rec["steps"]["fid"]["status"] == "cut" and rec["steps"]["fid"]["used_s"] < 10
    assert "over its 2 s budget" in rec["steps"]["fid"]["reason"]
    assert "| fid | cut |" in (tmp_path / "out" / "summary.md").read_text()


def test_bad_arguments_get_one_line(capsys):
    from gpu_check import parse_args

    for argv, message in (
        (["--steps", "env,bogus"], "--steps: unknown step 'bogus'; choose from env,correctness"),
        (["--step-budget", "fid"], "--step-budget 'fid': write NAME=SECONDS"),
        (["--tiny"], "--tiny shrinks the dry run; add --dry-run"),
    ):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tolerance_ratio_is_assert_close_as_a_number(dtype):
    """tolerance_ratio(got, ref) <= 1 exactly where assert_close passes: off by 0.9 and 1.1 of the bound."""
    ref = torch.tensor([4.0, -2.0, 0.5, 1.0], dtype=torch.float64)
    tol = TOL[dtype]
    allowed = tol["atol"] * 4.0 + tol["rtol"] * ref.abs()
    for f, passes in ((0.9, True), (1.1, False)):
        got = ref.clone()
        got[2] += f * allowed[2]
        rel, ratio = tolerance_ratio(got, ref, dtype)
        assert ratio == pytest.approx(f) and rel == pytest.approx(f * allowed[2].item() / 4.0)
        if passes:
            assert_close(got, ref, dtype)
        else:
            with pytest.raises(AssertionError):
                assert_close(got, ref, dtype)
    assert tolerance_ratio(torch.tensor([float("nan")]), torch.tensor([1.0]), dtype)[1] == math.inf


def test_summary_compares_each_figure_with_its_goal():
    """The goals of benchmarks/README.md on hand-made rows: 80% of copy from 64^2, faster than compile
    from 32^2, styled_epilogue 3x eager, the tolerance table, the fused epilogue over the reference."""
    from gpu_check_summary import summarize

    def kern(op, h, pct, x_eager, x_compile):
        return {"op": op, "pass": "fwd", "N": 2, "C": 4, "H": h, "dtype": "bfloat16", "provider": "triton",
                "GBps": pct, "copy_GBps": 100.0, "pct_of_copy": pct, "median_ms": 1.0, "p20_ms": 0.9,
                "p80_ms": 1.1, "speedup_vs_eager": x_eager, "speedup_vs_compile": x_compile}  # fmt: skip

    raw = {
        "throughput": [
            kern("adain", 64, 79.0, 2.0, 1.5),
            kern("adain", 128, 81.0, 2.0, 1.5),
            kern("adain", 32, 10.0, 2.0, 0.9),
            kern("adain", 16, 10.0, 0.5, 0.5),
            kern("styled_epilogue", 256, 90.0, 2.9, 1.5),
        ],  # fmt: skip
        "correctness": [
            {"kernel": "adain", "dtype": "float32", "order": o, "res": 4, "rel_err": e, "tol_ratio": t}
            for o, e, t in (("fwd", 1e-7, 0.1), ("bwd", 2e-7, 1.2), ("double", 1e-7, 0.3))
        ],  # fmt: skip
        "training": [
            {
                "family": "stylegan",
                "resolution": 256,
                "batch": 32,
                "mode": m,
                "precision": "bf16",
                "baseline": "reference",
                "img_per_s": v,
                "sec_per_kimg": 1000 / v,
                "p20_s": 0.1,
                "p80_s": 0.2,
                "peak_mem_gib": 1.0,
                "speedup_vs_baseline": v / 100,
                "mfu_measured": None,
            }
            for m, v in (("reference", 100.0), ("fused", 120.0))
        ],  # fmt: skip
    }
    raw["fid"] = [{"tool": t, "exit": 0, "n": 6, "res": 32, "weights": "stand-in", "wall_s": w, "fid": f}
                  for t, w, f in (("gandist", 10.0, 5.000001), ("torch-fidelity", 20.0, 5.0))]  # fmt: skip
    rows = {r["figure"]: r for r in summarize(raw)}
    thr = {r["figure"].split()[2]: r for r in rows.values() if r["step"] == "throughput"}
    assert thr["2x4x64x64"]["meets"] is False  # 79% < 80%
    assert thr["2x4x128x128"]["meets"] is True
    assert thr["2x4x32x32"]["meets"] is False  # slower than compile at 32^2
    assert thr["2x4x16x16"]["meets"] is None  # no goal below 32^2
    assert thr["2x4x256x256"]["meets"] is False  # styled_epilogue 2.9x < 3x eager
    corr = rows["adain float32"]
    assert corr["meets"] is False and corr["ratio"] == 1.2 and corr["value"] == 2e-7
    assert rows["stylegan 256^2 batch 32 reference bf16"]["meets"] is None
    fused = rows["stylegan 256^2 batch 32 fused bf16"]
    assert fused["meets"] is True and fused["ratio"] == pytest.approx(1.2)
    wall = rows["gandist fid wall time, 6 vs 6 images at 32^2, stand-in Inception weights"]
    assert wall["ratio"] == 0.5 and wall["meets"] is True
    value = rows["FID value, 6 vs 6 images at 32^2, stand-in Inception weights"]
    assert value["ratio"] == pytest.approx(2e-7) and value["meets"] is True  # within 1e-6 relative
