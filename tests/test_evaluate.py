"""Evaluation pipeline: extractors, offline behaviour, CLI, and distributed == single-process."""

import dataclasses
import json
import os
import socket
from unittest import mock

import pytest
import torch
import torch.multiprocessing as mp

from gandist.cli import main
from gandist.config import registered
from gandist.errors import UserError
from gandist.metrics.extractors import INCEPTION_FILE, InceptionExtractor, find_inception_weights

TINY_RING = [
    "--set",
    "train.steps=30",
    "--set",
    "model.g_width=16",
    "--set",
    "model.d_width=16",
    "--no-progress",
]


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ring")
    assert main(["train", "ring_wgangp", "--out", str(out), *TINY_RING]) == 0
    return out


def test_missing_inception_weights_is_a_clear_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GANDIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANDIST_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError) as info:
        find_inception_weights()
    msg = str(info.value)
    assert (
        INCEPTION_FILE in msg and str(tmp_path / "cache" / INCEPTION_FILE) in msg and "never downloads" in msg
    )
    with pytest.raises(UserError, match="not found"):
        find_inception_weights(tmp_path / "nope.pth")


def _random_inception_file(path):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
         mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):  # fmt: skip
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    torch.save(net.state_dict(), path)
    return net


@pytest.mark.slow
def test_inception_loading_path_with_generated_weights(tmp_path):
    net = _random_inception_file(tmp_path / INCEPTION_FILE)
    ex = InceptionExtractor(tmp_path / INCEPTION_FILE)
    x = torch.rand(2, 1, 20, 20) * 2 - 1  # greyscale in [-1, 1], small: resized to 299 inside
    feats, probs = ex(x)
    assert feats.shape == (2, 2048) and probs.shape == (2, 1008)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, dtype=torch.float64))
    u8 = ((x.expand(-1, 3, -1, -1) + 1) * 127.5).round().to(torch.uint8)
    ref, _ = net(u8)
    torch.testing.assert_close(feats, ref.double())
    assert ex.describe()["resize"] == "tf1-bilinear-299"


def test_corrupt_inception_file(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"not a weights file")
    with pytest.raises(UserError, match=r"is a text file of 18 bytes starting 'not a weights file', not the expected "
                       "PyTorch state dict"):  # fmt: skip
        InceptionExtractor(tmp_path / "w.pth")


@pytest.mark.slow
def test_digits_classifier_is_accurate_and_real_digits_score_high(tmp_path, monkeypatch):
    monkeypatch.setenv("GANDIST_CACHE", str(tmp_path))
    from gandist.data.digits import load_digits_tensor
    from gandist.metrics import inception_score
    from gandist.metrics.extractors import DigitsExtractor

    ex = DigitsExtractor()
    assert ex.accuracy >= 0.95
    assert (tmp_path / "digits_classifier_v1.safetensors").is_file()
    again = DigitsExtractor()  # from the cache
    x, _ = load_digits_tensor(32)
    f1, p1 = ex(x[:50])
    f2, p2 = again(x[:50])
    assert torch.equal(f1, f2)
    assert inception_score(ex(x)[1], splits=10)[0] > 9.0  # 10 classes, confidently and evenly predicted


