"""docs/fidelity.md and the shipped configs cannot drift apart: every row of its config tables names a key
of a shipped config, gandist's value there, and the file and line that set it; the test reads the config
the way `gandist train` does and checks all three, and that a row departing from both the paper and the
official code says why."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from gandist.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fidelity.md"
HEADER = ["key", "paper", "official code", "gandist", "set at", "departure"]


def _rows() -> list[tuple[str, str, dict[str, str]]]:
    """(config name, key, cells) of every row of the tables under a `### `config`` heading."""
    rows, section, header = [], None, None
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            m = re.match(r"### `(\w+)`", line)
            section, header = (m.group(1) if m else None), None
            continue
        if not line.startswith("|") or section is None:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            assert header == HEADER, f"a config table under {section} has columns {header}, expected {HEADER}"
            continue
        if set(line) <= set("|-: "):
            continue
        key = cells[0].strip("`")
        config, _, key = key.rpartition(": ")
        rows.append((config or section, key, dict(zip(header, cells))))
    return rows


ROWS = _rows()


def _value(cell: str):
    """A cell as YAML (numbers, booleans, names, `{res: batch}` maps); `—` or prose: None."""
    if cell in ("", "—"):
        return None
    try:
        return yaml.safe_load(cell)
    except yaml.YAMLError:
        return None


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def test_the_table_has_rows_for_every_big_config():
    configs = {c for c, _, _ in ROWS}
    assert {"pggan_1024", "stylegan_1024", "pggan_256", "stylegan_256", "cyclegan_256"} <= configs
    assert len(ROWS) >= 60


@pytest.mark.parametrize("config,key,cells", ROWS, ids=[f"{c}:{k}" for c, k, _ in ROWS])
def test_row_matches_the_shipped_config(config, key, cells):
    # the 1024/256 configs leave data.path for the user to fill; any path passes the config checks
    raw = yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())
    cfg = load_config(config, [f"data.path={ROOT}"] if "path" in raw.get("data", {}) else [])
    node = cfg
    for part in key.split("."):
        assert dataclasses.is_dataclass(node) and hasattr(node, part), f"{config} has no setting {key}"
        node = getattr(node, part)
    want = _value(cells["gandist"])
    assert want is not None, f"the gandist cell of {config}:{key} is not a value: {cells['gandist']!r}"
    assert _same(node, want), f"{config}:{key} is {node!r} in the config, the table says {want!r}"

    # the file and line that set it: a shipped YAML line naming the key, or the section's dataclass field
    path, _, line = cells["set at"].rpartition(":")
    assert line.isdigit(), f"{config}:{key}: 'set at' must be file:line, got {cells['set at']!r}"
    text = (ROOT / path).read_text().splitlines()
    leaf = key.rsplit(".", 1)[-1]
    assert 1 <= int(line) <= len(text) and re.search(rf"\b{leaf}\s*:", text[int(line) - 1]), (
        f"{path}:{line} does not set {leaf}: {text[int(line) - 1] if int(line) <= len(text) else '(no line)'!r}"
    )
    if path.startswith("configs/"):
        assert Path(path).stem == config, f"{config}:{key} is set in another config's file {path}"
    else:  # a default of the code: the shipped config must not override it
        section, _, name = key.partition(".")
        assert name not in (raw.get(section) or {}), f"{config} overrides {key}; point 'set at' at its line"

    # a departure from both the paper and the official code is explained
    refs = [v for v in (_value(cells["paper"]), _value(cells["official code"])) if v is not None]
    if refs and not any(_same(node, r) for r in refs):
        assert cells["departure"], f"{config}:{key} = {node!r} differs from the paper and the official code " \
                                   f"({refs}) without a word in the departure column"  # fmt: skip
