"""A user's mistakes through the command line: each is exit status 2 with exactly one line on stderr (no
traceback), and the user's files are unchanged, checked by checksum. One tiny 2-D run serves every row
that needs a checkpoint."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gandist.cli import main

POINTS = ["name=tinypts", "model.g_width=8", "model.d_width=8", "data.batch_size=8", "train.steps=2",
          "train.log_every=1", "train.sample_every=1000", "train.ckpt_every=1000", "train.sample_n=8",
          "health.enabled=false"]  # fmt: skip


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


TINY_POINTS = _sets(POINTS)  # after the config name ring_gan (a 2-D MLP GAN)


def _sums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"gandist {command}: error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def points_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pts") / "run"
    assert main(["train", "ring_gan", "--out", str(out), "--no-progress", *TINY_POINTS]) == 0
    return out


def make_user_folder(tmp: Path) -> Path:
    """A folder of the user's own that happens to hold files with a run's names."""
    f = tmp / "project"
    f.mkdir()
    (f / "config.yaml").write_text("mine: true\n")
    (f / "summary.json").write_text('{"my": "notes"}\n')
    (f / "log.jsonl").write_text('{"mine": 1}\n')
    return f


@pytest.fixture
def user_folder(tmp_path) -> Path:
    return make_user_folder(tmp_path)


def test_train_refuses_a_folder_it_did_not_make(user_folder, capsys):
    before = _sums(user_folder)
    for extra in ([], ["--resume", "auto"]):
        assert main(["train", "ring_gan", "--out", str(user_folder), *extra, *TINY_POINTS]) == 2
        line = _one_line(capsys, "train")
        assert "holds files gandist did not write (config.yaml, log.jsonl, summary.json)" in line
        assert "--allow-nonempty-out" in line
    assert _sums(user_folder) == before


def test_train_out_naming_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me\n")
    assert main(["train", "ring_gan", "--out", str(f), *TINY_POINTS]) == 2
    assert "is a file, not a folder" in _one_line(capsys, "train")
    assert f.read_text() == "keep me\n"


def test_a_run_folder_is_marked_and_accepted_again(points_run, capsys):
    assert (points_run / ".gandist-run").is_file()
    before = _sums(points_run)
    # the marked folder is not refused as foreign: the next refusal is about its checkpoints
    assert main(["train", "ring_gan", "--out", str(points_run), *TINY_POINTS]) == 2
    assert "already has checkpoints; add --resume auto" in _one_line(capsys, "train")
    assert _sums(points_run) == before


def test_prepare_refuses_a_destination_inside_its_source(tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "photos"
    src.mkdir()
    Image.new("RGB", (9, 9), (10, 20, 30)).save(src / "a.png")
    before = _sums(src)
    for dst in (src / "prepared", src):
        assert main(["prepare", str(src), str(dst), "--resolution", "8", "--no-progress"]) == 2
        assert "is inside the source" in _one_line(capsys, "prepare")
    assert _sums(src) == before


@pytest.mark.parametrize(
    "text,what",
    [("name: a\noptim:\n  lr_g: 0.1\n  lr_d: 0.1\n  lr_g: 0.2\n", "line 5, column 3: duplicate key 'lr_g' (first given on line 3)"),
     ("name: a\nname: b\n", "line 2, column 1: duplicate key 'name' (first given on line 1)"),
     ("", "is empty"),
     ("# only a comment\n", "is empty")],
)  # fmt: skip
def test_yaml_duplicate_keys_and_empty_files(tmp_path, capsys, text, what):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    os.chdir(tmp_path)  # a failed start must leave no runs/ folder behind
    assert main(["train", str(cfg)]) == 2
    assert what in _one_line(capsys, "train")
    assert not (tmp_path / "runs").exists()


def test_arithmetic_on_a_2d_run(points_run, tmp_path, capsys):
    assert main(["arithmetic", str(points_run), "--u", "1", "--v", "2", "--w", "3", "--out", str(tmp_path / "a.png")]) == 2
    assert "generates 2-D points" in _one_line(capsys, "arithmetic")
    assert not (tmp_path / "a.png").exists()


def test_style_ranges_past_the_last_layer_are_refused():
    from gandist.errors import UserError
    from gandist.generate import style_layers

    assert style_layers("0-7", 8, 16) == list(range(8))
    with pytest.raises(UserError, match=r"--styles '0-99' goes past the last layer .* layers 0-7 at 16x16"):
        style_layers("0-99", 8, 16)


def test_eval_with_a_tiny_n_runs_and_names_each_minimum(points_run, tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    assert main(["eval", str(points_run), "--metrics", "kid,pr", "--n", "5", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "--n 5: too few samples for meaningful values of kid, pr" in err
    assert "kid >= 1000" in err and "pr >= 1000" in err
    assert out.is_file()


def test_fid_checks_a_bad_statistics_file_before_any_extraction(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(3), cov=np.eye(3))
    (tmp_path / "imgs").mkdir()  # extraction of this side would need Inception weights and minutes
    for a, b in ((str(tmp_path / "imgs"), str(bad)), (str(bad), str(tmp_path / "imgs"))):
        assert main(["fid", a, b]) == 2
        assert "has no 'mu' and 'sigma' arrays (found: mean, cov)" in _one_line(capsys, "fid")


def _ro_bind(target: Path) -> Path:
    """`target` made read-only by a bind mount onto itself (root only); the caller unmounts."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    target.mkdir(parents=True, exist_ok=True)
    for cmd in (["mount", "--bind", str(target), str(target)], ["mount", "-o", "remount,bind,ro", str(target)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            subprocess.run(["umount", str(target)], capture_output=True)
            pytest.skip(f"cannot make a read-only bind mount here: {r.stderr.strip()}")
    return target


def test_read_only_output_folders(points_run, tmp_path, capsys):
    ro = _ro_bind(tmp_path / "ro")
    try:
        assert main(["train", "ring_gan", "--out", str(ro / "run"), *TINY_POINTS]) == 2
        assert "is read-only; choose a writable folder with --out" in _one_line(capsys, "train")
        assert main(["generate", str(points_run), "--out", str(ro / "s.png")]) == 2
        assert "Read-only file system" in _one_line(capsys, "generate")
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.slow  # a fresh interpreter importing torch: ~20 s on a loaded 2-core machine
def test_one_row_through_a_real_process(user_folder):
    """The same contract from a shell: status, one line, nothing written."""
    before = _sums(user_folder)
    r = subprocess.run([sys.executable, "-m", "gandist", "train", "--out", str(user_folder)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert _sums(user_folder) == before


def test_stale_temporaries_removed_and_the_start_line_in_kimg(points_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(points_run, run)
    stale = run / "checkpoints" / ".tmp-000000001-4242"  # what a save killed by SIGKILL leaves
    stale.mkdir()
    (stale / "models.safetensors").write_bytes(b"\0" * 1000)
    # 0.024 kimg at batch 8: 3 steps, one more than the checkpoint's 2
    assert main(["train", "ring_gan", "--out", str(run), "--resume", "auto", *TINY_POINTS, "--set", "train.kimg=0.024"]) == 0
    assert not stale.exists()
    err = capsys.readouterr().err
    assert f"removed {stale}, left by a save that did not finish" in err
    assert "on ring, 0.024 kimg on " in err  # the unit that ends the run, not train.steps
    assert (run / "checkpoints" / "000000003").is_dir()


def test_resume_with_another_width_names_the_tensor_and_both_shapes(points_run, capsys):
    before = _sums(points_run)
    assert main(["train", "ring_gan", "--out", str(points_run), "--resume", "auto", *TINY_POINTS,
                 "--set", "model.g_width=12", "--set", "train.steps=4"]) == 2  # fmt: skip
    line = _one_line(capsys, "train")
    assert "does not fit this run's G (tensor " in line
    assert re.search(r"is \[8, 2\] in the checkpoint and \[12, 2\] in this config", line), line
    assert _sums(points_run) == before


def test_other_torchrun_ranks_stay_quiet(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("")
    monkeypatch.chdir(tmp_path)
    for rank, lines in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert main(["train", str(cfg)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == lines


def test_train_list_keeps_whole_first_sentences(capsys):
    from gandist.resources import shipped_configs

    assert main(["train", "--list"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == len(shipped_configs())
    for row in rows:
        text = row.split(None, 1)[1]
        assert not text.endswith(("et al.", "e.g.")), row
        assert text.endswith("...") or text.count("(") == text.count(")"), row
    assert any("DCGAN (Radford et al. 2016) on digits at 32x32" in r for r in rows)


@pytest.mark.parametrize(
    "content,what",
    [(b"174812789\n", "a text file of 10 bytes starting '174812789'"),
     (b"<!DOCTYPE html><html>rate limited</html>", "an HTML/XML page of 40 bytes (a failed download?)"),
     (b"", "an empty file"),
     (b"\x00\x01" * 600, "binary data of 1200 bytes of an unknown kind")],
)  # fmt: skip
def test_junk_inception_weights_say_what_the_file_is(tmp_path, capsys, content, what):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(content)
    (tmp_path / "imgs").mkdir()
    assert main(["fid", str(tmp_path / "imgs"), str(tmp_path / "imgs"), "--inception", str(weights)]) == 2
    line = _one_line(capsys, "fid")
    assert f"is {what}, not the expected PyTorch state dict weights-inception-2015-12-05" in line
    assert weights.read_bytes() == content


@pytest.mark.slow  # one epoch of the classifier: ~15 s on a loaded 2-core machine
def test_the_first_digits_eval_says_it_trains_the_classifier_and_caches_it(tmp_path, capsys, monkeypatch):
    from gandist.metrics import extractors

    monkeypatch.setenv("GANDIST_CACHE", str(tmp_path))
    real = extractors.train_digits_classifier
    one_epoch = lambda **kw: real(**{**kw, "epochs": 1})  # noqa: E731  (the same code, 1 epoch)
    monkeypatch.setattr(extractors, "train_digits_classifier", one_epoch)
    first = extractors.DigitsExtractor("cpu")
    err = capsys.readouterr().err
    assert "training the digits classifier once" in err and "digits classifier trained in" in err
    assert (tmp_path / f"digits_classifier_v{extractors.DIGITS_VERSION}.safetensors").is_file()
    again = extractors.DigitsExtractor("cpu")  # from the cache: silent, the same accuracy
    assert capsys.readouterr().err == "" and again.accuracy == first.accuracy


def test_eval_seconds_count_the_whole_command(points_run, tmp_path, monkeypatch):
    import json
    import time

    from gandist.metrics import commands

    slow = commands._eval

    def eval_after_a_setup_second(args, strategy):  # loading that the metrics' own clock does not see
        time.sleep(1.0)
        return slow(args, strategy)

    monkeypatch.setattr(commands, "_eval", eval_after_a_setup_second)
    out = tmp_path / "m.jsonl"
    assert main(["eval", str(points_run), "--metrics", "kid", "--n", "8", "--out", str(out)]) == 0
    res = json.loads(out.read_text().splitlines()[-1])
    assert res["seconds"] >= res["metric_seconds"] + 1.0
