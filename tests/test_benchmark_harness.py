"""The benchmark harnesses run in smoke mode on CPU, so they cannot rot between GPU sessions."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_kernel_benchmark_smoke(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks" / "kernels"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_kernels import main

    rows = main(
        [
            "--smoke",
            "--ops",
            "adain",
            "gradient_penalty",
            "--passes",
            "fwd",
            "fwd+bwd",
            "--out",
            str(tmp_path),
        ]
    )
    assert len(rows) == 2 * 2 * 2 * 2  # ops x resolutions x passes x providers (triton, eager)
    files = list(tmp_path.glob("kernels-smoke-*.csv"))
    assert len(files) == 1 and (tmp_path / files[0].with_suffix(".json").name).is_file()
    with open(files[0]) as f:
        table = list(csv.DictReader(f))
    for col in (
        "median_ms",
        "p20_ms",
        "p80_ms",
        "GBps",
        "copy_GBps",
        "pct_of_copy",
        "speedup_vs_eager",
        "device",
        "torch",
        "triton",
        "commit",
        "date",
    ):
        assert col in table[0]
    assert all(float(r["p20_ms"]) <= float(r["median_ms"]) <= float(r["p80_ms"]) for r in table)
    assert all(float(r["GBps"]) > 0 for r in table)


@pytest.mark.slow
def test_pytest_benchmark_file_runs(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "benchmarks" / "kernels"),
         "-k", "adain", "--benchmark-disable", "--rootdir", str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


@pytest.mark.slow
def test_loader_benchmark_smoke(tmp_path):
    pytest.importorskip("nvidia.dali")
    sys.path.insert(0, str(ROOT / "benchmarks" / "data"))
    from bench_loaders import main

    rows = main(["--smoke", "--out", str(tmp_path)])
    assert rows[0]["torch_img_per_s"]["median"] > 0 and rows[0]["dali_img_per_s"]["median"] > 0
    assert len(list(tmp_path.glob("loaders-smoke-*.json"))) == 1


@pytest.mark.slow
def test_training_benchmark_smoke(tmp_path):
    """PGGAN training steps per resolution, eager and compiled (the penalty through the eager module)."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "train"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_train import main

    rows = main(["--smoke", "--out", str(tmp_path)])
    assert [(r["resolution"], r["mode"]) for r in rows] == [(8, "eager"), (8, "compile"), (16, "eager")]
    assert all("error" not in r for r in rows), rows
    for r in rows:
        assert r["p20_s"] <= r["median_s"] <= r["p80_s"] and r["img_per_s"] > 0 and r["peak_mem_gib"] > 0
        assert r["sec_per_kimg"] == pytest.approx(1000 / r["img_per_s"])
    assert rows[1]["speedup_vs_eager"] == pytest.approx(rows[0]["mean_s"] / rows[1]["mean_s"])
    assert len(list(tmp_path.glob("train-pggan-smoke-*.md"))) == 1


@pytest.mark.slow
def test_stylegan_training_benchmark_smoke(tmp_path):
    """StyleGAN training steps with the reference epilogue and the fused one (Triton interpreter on CPU);
    model FLOPs counted once per resolution, in the reference row, over a whole R1 interval; the profile of
    that interval split by phase, convolutions and epilogue."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "train"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_train import main

    rows = main(["--smoke", "--family", "stylegan", "--profile", "--out", str(tmp_path)])
    assert [(r["resolution"], r["mode"]) for r in rows] == [(8, "reference"), (8, "fused"), (16, "reference")]
    assert all("error" not in r for r in rows), rows
    for r in rows:
        assert r["p20_s"] <= r["median_s"] <= r["p80_s"] and r["img_per_s"] > 0 and r["peak_mem_gib"] > 0
        assert r["sec_per_kimg"] == pytest.approx(1000 / r["img_per_s"]) and r["mfu"] is None  # no CPU peak
    assert rows[0]["flops_per_img"] > 0 and rows[1]["flops_per_img"] == rows[0]["flops_per_img"]
    assert rows[2]["flops_per_img"] > rows[0]["flops_per_img"]  # 16 px costs more than 8 px
    assert rows[1]["speedup_vs_eager"] == pytest.approx(rows[0]["mean_s"] / rows[1]["mean_s"])
    for r in rows:
        assert r["Dmain_ms"] > 0 and r["Gmain_ms"] > 0 and r["conv_ms"] > 0 and r["epilogue_fwd_ms"] > 0
        assert r["Dreg_ms"] > 0  # the lazy R1 phase ran once in the 16 profiled steps
    assert (
        rows[0]["fused_epilogue_ms"] == 0 < rows[1]["fused_epilogue_ms"]
    )  # the fused op runs in fused rows only
    (md,) = tmp_path.glob("train-stylegan-smoke-*.md")
    assert "Time per step by part" in md.read_text()


@pytest.mark.distributed
def test_scaling_benchmark_smoke(tmp_path):
    """bench_scaling.py: 1 and 2 gloo ranks of a tiny DCGAN; a row per rank count with throughput, the
    all-reduce share of a step and the parameter counts, written with provenance."""
    import json
    import os
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train" / "bench_scaling.py"
    r = subprocess.run([sys.executable, str(script), "--smoke", "--ranks", "1,2", "--families", "dcgan", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (result,) = tmp_path.glob("scaling-cpu-*.json")
    rows = json.loads(result.read_text())["rows"]
    assert [row["ranks"] for row in rows] == [1, 2]
    for row in rows:
        assert row["global_batch"] == 8 * row["ranks"] and row["img_per_s"] > 0 and 0 <= row["comm_share"] < 1
        assert row["params"]["G"] > 0 and row["params"]["D"] > 0
    assert rows[0]["efficiency"] == 1.0


@pytest.mark.slow
@pytest.mark.distributed
def test_eval_scaling_benchmark_smoke(tmp_path):
    """bench_eval_scaling.py: `gandist fid` on 8 vs 8 images with 1 rank and with 2 torchrun ranks; a row
    per rank count, the ranks' FID equal to one process's up to the float64 merge order of the statistics."""
    import json
    import os

    from gandist.metrics.standin import make_standin_inception

    weights = make_standin_inception(tmp_path / "standin.pth", calibration=8)
    script = ROOT / "benchmarks" / "metrics" / "bench_eval_scaling.py"
    r = subprocess.run([sys.executable, str(script), "--smoke", "--ranks", "1,2", "--weights", str(weights),
                        "--work", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ))  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (result,) = (tmp_path / "out").glob("eval-scaling-smoke-*.json")
    rec = json.loads(result.read_text())
    rows = rec["rows"]
    assert [(x["ranks"], x["world_size"], x["impl"]) for x in rows] == [(1, 1, "exact"), (2, 2, "exact")]
    assert rows[0]["speedup"] == 1.0 and all(x["img_per_s"] > 0 and x["gandist_s"] > 0 for x in rows)
    # The same per-sample features (bit for bit); the statistics merge in another float64 order. With 8
    # samples the covariances have rank 7 of 2048 and the square roots of their rounding-level eigenvalues
    # carry that order into the FID (measured 3.9e-9 relative): bounded by the FID accuracy, 1e-6.
    assert rows[1]["fid_rel_diff_vs_first"] < 1e-6, rows[1]
    assert {"device", "torch", "commit", "date", "command"} <= set(rec["provenance"])
