"""Typed run configs from YAML, with `--set key.path=value` overrides from the command line.

A bad config fails before any work starts, with a message naming the file and the field.
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


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {text!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> T:
    """Build `cls` from a YAML file (optional), then `base` (fields from command-line flags), then
    `--set` overrides; errors name the file and the field."""
    data: dict = {}
    source = "command line"
    if path is not None:
        source = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping of config fields")
        data = loaded or {}
    data.update(base or {})
    data = apply_overrides(data, overrides or [])
    try:
        return cls(**data)
    except ValidationError as exc:
        raise ValueError(f"{source}: invalid config: {_describe(exc)}") from None


def dump_config(config: BaseModel) -> str:
    """YAML text that `load_config` reads back into an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
