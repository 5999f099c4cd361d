"""Files gandist ships beside its code, found the same way in a source checkout and an installed wheel.

The YAML configs have one source of truth, the repository's top-level `configs/`. setup.py maps that
folder into the package as `gandist/configs/` when it builds a wheel, so

  installed wheel (pip install . / a .whl)   <site-packages>/gandist/configs/*.yaml
  source checkout, editable install          <repository>/configs/*.yaml

and the DeepSpeed JSON files of `launch/deepspeed/` the same way, as `gandist/deepspeed_configs/`.

No torch and no project imports: `gandist train --list` and `--help` stay cheap.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """The folder of shipped configs: the package's own copy when installed, else the checkout's.
    Always returns a path; it holds no YAML only in a broken install (callers list what they find)."""
    installed = _PACKAGE / "configs"
    if any(installed.glob("*.yaml")):
        return installed
    return _PACKAGE.parent / "configs"


def deepspeed_dir() -> Path:
    """The folder of shipped DeepSpeed JSON files (train.deepspeed_config names), installed or in the checkout."""
    installed = _PACKAGE / "deepspeed_configs"
    if any(installed.glob("*.json")):
        return installed
    return _PACKAGE.parent / "launch" / "deepspeed"


def shipped_configs() -> dict[str, Path]:
    """Name -> path of every shipped config, sorted by name."""
    return {p.stem: p for p in sorted(configs_dir().glob("*.yaml"))}


# a full stop after these is not a sentence's end ("DCGAN (Radford et al. 2016) on digits")
ABBREVIATIONS = {"al", "e.g", "i.e", "cf", "fig", "sec", "eq", "vs", "approx", "etc", "no"}


def _first_sentence(text: str) -> str:
    """Up to the first '. ' outside parentheses that does not follow an abbreviation or an initial."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "." and text[i + 1 : i + 2] in (" ", "") and depth <= 0:
            word = text[:i].split()[-1].lower() if text[:i].split() else ""
            if word.lstrip("(") not in ABBREVIATIONS and len(word.lstrip("(")) > 1:
                return text[: i + 1]
    return text


def describe_config(path: Path, width: int = 100) -> str:
    """The first sentence of a config's leading comment block (its description), at most `width` characters."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.extend(line.lstrip("#").split())
    text = _first_sentence(" ".join(words))
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."
