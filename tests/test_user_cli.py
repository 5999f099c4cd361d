"""Every row of a user's mistakes through a real `gandist` process, as a shell meets it: the exit status,
exactly one line on stderr naming the fix (no traceback, no warning), nothing written where the command
was refused, and the user's files unchanged by checksum. `tests/test_user_errors.py` checks the wording and
effects of each row in process; this table checks that nothing between the shell and those lines (the
interpreter's warnings and teardown, exit codes, a stray file) spoils them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_user_errors import _ro_bind, make_user_folder

pytestmark = pytest.mark.slow  # a fresh interpreter importing torch per row: 3-5 s each on 2 cores

POINTS = ["name=tinypts", "model.g_width=8", "model.d_width=8", "data.batch_size=8", "train.steps=2",
          "train.log_every=1", "train.sample_every=1000", "train.ckpt_every=1000", "train.sample_n=8",
          "health.enabled=false"]  # fmt: skip
STYLE = ["model.z_dim=8", "model.w_dim=8", "model.mapping_layers=2", "model.mapping_width=8", "model.fmap_base=16",
         "model.fmap_max=8", "model.mbstd_group=2", "data.resolution=16", "data.batch_size=4",
         "schedule.stable_kimg=0.008", "schedule.fade_kimg=0.008", "schedule.batch={4: 4, 8: 4, 16: 4}",
         "train.kimg=0.06", "train.sample_every=1000", "train.ckpt_every=1000", "train.sample_n=4",
         "health.enabled=false"]  # fmt: skip


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _sums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def gandist(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # a warning the user would see is not hidden here
    return subprocess.run([sys.executable, "-m", "gandist", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny 2-D run and a tiny StyleGAN run, each trained by a real `gandist train`."""
    root = tmp_path_factory.mktemp("user-cli")
    made = {"points": root / "points", "style": root / "style"}
    for (name, out), (config, sets) in zip(made.items(), (("ring_gan", POINTS), ("stylegan_cpu", STYLE))):
        r = gandist("train", config, "--out", str(out), "--no-progress", *_sets(sets), cwd=root)
        assert r.returncode == 0, f"{name}: {r.stderr[-2000:]}"
    return made


def _row(name: str, tmp: Path, runs: dict[str, Path]) -> tuple[list[str], str, Path | None, list[Path]]:
    """(arguments, what the one line must say, a folder whose files must not change, paths that must not
    appear) of one row."""
    pts, style = str(runs["points"]), str(runs["style"])
    if name == "out_into_a_users_folder":
        f = make_user_folder(tmp)
        return (
            ["train", "ring_gan", "--out", str(f), *_sets(POINTS)],
            "holds files gandist did not write",
            f,
            [],
        )
    if name == "resume_auto_in_a_users_folder":
        f = make_user_folder(tmp)
        return (["train", "ring_gan", "--out", str(f), "--resume", "auto", *_sets(POINTS)],
                "holds files gandist did not write", f, [])  # fmt: skip
    if name == "out_names_a_file":
        (tmp / "notes.txt").write_text("mine\n")
        return ["train", "ring_gan", "--out", str(tmp / "notes.txt")], "is a file, not a folder", tmp, []
    if name == "failed_start_in_an_existing_folder":
        (tmp / "empty").mkdir()
        return (["train", "ring_gan", "--out", str(tmp / "empty"), "--resume", str(tmp / "nope"), *_sets(POINTS)],
                "nope", tmp, [])  # fmt: skip
    if name == "prepare_into_its_own_source":
        src = tmp / "photos"
        src.mkdir()
        Image = pytest.importorskip("PIL.Image")
        Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(src / "a.png")
        return ["prepare", str(src), str(src / "prepared"), "--resolution", "8"], "inside", tmp, []
    if name == "prepare_into_a_users_folder":
        src, mine = tmp / "photos", make_user_folder(tmp)
        src.mkdir()
        Image = pytest.importorskip("PIL.Image")
        Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(src / "a.png")
        (mine / "report.txt").write_text("my report\n")
        return (
            ["prepare", str(src), str(mine), "--resolution", "8"],
            "holds files prepare did not write",
            mine,
            [],
        )
    if name in ("duplicate_yaml_key", "empty_yaml"):
        cfg = tmp / "c.yaml"
        cfg.write_text("name: a\nname: b\n" if name == "duplicate_yaml_key" else "")
        return (
            ["train", str(cfg)],
            "duplicate key 'name'" if name == "duplicate_yaml_key" else "is empty",
            tmp,
            [tmp / "runs"],
        )
    if name == "arithmetic_on_points":
        out = tmp / "a.png"
        return (
            ["arithmetic", pts, "--u", "1", "--v", "2", "--w", "3", "--out", str(out)],
            "2-D points",
            None,
            [out],
        )
    if name == "style_mix_past_the_last_layer":
        out = tmp / "mix.png"
        return (["style-mix", style, "--styles", "0-99", "--out", str(out)], "goes past the last layer", None,
                [out])  # fmt: skip
    if name == "fid_against_a_wrong_npz":
        bad = tmp / "bad.npz"
        np.savez(bad, mean=np.zeros(3), cov=np.eye(3))
        (tmp / "imgs").mkdir()
        return ["fid", str(tmp / "imgs"), str(bad)], "has no 'mu' and 'sigma' arrays", tmp, []
    if name == "resume_with_another_width":
        return (["train", "ring_gan", "--out", pts, "--resume", "auto", *_sets(POINTS), "--set", "model.g_width=12",
                 "--set", "train.steps=4"], "does not fit this run's G (tensor ", runs["points"], [])  # fmt: skip
    if name == "resume_with_another_family":  # the DCGAN quickstart into the 2-D MLP run
        return (["train", "quickstart", "--out", pts, "--resume", "auto", "--set", "train.steps=4"],
                "does not fit this run's G (tensor net.0.weight is [8, 2] in the checkpoint and [", runs["points"], [])  # fmt: skip
    if name == "junk_inception_weights":
        w = tmp / "inception.pth"
        w.write_bytes(b"174812789\n")
        (tmp / "imgs").mkdir()
        return (["fid", str(tmp / "imgs"), str(tmp / "imgs"), "--inception", str(w)],
                "not the expected PyTorch state dict", tmp, [])  # fmt: skip
    raise AssertionError(name)


