"""`gandist fid` and `gandist eval` on image folders against torch-fidelity, end to end, with a stand-in
Inception weights file both load; bad input gets one clear line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gandist.cli import main

# Tolerances, with the reason each is what it is (never widened to go green).
TOL = {
    "fid_vs_torch_fidelity": 1e-6,  # the target; torch-fidelity's own mean is float32 (~1e-7)
    "kid_vs_torch_fidelity": 2e-5,  # torch-fidelity evaluates the kernel in float32, gandist in float64
    "is_vs_torch_fidelity": 1e-9,  # both float64 from the same float32 logits, same splits
    "across_batch": 1e-12,  # the same features bit for bit; only the statistics merge in another order
    # fused Inception (BN folded into the convs) is fp32 in another order: no further from the float64
    # network than torch-fidelity's fp32 module is, within this factor (measured 1.4 at 64 px)
    "fused_vs_fp64_error_ratio": 2.0,
}
N, SIZE = 12, 24  # images per folder (>= 10 IS splits), pixels: Inception resizes them to 299 anyway


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from gandist.metrics.standin import make_standin_inception

    return make_standin_inception(tmp_path_factory.mktemp("w") / "standin.pth", calibration=8)


def _folder(path, seed, n=N, size=SIZE, darker=False):
    from gandist.metrics.standin import calibration_images

    path.mkdir(parents=True, exist_ok=True)
    x = calibration_images(n, size, seed)
    if darker:
        x = (x.float() * 0.8 + 20).to(torch.uint8)
    for i, im in enumerate(x):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(path / f"{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    return _folder(root / "fake", 1, darker=True), _folder(root / "real", 2)


@pytest.fixture
def two_threads():
    """torch on 2 threads for the whole test, whatever the process had (a pytest-xdist worker has 1): on 1
    thread torch-fidelity's module takes PyTorch's gemm for its 1x1 convolutions below a batch of 16, and its
    FID moves by 1.3e-6 relative, past the equality this test asks of the extractors run on 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_fid_kid_is_equal_torch_fidelity_and_across_batch_sizes(weights, folders, tmp_path, two_threads):
    import torch_fidelity

    fake, real = folders
    ref = torch_fidelity.calculate_metrics(
        input1=str(fake), input2=str(real), cuda=False, isc=True, fid=True, kid=True, kid_subset_size=N,
        feature_extractor_weights_path=str(weights), cache=False, verbose=False, save_cpu_ram=True,
    )  # fmt: skip
    ev, fd, again = tmp_path / "eval.jsonl", tmp_path / "fid.jsonl", tmp_path / "again.jsonl"
    common = ["--inception", str(weights), "--extractor-impl", "reference", "--workers", "0"]
    # eval: a folder of fakes against a folder of reals; caches the reals' statistics
    assert main(["eval", str(fake), "--data", str(real), "--metrics", "fid,kid,is", "--batch", "5",
                 "--out", str(ev), *common]) == 0  # fmt: skip
    # fid: another extraction batch; B's statistics come from the shared cache
    stats = tmp_path / "fake.npz"
    assert main(["fid", str(fake), str(real), "--batch", "12", "--save-stats", str(stats), "--out", str(fd),
                 *common]) == 0  # fmt: skip
    e, f = json.loads(ev.read_text()), json.loads(fd.read_text())
    tf_fid = ref["frechet_inception_distance"]
    assert e["fid"] == pytest.approx(tf_fid, rel=TOL["fid_vs_torch_fidelity"])
    assert f["fid"] == pytest.approx(tf_fid, rel=TOL["fid_vs_torch_fidelity"])
    assert e["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=TOL["kid_vs_torch_fidelity"])
    assert e["is"] == pytest.approx(ref["inception_score_mean"], rel=TOL["is_vs_torch_fidelity"])
    assert e["is_std"] == pytest.approx(ref["inception_score_std"], rel=1e-6)
    assert e["batch"] == 5 and f["batch"] == 12 and e["impl"] == "reference"
    assert "gandist-cache" in f["b"]["stats_file"]
    # A's saved statistics and B's cached ones: the same FID, nothing extracted
    assert main(["fid", str(stats), str(real), "--out", str(again), *common]) == 0
    assert json.loads(again.read_text())["fid"] == f["fid"]
    # The default extractor (exact: every convolution in oneDNN, in its blocked layout on the CPU) gives
    # the module's features wherever PyTorch runs the module itself with oneDNN (here: 2 threads), so
    # with the same settings the same FID to the last bit; and the default batch is Inception's own.
    runs = {}
    for impl in ("auto", "reference"):
        out = tmp_path / f"{impl}.jsonl"
        assert main(["fid", str(fake), str(real), "--no-cache", "--out", str(out), "--inception", str(weights),
                     "--workers", "0", "--extractor-impl", impl]) == 0  # fmt: skip
        runs[impl] = json.loads(out.read_text())
    assert runs["auto"]["impl"] == "exact" and runs["auto"]["batch"] == runs["reference"]["batch"] == 8
    assert runs["auto"]["fid"] == runs["reference"]["fid"]
    assert runs["auto"]["fid"] == pytest.approx(tf_fid, rel=TOL["fid_vs_torch_fidelity"])


@pytest.mark.slow
def test_inception_implementations_against_torch_fidelity_and_float64(weights):
    import copy

    from gandist.metrics.extractors import InceptionExtractor, fold_batch_norm
    from gandist.metrics.standin import calibration_images

    x = calibration_images(3, 21, seed=5)  # odd size
    reference = InceptionExtractor(weights, impl="reference")
    exact = InceptionExtractor(weights)  # auto -> exact
    fused = InceptionExtractor(weights, impl="fused")
    assert exact.impl == "exact" and fused.impl == "fused"
    # exact: torch-fidelity's module with every convolution in oneDNN (in its blocked layout where the
    # CPU build has it), bit for bit equal to the module wherever PyTorch itself runs it with oneDNN:
    # with 2 threads always (on 1 thread below a batch of 16 its 1x1 convolutions take PyTorch's gemm).
    # exact's own values do not depend on the thread count.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ref_f, ref_logits = reference.extract(x)
        e_f, e_logits = exact.extract(x)
        torch.set_num_threads(1)
        e1_f, e1_logits = exact.extract(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(e_f, ref_f) and torch.equal(e_logits, ref_logits), exact.layout
    assert torch.equal(e1_f, e_f) and torch.equal(e1_logits, e_logits)
    # fused (BN folded into the convs) sums in another order: no further from the float64 network
    # (the independent reference) than torch-fidelity's fp32 module is, within the stated factor
    net64 = copy.deepcopy(reference.net).double()
    net64.feature_extractor_internal_dtype = torch.float64
    with torch.no_grad():
        truth = net64(x)[0].double()
    f = fused.extract(x)[0]
    assert f.dtype == torch.float32 and f.shape == (3, 2048)

    def err(a):
        return ((a.double() - truth).abs().max() / truth.abs().max()).item()

    assert err(f) <= TOL["fused_vs_fp64_error_ratio"] * err(ref_f), (err(f), err(ref_f))
    # On the CPU the blocked layout only drops the reorders around each oneDNN convolution: the folded
    # module gives the same values in PyTorch's plain layout, bit for bit, where PyTorch runs it with oneDNN
    # (2 threads, as above; a pytest-xdist worker has 1).
    if fused.layout == "onednn-blocked":
        try:
            torch.set_num_threads(2)
            with torch.no_grad():
                folded = fold_batch_norm(copy.deepcopy(reference.net))(x)[0]
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(folded, f)
    # Sample i's features do not depend on the batch it came in (every implementation, bit for bit on
    # CPU), and streamed statistics do not depend on the partition beyond float64 rounding.
    for ex, whole in ((exact, e_f), (fused, f)):
        parts = torch.cat([ex.extract(x[:1])[0], ex.extract(x[1:])[0]])
        assert torch.equal(parts, whole)
    # the CPU extraction batch when none is asked for: Inception's own (8), the pipeline's otherwise
    from gandist.metrics.evaluate import CPU_BATCH, auto_batch
    from gandist.metrics.extractors import PointsExtractor

    assert auto_batch("cpu", 0, exact) == 8 and auto_batch("cpu", 0, PointsExtractor()) == CPU_BATCH == 32
    assert auto_batch("cpu", 5, exact) == 5
    from gandist.metrics.stats import RunningStats

    feats = torch.randn(23, 7, dtype=torch.float64) * 3 + 100  # |mean|^2 >> variance, like pool features
    a, b = RunningStats(7), RunningStats(7)
    a.update(feats)
    for piece in feats.split(5):
        b.update(piece)
    mu, cov = feats.mean(0), torch.cov(feats.T)
    for s in (a, b):
        torch.testing.assert_close(s.mean, mu, rtol=TOL["across_batch"], atol=0)
        torch.testing.assert_close(s.covariance(), cov, rtol=TOL["across_batch"], atol=TOL["across_batch"])


def _one_error_line(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_bad_input_gets_one_clear_line(weights, folders, tmp_path, capsys):
    fake, real = folders
    w = ["--inception", str(weights)]
    (tmp_path / "empty").mkdir()
    assert "holds no images" in _one_error_line(capsys, ["fid", str(tmp_path / "empty"), str(real), *w])
    mixed = _folder(tmp_path / "mixed", 3, n=3)
    _folder(tmp_path / "mixed_small", 4, n=1, size=SIZE - 4)
    (tmp_path / "mixed_small" / "000.png").rename(mixed / "999.png")
    line = _one_error_line(capsys, ["fid", str(mixed), str(real), "--no-cache", *w])
    assert "differ in size" in line and f"{SIZE}x{SIZE}" in line
    np.savez(tmp_path / "narrow.npz", mu=np.zeros(64), sigma=np.eye(64))
    line = _one_error_line(capsys, ["fid", str(tmp_path / "narrow.npz"), str(real), *w])
    assert "64-d statistics" in line and "2048-d" in line
    few = _folder(tmp_path / "few", 5, n=4)
    line = _one_error_line(capsys, ["eval", str(few), "--data", str(real), "--metrics", "is,kid", *w])
    assert "at least 10" in line
    assert "does not exist" in _one_error_line(capsys, ["fid", str(tmp_path / "nope"), str(real), *w])


def test_fid_of_two_statistics_files(tmp_path, capsys):
    from gandist.metrics.fid import frechet_distance, save_stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) + 0.3
    save_stats(tmp_path / "a.npz", a.mean(0), np.cov(a, rowvar=False), n=50)
    np.savez(tmp_path / "b.npz", mu=b.mean(0), sigma=np.cov(b, rowvar=False))  # pytorch-fid's layout
    assert (
        main(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--out", str(tmp_path / "r.jsonl")])
        == 0
    )
    got = json.loads((tmp_path / "r.jsonl").read_text())["fid"]
    assert got == frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    np.savez(tmp_path / "c.npz", mu=np.zeros(5), sigma=np.eye(5))
    assert "5-d statistics" in _one_error_line(
        capsys, ["fid", str(tmp_path / "a.npz"), str(tmp_path / "c.npz")]
    )


@pytest.mark.slow
def test_benchmark_smoke_mode(weights, tmp_path):
    """The comparison harness on 6 vs 6 images (gandist alone: each peer's own FID tail costs 10-30 s of
    CPU at 2048-d; the full run, `python benchmarks/metrics/bench_fid.py`, times all three)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "metrics" / "bench_fid.py"), "--smoke", "--tools", "gandist",
           "--weights", str(weights), "--work", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (res,) = (tmp_path / "out").glob("fid-smoke-*.json")
    rec = json.loads(res.read_text())
    run = rec["runs"][0]
    assert (
        run["exit"] == 0 and np.isfinite(run["fid"]) and run["wall_s"] > 0 and run["peak_tree_pss_gib"] > 0.1
    )
    assert {"device", "torch", "commit", "date", "command"} <= set(rec["provenance"])
    assert (tmp_path / "out" / res.name.replace(".json", ".md")).is_file()


@pytest.mark.slow  # the stand-in weights: ~8 s on a loaded 2-core machine
def test_a_statistics_file_of_another_width_is_refused_before_any_extraction(weights, folders, tmp_path, capsys,
                                                                              monkeypatch):  # fmt: skip
    """A folder against a .npz of 3-d statistics: one line naming both widths, before the folder's images are
    extracted (they were, for minutes, before the width was read)."""
    import gandist.metrics.evaluate as ev

    bad = tmp_path / "narrow.npz"
    np.savez(bad, mu=np.zeros(3), sigma=np.eye(3))
    monkeypatch.setattr(ev, "extract_side", lambda *a, **k: pytest.fail("a side was extracted before the check"))
    for a, b in ((folders[0], bad), (bad, folders[0])):
        assert main(["fid", str(a), str(b), "--inception", str(weights), "--workers", "0"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gandist fid: error: "), err
        assert "holds 3-d statistics" in err[0] and "2048-d are needed here" in err[0], err
