"""`from_dict` for config dataclasses: keep declared keys, demand required ones, log the rest.

Hub config files carry fields we do not read (`auto_map`, `transformers_version`, ...); they are logged at
debug level, never silently treated as meaningful. A field without a default is required, and its absence
is a ConfigError naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
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
    try:
        return cls(**{k: v for k, v in raw.items() if k in fields})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source} holds an unusable value: {exc}") from None


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
