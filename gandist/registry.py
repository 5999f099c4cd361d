"""Registries are small dicts at the edges (models, losses, datasets), keyed by short names."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def register(registry: dict[str, T], name: str) -> Callable[[T], T]:
    """Decorator adding an entry under `name`; a duplicate name is a programming error."""

    def add(obj: T) -> T:
        if name in registry:
            raise KeyError(f"'{name}' is registered twice")
        registry[name] = obj
        return obj

    return add
