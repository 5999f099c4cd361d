"""What a normal (non-editable) install ships: the configs travel inside the package and are found
from any folder; `gandist train --list` shows them."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gandist import resources

REPO = Path(__file__).resolve().parents[1]


def _load_resources_at(package_dir: Path):
    """gandist/resources.py as it would run from `package_dir` (a copy, imported under another name)."""
    package_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(resources.__file__), package_dir / "resources.py")
    spec = importlib.util.spec_from_file_location("resources_copy", package_dir / "resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configs_dir_in_a_source_checkout():
    assert resources.configs_dir() == REPO / "configs"
    assert "quickstart" in resources.shipped_configs()
    assert resources.describe_config(REPO / "configs" / "quickstart.yaml").startswith("The default run")


def test_configs_dir_in_an_installed_package(tmp_path):
    site = tmp_path / "site-packages"
    (site / "gandist" / "configs").mkdir(parents=True)
    (site / "gandist" / "configs" / "mine.yaml").write_text("# Mine. More words.\nname: mine\n")
    module = _load_resources_at(site / "gandist")
    assert module.configs_dir() == site / "gandist" / "configs"
    assert list(module.shipped_configs()) == ["mine"]
    assert module.describe_config(site / "gandist" / "configs" / "mine.yaml") == "Mine."


def _run(cmd, cwd, env, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
def test_wheel_trains_the_quickstart_from_an_empty_folder(tmp_path):
    # build from a copy, so the checkout gets no build/ or egg-info
    src = tmp_path / "src"
    anywhere = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*_cache")
    top = {".git", "build", "dist", "runs", "data", "tests", "benchmarks"}

    def ignore(folder, names):
        return set(anywhere(folder, names)) | (top & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, src, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp_path / "whl"), str(src)],
         tmp_path, env)  # fmt: skip
    (wheel,) = (tmp_path / "whl").glob("gandist-*.whl")

    # a fresh environment; torch and the other dependencies come from the system site packages
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--ignore-installed",
          str(wheel)], tmp_path, env)  # fmt: skip
    gandist = venv / "bin" / "gandist"

    empty = tmp_path / "empty"
    empty.mkdir()
    # every module of the source tree imports from the wheel (an editable install elsewhere must not fill gaps)
    roots = {src / "gandist": ("gandist",), src / "kernels": ("gandist", "kernels")}  # setup.py's package_dir
    modules = sorted(
        ".".join((*prefix, *f.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for root, prefix in roots.items()
        for f in root.rglob("*.py")
        if f.name != "__main__.py"
    )
    check = (
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    m = importlib.import_module(name)\n"
        f"    assert m.__file__.startswith({str(venv)!r}), (name, m.__file__)\n"
        "import gandist.resources as r\n"
        "assert (r.deepspeed_dir() / 'zero1.json').is_file(), r.deepspeed_dir()\n"
        f"assert str(r.deepspeed_dir()).startswith({str(venv)!r}), r.deepspeed_dir()\n"
        "print(r.configs_dir())\n"
    )
    where = Path(_run([str(py), "-c", check], empty, env).stdout.strip())
    assert where.is_relative_to(venv) and where.parts[-3:] == ("site-packages", "gandist", "configs"), where

    listing = _run([str(gandist), "train", "--list"], empty, env).stdout
    for name in resources.shipped_configs():
        assert f"  {name} " in listing, (name, listing)
    assert "ring_wgangp" in _run([str(gandist), "train", "--help"], empty, env).stdout

    r = _run([str(gandist), "train", "quickstart", "--set", "train.steps=2", "--no-progress"], empty, env)
    assert "done: 2 steps" in r.stdout
    assert list((empty / "runs").glob("00000-quickstart/checkpoints/000000002/MANIFEST.json"))
