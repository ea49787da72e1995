"""`from_dict` for config dataclasses: keep declared keys, demand required ones, log the rest.

Hub config files carry fields we do not read (`auto_map`, `transformers_version`, ...); they are logged at
debug level, never silently treated as meaningful. A field without a default is required, and its absence
is a ConfigError naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

log = logging.getLogger("llada")
T = TypeVar("T")


def config_from_dict(cls: type[T], raw: dict[str, Any], source: str) -> T:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    missing = [
        name
        for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"{source} lacks required field(s): {', '.join(missing)}",
            hint="the config file is damaged or from another model; re-run `llada download MODEL`",
        )
    ignored = sorted(k for k in raw if k not in fields)
    if ignored:
        log.debug("%s: ignoring fields %s", source, ", ".join(ignored))
    hints = typing.get_type_hints(cls)
    for name in fields:
        if name in raw and not _matches(raw[name], hints.get(name, Any)):
            raise ConfigError(
                f"{source}: field {name} is {raw[name]!r}, which is not {_describe(hints[name])}",
                hint="the config file is damaged or from another model; re-run `llada download MODEL`",
            )
    try:
        return cls(**{k: v for k, v in raw.items() if k in fields})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source} holds an unusable value: {exc}") from None


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a dataclass field's annotation (int is not bool; float takes int)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    names = [getattr(h, "__name__", str(h)) for h in (typing.get_args(hint) or (hint,))]
    return " or ".join("null" if n == "NoneType" else n for n in names)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON config file with a clear error for a broken one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing", hint="re-run `llada download MODEL`") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}", hint="re-run `llada download MODEL`") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data
