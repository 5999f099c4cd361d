"""The command line end to end, on tiny runs."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gandist.cli import main

TINY = [
    "--set",
    "model.z_dim=8",
    "--set",
    "model.g_width=8",
    "--set",
    "model.d_width=8",
    "--set",
    "data.resolution=8",
    "--set",
    "data.batch_size=8",
    "--set",
    "train.steps=4",
    "--set",
    "train.ckpt_every=2",
    "--set",
    "train.sample_every=2",
    "--set",
    "train.log_every=2",
    "--set",
    "train.sample_n=4",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "digits_dcgan", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_run_dir(trained):
    assert (trained / "config.yaml").is_file()
    records = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "img_per_s", "kimg"):
        assert key in records[-1]


def test_generate_png_and_npz(trained, tmp_path):
    assert main(["generate", str(trained), "--n", "9", "--seed", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 32
    assert main(["generate", str(trained), "--n", "5", "--seed", "3", "--out", str(tmp_path / "s.npz")]) == 0
    a = np.load(tmp_path / "s.npz")["samples"]
    assert a.shape == (5, 1, 8, 8)
    main(["generate", str(trained), "--n", "5", "--seed", "3", "--out", str(tmp_path / "t.npz")])
    assert np.array_equal(a, np.load(tmp_path / "t.npz")["samples"])  # seeded


def test_interpolate_and_arithmetic(trained, tmp_path):
    assert (
        main(["interpolate", str(trained), "--seeds", "1,2,3", "--steps", "5", "--out", str(tmp_path / "i")])
        == 0
    )
    assert (tmp_path / "i_lerp.png").is_file() and (tmp_path / "i_slerp.png").is_file()
    assert (
        main(
            [
                "arithmetic",
                str(trained),
                "--u",
                "1-3",
                "--v",
                "4,5",
                "--w",
                "6",
                "--out",
                str(tmp_path / "a.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "a.png").is_file()


def test_resume_auto_continues(trained, tmp_path):
    import shutil

    run = tmp_path / "again"
    shutil.copytree(trained, run)
    args = [a if a != "train.steps=4" else "train.steps=6" for a in TINY]
    assert main(["train", "digits_dcgan", "--out", str(run), "--resume", "auto", *args]) == 0
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_existing_run_needs_resume_flag(trained, capsys):
    assert main(["train", "digits_dcgan", "--out", str(trained), *TINY]) == 2
    assert "--resume auto" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--set", "train.stpes=3"], "did you mean 'train.steps'"),
        (["train", "--set", "model.name=gan3000"], "valid: cyclegan, dcgan, mlp, pggan, sgan, stylegan"),
        (["train", "nope.yaml"], "not found"),
        (
            ["train", "--set", "data.name=folder", "--set", "data.path=/no/such/dir"],
            "'/no/such/dir' does not exist",
        ),
        (["generate", "/no/such/ckpt"], "neither a checkpoint"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path / "x")] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_corrupt_checkpoint_refused(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "bad"
    shutil.copytree(trained, run)
    for ck in (run / "checkpoints").iterdir():
        (ck / "models.safetensors").write_bytes(b"\0" * 10)
    assert main(["generate", str(run / "checkpoints" / "000000004"), "--out", str(tmp_path / "x.png")]) == 2
    assert "checksum" in capsys.readouterr().err


def test_points_generate_scatter(tmp_path):
    out = tmp_path / "pts"
    args = ["--set", "train.steps=2", "--set", "model.g_width=8", "--set", "model.d_width=8", "--no-progress"]
    assert main(["train", "ring_wgangp", "--out", str(out), *args]) == 0
    assert main(["generate", str(out), "--n", "50", "--out", str(tmp_path / "p.npz")]) == 0
    assert np.load(tmp_path / "p.npz")["samples"].shape == (50, 2)
    assert main(["generate", str(out), "--n", "50", "--out", str(tmp_path / "p.png")]) == 0


def test_python_dash_m_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "gandist", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "train" in r.stdout


@pytest.mark.parametrize("world", ["1", "2"])
def test_a_rank_of_a_multi_process_run_exits_without_the_interpreter_teardown(world):
    """`python -m gandist` as a rank (WORLD_SIZE > 1) flushes its output and leaves with main's status before
    teardown (where gloo's threads could abort it); one process exits normally, teardown included."""
    program = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('teardown ran', flush=True))\n"
        "sys.argv = ['gandist', 'no-such-command']\n"
        "runpy.run_module('gandist', run_name='__main__')\n"
    )
    env = {**os.environ, "WORLD_SIZE": world}
    r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr  # main's status for a usage error
    assert "invalid choice: 'no-such-command'" in r.stderr  # written out before the exit
    assert ("teardown ran" in r.stdout) == (world == "1"), r.stdout


