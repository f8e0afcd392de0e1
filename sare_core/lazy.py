"""Package attributes that import their module on first use (PEP 562), so that importing a package for
one light submodule does not pull in torch and the other heavy dependencies of its siblings."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, namespace: dict, where: dict[str, str]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for `package`, whose attribute `name` lives in submodule `where[name]`."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{where[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