ROWS = ["out_into_a_users_folder", "resume_auto_in_a_users_folder", "out_names_a_file",
        "failed_start_in_an_existing_folder", "prepare_into_its_own_source", "prepare_into_a_users_folder",
        "duplicate_yaml_key", "empty_yaml", "arithmetic_on_points", "style_mix_past_the_last_layer", "fid_against_a_wrong_npz",
        "resume_with_another_width", "resume_with_another_family", "junk_inception_weights"]  # fmt: skip


@pytest.mark.parametrize("name", ROWS)
def test_a_mistake_is_one_line_from_a_real_process_and_changes_nothing(name, runs, tmp_path):
    args, says, kept, absent = _row(name, tmp_path, runs)
    before = _sums(kept) if kept is not None else None
    r = gandist(*args, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"gandist {args[0]}: error: "), lines
    assert says in lines[0] and "Traceback" not in r.stderr, lines
    if kept is not None:
        assert _sums(kept) == before, f"{name} changed files in {kept}"
    for path in absent:
        assert not path.exists(), f"{name} wrote {path}"
    if name == "failed_start_in_an_existing_folder":  # the folder is left as it was found: empty
        assert list((tmp_path / "empty").iterdir()) == []


def test_accepted_with_a_line_from_a_real_process(runs, tmp_path):
    """What is allowed but worth a word: `eval --n 5` runs and names each metric's minimum; `train --list`
    keeps whole sentences. Exit 0, the line, no traceback or warning."""
    out = tmp_path / "m.jsonl"
    r = gandist(
        "eval", str(runs["points"]), "--metrics", "kid,pr", "--n", "5", "--out", str(out), cwd=tmp_path
    )
    assert r.returncode == 0 and out.is_file(), r.stderr[-2000:]
    assert "--n 5: too few samples for meaningful values of kid, pr" in r.stderr
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
    r = gandist("train", "--list", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "DCGAN (Radford et al. 2016) on digits at 32x32" in r.stdout


def test_read_only_folders_from_a_real_process(runs, tmp_path):
    """Every subcommand that writes, into a read-only folder (a read-only bind mount: root only, skipped
    otherwise)."""
    src = tmp_path / "photos"
    src.mkdir()
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(src / "a.png")
    ro = _ro_bind(tmp_path / "ro")
    try:
        for args, says in (
            (["train", "ring_gan", "--out", str(ro / "run"), *_sets(POINTS)], "is read-only"),
            (["generate", str(runs["points"]), "--out", str(ro / "s.png")], "Read-only file system"),
            (
                [
                    "eval",
                    str(runs["points"]),
                    "--metrics",
                    "parzen",
                    "--n",
                    "64",
                    "--out",
                    str(ro / "m.jsonl"),
                ],
                "Read-only file system",
            ),
            (["prepare", str(src), str(ro / "dst"), "--resolution", "8"], "Read-only file system"),
            (["style-mix", str(runs["style"]), "--out", str(ro / "mix.png")], "Read-only file system"),
        ):
            r = gandist(*args, cwd=tmp_path)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 2 and len(lines) == 1 and says in lines[0], (r.returncode, lines)
            assert lines[0].startswith(f"gandist {args[0]}: error: ") and "Traceback" not in r.stderr
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_real_10000px_image_is_refused_with_its_reason(tmp_path):
    """A 10000x10000 file (100 Mpx, over Pillow's 89.5 Mpx bomb limit), not a lowered limit: `prepare` skips it
    with the reason in its report and prepares the rest; training from the folder stops with one error line
    naming the file and the fix, without Pillow's DecompressionBombWarning."""
    Image = pytest.importorskip("PIL.Image")
    src = tmp_path / "src"
    src.mkdir()
    Image.new("L", (10000, 10000), 128).save(src / "big.png")
    Image.new("RGB", (64, 64), (10, 20, 30)).save(src / "ok.png")
    r = gandist(
        "prepare", str(src), str(tmp_path / "dst"), "--resolution", "16", "--no-progress", cwd=tmp_path
    )
    assert r.returncode == 0 and "1 skipped" in r.stdout and "Traceback" not in r.stderr, r.stderr
    report = (tmp_path / "dst" / "report.txt").read_text()
    assert "big.png: 10000x10000 pixels (100.0 Mpx) is above the 89.5 Mpx that is safe to decode" in report
    sets = ["data.name=folder", f"data.path={src}", "data.resolution=16", "data.batch_size=2", "train.steps=2",
            "health.enabled=false"]  # fmt: skip
    r = gandist(
        "train", "quickstart", "--out", str(tmp_path / "run"), "--no-progress", *_sets(sets), cwd=tmp_path
    )
    errors = [x for x in r.stderr.splitlines() if x.startswith("gandist train: error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert "big.png" in errors[0] and "shrink it first" in errors[0]
    assert "Traceback" not in r.stderr and "DecompressionBomb" not in r.stderr, r.stderr
