"""The YAML configs that ship with the package (the repository's configs/ folder, installed as the
`sare_configs` package data), found the same way from a checkout, an editable install or a wheel."""

from __future__ import annotations

from importlib import resources


def shipped_config(name: str) -> str:
    """The path of the shipped config `name` (e.g. "demo.yaml"); FileNotFoundError naming it otherwise."""
    path = resources.files("sare_configs").joinpath(name)
    if not path.is_file():
        known = sorted(p.name for p in resources.files("sare_configs").iterdir() if p.name.endswith(".yaml"))
        raise FileNotFoundError(f"no shipped config {name!r}; the package ships {known}")
    return str(path)