def test_eval_cli_points(ring_run, capsys):
    assert main(["eval", str(ring_run), "--metrics", "modes,fid,kid,pr,parzen", "--n", "600"]) == 0
    res = json.loads((ring_run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in (
        "modes",
        "high_quality",
        "reverse_kl",
        "fid",
        "kid",
        "precision",
        "recall",
        "parzen_ll",
        "extractor",
        "resize",
        "n_fake",
        "n_real",
        "fid_reference",
    ):
        assert key in res, key
    assert res["extractor"] == "points" and res["n_fake"] == 600
    assert main(["eval", str(ring_run), "--metrics", "nn"]) == 2
    assert main(["eval", str(ring_run), "--metrics", "bogus"]) == 2
    assert "valid: fid" in capsys.readouterr().err


def test_reference_stats_are_cached_and_reused(ring_run, tmp_path):
    ref = tmp_path / "ring_ref.npz"
    results = []
    for name in ("first", "second"):  # the first run writes the statistics, the second reads them
        out = tmp_path / f"{name}.jsonl"
        assert (
            main(
                [
                    "eval",
                    str(ring_run),
                    "--metrics",
                    "fid",
                    "--n",
                    "500",
                    "--ref-stats",
                    str(ref),
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        results.append(json.loads(out.read_text()))
        assert ref.is_file()
    assert results[0]["fid"] == pytest.approx(results[1]["fid"], rel=1e-12)
    assert results[1]["fid_reference"]["stats_file"] == str(ref)
    assert results[1]["fid_reference"]["extractor"] == "points"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MP_TIMEOUT = 240  # seconds for a multi-process test; a hang fails with the workers' stderr instead


def _worker(rank, world, port, run_dir, out, log_dir):
    # Each worker's stderr (Python and C++: gloo writes to fd 2) goes to its own file, shown on failure.
    log = open(os.path.join(log_dir, f"rank{rank}.stderr"), "w")
    os.dup2(log.fileno(), 2)
    import sys

    sys.stderr = log
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from gandist.generate import load_generator
    from gandist.metrics.evaluate import evaluate
    from gandist.strategies import DistEnv, build_strategy

    with build_strategy("auto", "cpu", DistEnv(rank, world, rank)) as strategy:  # destroys the group on exit
        gen = load_generator(run_dir)
        res = evaluate(gen.G, gen.cfg, gen.kind, ["modes", "fid", "kid", "pr", "parzen"], n=1100, seed=3,
                       strategy=strategy)  # fmt: skip
        if strategy.is_main:
            with open(out, "w") as f:
                json.dump(res, f)


def _stderr_of(log_dir) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.read_text()[-3000:]}" for p in sorted(log_dir.glob("*.stderr")))


@pytest.mark.distributed
def test_two_rank_gloo_evaluation_equals_single_process(ring_run, tmp_path):
    import time

    from gandist.generate import load_generator
    from gandist.metrics.evaluate import evaluate

    out = tmp_path / "dist.json"
    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(ring_run), str(out), str(tmp_path)), nprocs=2,
                             join=False, start_method="spawn")  # fmt: skip
    deadline = time.monotonic() + MP_TIMEOUT
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"2-rank evaluation did not finish in {MP_TIMEOUT} s\n{_stderr_of(tmp_path)}")
    except mp.ProcessRaisedException as exc:
        pytest.fail(f"a rank failed: {exc}\n{_stderr_of(tmp_path)}")
    except mp.ProcessExitedException as exc:
        pytest.fail(f"a rank died: {exc}\n{_stderr_of(tmp_path)}")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    dist_res = json.loads(out.read_text())
    gen = load_generator(ring_run)
    single = evaluate(gen.G, gen.cfg, gen.kind, ["modes", "fid", "kid", "pr", "parzen"], n=1100, seed=3)
    for key in ("fid", "kid", "precision", "recall", "modes", "high_quality", "reverse_kl", "parzen_ll"):
        assert dist_res[key] == pytest.approx(single[key], rel=1e-12, abs=1e-12), key
    assert dist_res["world_size"] == 2


def test_periodic_evaluation_during_training(tmp_path):
    args = [*TINY_RING, "--set", "metrics.every=10", "--set", "metrics.n=300"]
    assert main(["train", "ring_wgangp", "--out", str(tmp_path), *args]) == 0
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30]
    assert all({"modes", "fid", "extractor"} <= set(r) for r in records)
    assert (tmp_path / "metrics.png").is_file()


@pytest.mark.distributed
def test_torchrun_dash_m_gandist_eval(ring_run, tmp_path):
    """`torchrun -m gandist eval` with 2 CPU ranks writes one result, equal to the single-process one."""
    import subprocess
    import sys

    out = tmp_path / "torchrun.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gandist", "eval",
           str(ring_run), "--metrics", "modes,fid,kid", "--num-samples", "700", "--seed", "5", "--out", str(out)]  # fmt: skip
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=MP_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"torchrun eval did not finish in {MP_TIMEOUT} s; stderr:\n{err[-6000:]}")
    assert r.returncode == 0, f"torchrun eval exited {r.returncode}; stderr:\n{r.stderr[-6000:]}"
    assert "terminate called" not in r.stderr, r.stderr[-6000:]  # no rank left with a live process group
    lines = out.read_text().splitlines()
    assert len(lines) == 1  # rank 0 alone reports
    single = tmp_path / "single.jsonl"
    assert (
        main(
            [
                "eval",
                str(ring_run),
                "--metrics",
                "modes,fid,kid",
                "--n",
                "700",
                "--seed",
                "5",
                "--out",
                str(single),
            ]
        )
        == 0
    )
    a, b = json.loads(lines[0]), json.loads(single.read_text())
    for key in ("fid", "kid", "modes", "high_quality", "reverse_kl"):
        assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-12), key


BUILT_IN = [n for n, c in registered("data").items() if "path" not in {f.name for f in dataclasses.fields(c)}]


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_built_in_dataset_scored_as_the_generated_side_against_itself_has_fid_zero(name):
    # The data as the generated side (a reference row: "what do the metrics say of the data itself"): FID of a
    # sample against the same sample is 0 (the Frechet distance of a Gaussian to itself), and the result names
    # the dataset, whose built-in sources have no path (2-D ones no resolution either).
    from gandist.config import load_config
    from gandist.data import build_dataset
    from gandist.metrics.evaluate import evaluate_sources
    from gandist.metrics.extractors import ModuleExtractor
    from gandist.metrics.sources import DatasetSource

    cfg = load_config("ring_gan" if registered("data")[name].kind == "points" else "quickstart",
                      [f"data.name={name}"])  # fmt: skip
    data = build_dataset(cfg.data, 0)
    features = torch.nn.Flatten() if data.kind == "points" else torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2),
                                                                                   torch.nn.Flatten())  # fmt: skip
    res = evaluate_sources(DatasetSource(data, 300), DatasetSource(build_dataset(cfg.data, 0), 300), ["fid"],
                           ModuleExtractor(features))  # fmt: skip
    assert res["fid"] == pytest.approx(0.0, abs=1e-9)
    assert (res["dataset"], res["data_path"], res["n_fake"]) == (name, "", 300)
    assert res["resolution"] == getattr(cfg.data, "resolution", None)