def _copy(trained, tmp_path, name="copy"):
    import shutil

    shutil.copytree(trained, tmp_path / name)
    return tmp_path / name


def _resign(ck, name, blob: bytes):
    """Replace a checkpoint file and its manifest entry: damage the checksum cannot catch."""
    (ck / name).write_bytes(blob)
    manifest = json.loads((ck / "MANIFEST.json").read_text())
    manifest[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (ck / "MANIFEST.json").write_text(json.dumps(manifest))


def _steps(run):
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def _error_line(err: str) -> str:
    (line,) = [x for x in err.splitlines() if ": error: " in x]
    assert "Traceback" not in err
    return line


def test_resume_drops_a_torn_last_log_line(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    with open(run / "log.jsonl", "ab") as f:
        f.write(b'{"step": 5, "d_loss": 0.6')  # the process was killed mid-write
    args = [a if a != "train.steps=4" else "train.steps=6" for a in TINY]
    assert main(["train", "digits_dcgan", "--out", str(run), "--resume", "auto", *args]) == 0
    assert "dropping a torn last line" in capsys.readouterr().err
    assert _steps(run) == [2, 4, 6]


def test_resume_refuses_a_log_damaged_before_its_last_line(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text(lines[0][:20] + "\n" + "\n".join(lines[1:]) + "\n")
    assert main(["train", "digits_dcgan", "--out", str(run), "--resume", "auto", *TINY]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{run / 'log.jsonl'} line 1 is not a JSON record" in line


def test_resume_auto_with_every_checkpoint_corrupt_says_which_and_why(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    (run / "checkpoints" / names[0] / "MANIFEST.json").unlink()
    (run / "checkpoints" / names[1] / "models.safetensors").write_bytes(b"\0" * 10)
    assert main(["train", "digits_dcgan", "--out", str(run), "--resume", "auto", *TINY]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{names[1]}: models.safetensors does not match its checksum" in line
    assert f"{names[0]}: incomplete" in line
    assert "start over" in line and "add --resume auto" not in line


def test_tampered_optimizer_state_is_a_checkpoint_error_and_readers_never_load_it(trained, tmp_path, capsys):
    import torch

    run = _copy(trained, tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"G": Evil()}, tmp_path / "evil.pt")
    for ck in (run / "checkpoints").iterdir():  # re-signed in the manifest: only the loader can refuse it
        _resign(ck, "optim.pt", (tmp_path / "evil.pt").read_bytes())
    args = [a if a != "train.steps=4" else "train.steps=6" for a in TINY]
    assert main(["train", "digits_dcgan", "--out", str(run), "--resume", "auto", *args]) == 2
    out = capsys.readouterr()
    line = _error_line(out.err)
    assert "optim.pt holds more than tensors" in line and "000000004" in line and "owned" not in out.out
    for argv in (["generate", str(run), "--out", str(tmp_path / "s.png")],
                 ["interpolate", str(run), "--steps", "3", "--out", str(tmp_path / "i")]):  # fmt: skip
        assert main(argv) == 0


def test_generate_refuses_weights_that_do_not_fit_their_config(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    ck = sorted((run / "checkpoints").iterdir())[-1]
    state = json.loads((ck / "state.json").read_text())
    state["config"] = state["config"].replace("g_width: 8", "g_width: 16")
    _resign(ck, "state.json", json.dumps(state).encode())
    assert main(["generate", str(ck), "--out", str(tmp_path / "s.png")]) == 2
    # digits_dcgan keeps no G_ema (DCGAN's paper has none): generate reads G
    assert "G weights do not fit its config" in _error_line(capsys.readouterr().err)


def test_train_lists_the_shipped_configs(capsys):
    from gandist.resources import shipped_configs

    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "DCGAN on scikit-learn's digits" in out
    assert len(shipped_configs()) >= 12  # the README's table
    assert len(out.strip().splitlines()) == 1 + len(shipped_configs())
    assert main(["train", "--help"]) == 0
    assert "ring_wgangp" in capsys.readouterr().out.replace("\n", " ")
