"""Append-only .jsonl files: a torn last line is dropped, damage elsewhere is an error."""

import pytest

from gandist.jsonl import JsonlError, append_jsonl, read_jsonl


def test_torn_last_line_is_dropped_with_a_notice(tmp_path, capsys):
    f = tmp_path / "log.jsonl"
    for step in (1, 2):
        append_jsonl(f, {"step": step})
    good = f.read_bytes()
    f.write_bytes(good + b'{"step": 3, "d_lo')  # killed mid-write
    assert read_jsonl(f) == [{"step": 1}, {"step": 2}]
    assert "torn last line (line 3" in capsys.readouterr().err
    assert f.read_bytes() == good + b'{"step": 3, "d_lo'  # reading alone changes nothing
    read_jsonl(f, repair=True)
    assert f.read_bytes() == good  # the next append starts on a fresh line
    append_jsonl(f, {"step": 3})
    assert read_jsonl(f) == [{"step": 1}, {"step": 2}, {"step": 3}]


def test_bad_line_elsewhere_names_file_and_line(tmp_path):
    f = tmp_path / "log.jsonl"
    f.write_text('{"step": 1}\n{"step": 2, "x\n{"step": 3}\n')
    with pytest.raises(JsonlError, match=r"log\.jsonl line 2 is not a JSON record"):
        read_jsonl(f)
    f.write_text('{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(JsonlError, match="line 2"):
        read_jsonl(f, repair=True)
    assert f.read_text().count("\n") == 3  # never repaired past real damage


def test_whole_last_record_without_newline_is_kept(tmp_path):
    f = tmp_path / "log.jsonl"
    f.write_text('{"step": 1}\n\n{"step": 2}')
    assert read_jsonl(f, repair=True) == [{"step": 1}, {"step": 2}]
    assert f.read_text().endswith('{"step": 2}\n')
    assert read_jsonl(tmp_path / "none.jsonl") == []
