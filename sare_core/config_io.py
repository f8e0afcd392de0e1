"""Run configs: typed pydantic models read from YAML, with command-line values and `--set key.path=value`
overrides on top. The one way every command reads its config; a bad config fails before any work starts,
with a message naming the file and the field.

    config = load_config(TrainConfig, "configs/demo.yaml", ["lr=3e-4", "model.num_clusters=32"])
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


def parse_override(text: str) -> tuple[list[str], object]:
    """'model.num_clusters=32' -> (['model', 'num_clusters'], 32); the value is read as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ValueError(f"override {text!r} has an empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def set_path(data: dict, keys: list[str] | str, value: object) -> None:
    """data[a][b][c] = value for ['a', 'b', 'c'] or 'a.b.c'; sections on the way are copied, not shared,
    and created when missing (a mapping value replaces the whole section it names)."""
    keys = keys.split(".") if isinstance(keys, str) else keys
    node = data
    for key in keys[:-1]:
        child = node.get(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"{'.'.join(keys)}: {key} is not a section")
        node[key] = child = dict(child)
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`data` with each 'key.path=value' applied in order."""
    for text in overrides:
        keys, value = parse_override(text)
        try:
            set_path(data, keys, value)
        except ValueError as exc:
            raise ValueError(f"override {text!r}: {exc}") from None
    return data


def merge(base: dict, over: dict) -> dict:
    """A new mapping: `base` with `over` on top, section by section (nested mappings merged, not replaced)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def describe(error: ValidationError) -> str:
    """'field.path: message; ...' for every error of a pydantic validation."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def read_yaml_mapping(path: str | Path, section: str | None = None) -> dict:
    """The mapping a YAML file holds, or its `section:` mapping when it has one (a run config's `model:` or
    `extract:`). FileNotFoundError / ValueError naming the file otherwise."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"{path}: the top level must be a mapping of config fields")
    loaded = loaded or {}
    if section is not None and isinstance(loaded.get(section), dict):
        return dict(loaded[section])
    return loaded


def build_config(cls: type[T], data: dict, source: str) -> T:
    """`cls(**data)`; a ValueError '<source>: invalid config: <field>: <message>' when it does not validate."""
    try:
        return cls(**data)
    except ValidationError as exc:
        raise ValueError(f"{source}: invalid config: {describe(exc)}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None, section: str | None = None) -> T:
    """`cls` from a YAML file (its `section:` when given and present), then `base` (values of command-line
    flags), then `--set` overrides; errors name the file and the field."""
    data = read_yaml_mapping(path, section) if path is not None else {}
    data.update({k: v for k, v in (base or {}).items() if v is not None})
    data = apply_overrides(data, overrides or [])
    return build_config(cls, data, str(path) if path is not None else "command line")


def dump_config(config: BaseModel) -> str:
    """YAML text that `load_config` reads back into an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
