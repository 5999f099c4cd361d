"""Model families, one folder each: `gandist/families/<name>/` holds everything a family is.

    config.py     its `model` section (and its `loss` section when it brings its own objective), torch-free;
                  the model section declares what the family is: `objective` (the objective it trains with),
                  and the capabilities the rest of gandist reads instead of its name (`grows`, `classes`,
                  `translates`; see `gandist.config.Section`)
    networks.py   the builder registered in `gandist.models.base.MODELS`: `build(model_cfg, shape, kind)`
    objective.py  optional: its own objective, registered in `gandist.objectives.base.OBJECTIVES`
                  (the classic families share `gandist/objectives/classic.py`)

Adding a family is adding a folder: no shared file lists families. The families are the subpackages of
this package, found with pkgutil, plus the family folders inside each directory of the environment
variable GANDIST_FAMILIES (os.pathsep-separated), which join this package's search path, so an
out-of-tree family imports as `gandist.families.<name>` like gandist's own. This module imports nothing
from torch: configs load without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from pathlib import Path

from gandist.errors import UserError

ENV = "GANDIST_FAMILIES"
PARTS = ("config", "networks", "objective")
_OWN = tuple(__path__)  # gandist's own families: this folder
_IMPORTED: dict[tuple[str, tuple[str, ...]], list[str]] = {}


def search_path() -> list[str]:
    """This package's search path: its own folder, then every directory named in GANDIST_FAMILIES."""
    wanted = list(_OWN)
    for entry in os.environ.get(ENV, "").split(os.pathsep):
        if not entry:
            continue
        path = Path(entry).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"{ENV} names {entry}, which is not a directory; point it at a folder of family folders")
        wanted.append(str(path))
    __path__[:] = wanted  # the import system reads it for `gandist.families.<name>`
    return wanted


def names() -> list[str]:
    """The names of every family found on the search path (a family is a subpackage)."""
    found = [m.name for m in pkgutil.iter_modules(search_path()) if m.ispkg]
    seen: set[str] = set()
    for name in found:
        if name in seen:
            raise UserError(f"two family folders are named '{name}' on gandist's family path; rename one")
        seen.add(name)
    return sorted(found)


def import_part(part: str) -> list[str]:
    """Import `part` (config, networks or objective) of every family that has one (registration side
    effects; cached by the import system). Returns the modules imported."""
    if part not in PARTS:
        raise ValueError(f"a family part is one of {', '.join(PARTS)}, not '{part}'")
    key = (part, tuple(search_path()))
    if key in _IMPORTED:  # the registries ask on every lookup; the folders are scanned once per path
        return _IMPORTED[key]
    modules = []
    for name in names():
        module = f"{__name__}.{name}.{part}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
            modules.append(module)
    _IMPORTED[key] = modules
    return modules


def folder(name: str) -> Path:
    """The folder of the family `name` (for the layout test and error messages)."""
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"no family folder named '{name}'; families: {', '.join(names())}")
    return Path(list(spec.submodule_search_locations)[0])
