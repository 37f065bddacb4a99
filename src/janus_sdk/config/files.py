"""Reading and writing config files: JSON, YAML or TOML, chosen by the file's extension."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
import yaml
from pydantic import BaseModel, ValidationError

from janus_sdk.errors import ConfigError
from janus_sdk.registry import describe_validation_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SUFFIXES = (".json", ".yaml", ".yml", ".toml")
_Model = TypeVar("_Model", bound=BaseModel)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a config file into a dict, with errors that name the file and the line where possible."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(
            f"{path}: unsupported config format {path.suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings, got {type(data).__name__}")
    return data


def read_model_file(cls: type[_Model], path: str | Path, *, drop: Iterable[str] = ()) -> _Model:
    """A config file validated against `cls`, without the keys in `drop` (the bookkeeping that official
    files carry, e.g. `processor_class`); a ConfigError naming the file otherwise."""
    data = read_config_file(path)
    for key in drop:
        data.pop(key, None)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, subject=str(path))) from None


def dump_config(data: dict[str, Any], fmt: str) -> str:
    """Serialise a config dict as 'json', 'yaml' or 'toml' text."""
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        return str(yaml.safe_dump(data, sort_keys=False))
    if fmt == "toml":
        return tomli_w.dumps(_without_none(data))
    raise ConfigError(f"unknown config format {fmt!r}; use json, yaml or toml")


def _without_none(data: Any) -> Any:
    """TOML has no null: unset optional settings are left out (they fall back to their defaults)."""
    if isinstance(data, dict):
        return {k: _without_none(v) for k, v in data.items() if v is not None}
    return data
