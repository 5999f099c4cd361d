"""Capabilities, not names: outside a family's folder, a data source's modules and the metrics package, no
code branches on the family's, source's or metric's name. The names come from the registries, so a new
family, source or metric is covered the day it is added; and every family folder is what the registries hold."""

import ast
import inspect
from pathlib import Path

import pytest

import gandist
from gandist import families
from gandist.config import registered

ROOT = Path(gandist.__file__).resolve().parent

# Names that are also something else, each with its reason (file relative to gandist/, name).
ALLOWED = {
    ("cli.py", "fid"),  # the `gandist fid` subcommand, named like the metric it computes
    ("metrics/extractors.py", "digits"),  # the digit classifier's extractor (metrics.extractor=digits)
    ("metrics/sources.py", "folder"),  # a folder of samples describes itself by its path under 'folder'
}


def _homes() -> dict[str, set[Path]]:
    """name -> the folders and files where code may name it."""
    from gandist.data.base import DATASETS, load_sources
    from gandist.metrics.entries import METRICS

    load_sources()
    homes: dict[str, set[Path]] = {}
    for name in families.names():
        homes.setdefault(name, set()).add(families.folder(name).resolve())
    for name in registered("data"):
        source = Path(inspect.getfile(DATASETS[name])).resolve()
        homes.setdefault(name, set()).update({ROOT / "data" / "config.py", source})
    for name in METRICS:  # the data sections declare their default metrics by name
        homes.setdefault(name, set()).update({ROOT / "metrics", ROOT / "data" / "config.py"})
    return homes


def _branch_constants(tree: ast.AST):
    """String constants the code branches or looks up on: operands of comparisons (also inside tuples,
    lists and sets there), keys of dict literals and subscripts."""
    for node in ast.walk(tree):
        found: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                found += operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
        elif isinstance(node, ast.Dict):
            found += [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript):
            found.append(node.slice)
        for c in found:
            if isinstance(c, ast.Constant) and isinstance(c.value, str):
                yield c


def test_no_family_dataset_or_metric_name_is_branched_on_outside_its_home():
    homes = _homes()
    assert {"mlp", "dcgan", "pggan", "stylegan", "sgan", "cyclegan", "ring", "digits", "fid", "modes"} <= set(homes)
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for c in _branch_constants(ast.parse(path.read_text())):
            if c.value not in homes or (rel, c.value) in ALLOWED:
                continue
            if not any(path == h or h in path.parents for h in homes[c.value]):
                found.append(f"gandist/{rel}:{c.lineno} branches on '{c.value}'")
    assert not found, "declare a capability instead of naming it:\n" + "\n".join(found)


def test_the_scan_sees_a_branch_on_a_name():
    # The scan must catch the shapes it is for, or the test above could not fail.
    code = 'if cfg.model.name == "sgan" or name in ("ring", "grid"): pass\nk = {"digits": 10}.get(x)\ny = t["fid"]'
    assert sorted(c.value for c in _branch_constants(ast.parse(code))) == ["digits", "fid", "grid", "ring", "sgan"]


def test_every_family_folder_is_what_the_registries_hold():
    from gandist.models.base import MODELS, _registry

    _registry()
    names = set(families.names())
    ours = {n for n, c in registered("model").items() if c.__module__.startswith("gandist.")}  # not tests' own
    assert names == ours, "a model section without a family folder, or the reverse"
    assert names <= set(MODELS)
    for name in names:
        section = registered("model")[name]
        assert Path(inspect.getfile(section)).resolve().parent == families.folder(name).resolve()
        assert Path(inspect.getfile(MODELS[name])).resolve().parent == families.folder(name).resolve()


@pytest.mark.parametrize("family, capabilities", [
    ("pggan", {"grows"}), ("stylegan", {"grows"}), ("sgan", {"has_classes"}), ("cyclegan", {"translates"}),
    ("mlp", set()), ("dcgan", set()),
])  # fmt: skip
def test_families_declare_their_capabilities(family, capabilities):
    section = registered("model")[family]
    assert {c for c in ("grows", "has_classes", "translates") if getattr(section, c)} == capabilities


def test_no_module_imports_a_family_s_private_names():
    # What families share (growth state, widths per resolution) lives in gandist.models.growth with public
    # names; reaching into another family's `_helpers` would tie two folders together.
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gandist.families."):
                owner = node.module.split(".")[2]
                if not rel.startswith(f"families/{owner}/"):
                    found += [f"gandist/{rel}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
    assert not found, "import the shared public name instead:\n" + "\n".join(found)
