"""`gandist prepare` and prepared datasets."""

import json

import numpy as np
import pytest
from PIL import Image

from gandist.cli import main
from gandist.config import make_section
from gandist.data import build_dataset
from gandist.data.prepare import Options, prepare, verify_manifest
from gandist.errors import DataError, UserError


def make_source(root, n=12):
    rng = np.random.default_rng(0)
    (root / "00000").mkdir(parents=True)  # FFHQ-style shard folders
    (root / "01000").mkdir()
    for i in range(n):
        arr = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / ("00000" if i < n // 2 else "01000") / f"{i:05d}.png")
    Image.fromarray(np.full((30, 20), 200, np.uint8)).save(root / "grey.png")
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., 0] = 255  # pure red, half transparent
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(root / "rgba.png")
    (root / "zero.jpg").write_bytes(b"")
    (root / "readme.txt").write_text("not an image")
    good = (root / "00000" / "00000.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 3])
    return root


def test_prepare_validates_converts_and_reports(tmp_path):
    src = make_source(tmp_path / "src")
    m = prepare(src, tmp_path / "dst", Options(16), workers=1, progress=False)
    assert m["count"] == 14 and m["skipped"] == 3
    report = (tmp_path / "dst" / "report.txt").read_text()
    assert "zero.jpg: empty file" in report and "readme.txt: not an image" in report
    assert "truncated.png: corrupt or truncated" in report
    sources = {f["source"].rsplit("/", 1)[-1]: f["file"] for f in m["files"]}
    grey = np.asarray(Image.open(tmp_path / "dst" / sources["grey.png"]))
    assert grey.shape == (16, 16, 3) and abs(int(grey.mean()) - 200) <= 2  # grey -> RGB
    red = np.asarray(Image.open(tmp_path / "dst" / sources["rgba.png"])).astype(int)
    # alpha 128 over white: (255, 127, 127) up to JPEG rounding
    assert abs(red[..., 0].mean() - 255) < 3 and abs(red[..., 1].mean() - 127) < 3
    verify_manifest(tmp_path / "dst", full=True)


def test_prepare_center_crop_and_lanczos_match_pil(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    arr = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(arr).save(src / "a.png")
    m = prepare(src, tmp_path / "dst", Options(12, fmt="npy"), workers=1, progress=False)
    got = np.load(tmp_path / "dst" / m["files"][0]["file"])
    ref = np.asarray(Image.fromarray(arr).crop((10, 0, 40, 30)).resize((12, 12), Image.Resampling.LANCZOS))
    assert np.array_equal(got, ref)


def test_rerun_resumes_without_redoing_finished_files(tmp_path):
    src = make_source(tmp_path / "src")
    dst = tmp_path / "dst"
    prepare(src, dst, Options(16), workers=1, progress=False)
    journal = (dst / ".journal.jsonl").read_text().splitlines()
    # simulate an interruption after 6 sources: journal cut (mid-line too), manifest not written yet
    (dst / ".journal.jsonl").write_text("\n".join(journal[:7]) + '\n{"index": 99, "sou')
    (dst / "manifest.json").unlink()
    kept = [json.loads(x) for x in journal[1:7] if "file" in json.loads(x)]
    mtimes = {r["file"]: (dst / r["file"]).stat().st_mtime_ns for r in kept}
    m = prepare(src, dst, Options(16), workers=1, progress=False)
    assert m["count"] == 14
    assert all((dst / f).stat().st_mtime_ns == t for f, t in mtimes.items())  # not rewritten
    with pytest.raises(DataError, match="other settings"):
        prepare(src, dst, Options(32), workers=1, progress=False)


def test_training_refuses_a_dataset_that_does_not_match_its_manifest(tmp_path, capsys):
    src = make_source(tmp_path / "src")
    dst = tmp_path / "dst"
    m = prepare(src, dst, Options(16), workers=1, progress=False)
    cfg = make_section("data", name="folder", path=str(dst), resolution=16, batch_size=4)
    assert build_dataset(cfg, 0).size == 14
    (dst / m["files"][3]["file"]).unlink()
    with pytest.raises(DataError, match="missing"):
        build_dataset(cfg, 0)
    args = ["train", "digits_dcgan", "--set", "data.name=folder", "--set", f"data.path={dst}", "--set",
            "data.resolution=16", "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "does not match its manifest" in capsys.readouterr().err


def test_changed_bytes_fail_full_verification(tmp_path):
    src = make_source(tmp_path / "src")
    dst = tmp_path / "dst"
    m = prepare(src, dst, Options(16), workers=1, progress=False)
    f = dst / m["files"][0]["file"]
    blob = bytearray(f.read_bytes())
    blob[-5] ^= 1
    f.write_bytes(bytes(blob))
    verify_manifest(dst)  # same size: the cheap check passes
    with pytest.raises(DataError, match="checksum"):
        verify_manifest(dst, full=True)


def test_prepare_cli(tmp_path, capsys):
    src = make_source(tmp_path / "src")
    assert (
        main(
            [
                "prepare",
                str(src),
                str(tmp_path / "dst"),
                "--resolution",
                "8",
                "--workers",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "14 images at 8x8" in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "nope"), str(tmp_path / "d2"), "--resolution", "8"]) == 2


def test_prepare_without_images_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no files"):
        prepare(empty, tmp_path / "d1", Options(8), workers=1, progress=False)
    assert not (tmp_path / "d1").exists()  # nothing created for nothing
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("no pictures here")
    (junk / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match="all 2 files were skipped"):
        prepare(junk, tmp_path / "d2", Options(8), workers=1, progress=False)
    assert (tmp_path / "d2" / "report.txt").is_file() and not (tmp_path / "d2" / "manifest.json").exists()
    assert main(["prepare", str(empty), str(tmp_path / "d3"), "--resolution", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no files" in err


def test_journal_damaged_before_its_last_line_is_an_error(tmp_path):
    src = make_source(tmp_path / "src")
    dst = tmp_path / "dst"
    prepare(src, dst, Options(16), workers=1, progress=False)
    lines = (dst / ".journal.jsonl").read_text().splitlines()
    lines[3] = lines[3][:10]
    (dst / ".journal.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"\.journal\.jsonl line 4"):
        prepare(src, dst, Options(16), workers=1, progress=False)
