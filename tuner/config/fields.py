"""One field of a config checked: known keys, numbers, choices, builder references, a section's
fields by its rules; every error names the field, the allowed values and the bad one."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from tuner.base.render import did_you_mean, plain
from tuner.base.yamlsafe import shown
from tuner.errors import ConfigError


def _where(path: Path, field_name: str) -> str:
    return f"{path}: {field_name}"


def check_keys(data: Any, allowed: tuple[str, ...], path: Path, section: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(path, section)}: expected a mapping, got {type(data).__name__} "
                          f"{shown(data)}")
    for key in data:
        if key not in allowed:
            shown_key = key if isinstance(key, str) and key.isprintable() and len(key) <= 60 \
                else shown(key)
            name = f"{section}.{shown_key}" if section else shown_key
            raise ConfigError(f"{_where(path, plain(name))}: unknown key"
                              f"{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}")
    return data


def _number(value: Any, where: str, *, integer: bool, minimum: float, allow_none: bool = False,
            strictly_above: bool = False) -> Any:
    if value is None and allow_none:
        return None
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    # nan compares false with everything and inf is no bound: neither is a number here
    if (isinstance(value, bool) or not ok or not math.isfinite(value)
            or (value <= minimum if strictly_above else value < minimum)):
        bound = f"> {minimum}" if strictly_above else f">= {minimum}"
        extra = " or null" if allow_none else ""
        raise ConfigError(f"{where}: expected {kind} {bound}{extra}, got {shown(value)}")
    return value


def choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value is None:
        raise ConfigError(f"{where}: missing; give one of {', '.join(allowed)}")
    if value not in allowed:
        raise ConfigError(f"{where}: {shown(value)} is not allowed{did_you_mean(value, allowed)}"
                          f"; allowed: {', '.join(allowed)}")
    return value


_BUILDER_RE = re.compile(r"^(?P<target>[^:]+):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$")


def _builder(value: Any, where: str, base_dir: Path) -> str:
    if not isinstance(value, str) or not _BUILDER_RE.match(value.strip()):
        raise ConfigError(f"{where}: expected 'file.py:function' or 'package.module:function', "
                          f"got {shown(value)}")
    value = value.strip()
    target = value.split(":", 1)[0]
    if target.endswith(".py"):
        file = (base_dir / target) if not Path(target).is_absolute() else Path(target)
        if not file.is_file():
            raise ConfigError(f"{where}: file {str(file)!r} does not exist (paths are relative to "
                              f"the config file's directory)")
    elif not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", target):
        raise ConfigError(f"{where}: {target!r} is neither a .py file nor an importable "
                          f"module name")
    return value


def _section(cls: type, data: dict[str, Any], path: Path, section: str,
             rules: dict[str, Any]) -> Any:
    names = tuple(f.name for f in dataclasses.fields(cls))
    data = check_keys(data, names, path, section)
    values = {}
    for key, raw in data.items():
        values[key] = rules[key](raw, _where(path, f"{section}.{key}"))
    return cls(**values)


def _int(minimum: int, allow_none: bool = False):
    return lambda v, w: _number(v, w, integer=True, minimum=minimum, allow_none=allow_none)


def _float(minimum: float, allow_none: bool = False, strictly_above: bool = False):
    return lambda v, w: float(x) if (x := _number(v, w, integer=False, minimum=minimum,
                                                   allow_none=allow_none,
                                                   strictly_above=strictly_above)) is not None \
        else None


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {shown(value)}")
    return value


def ratio(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value < 1:
        raise ConfigError(f"{where}: expected a number between 0 and 1 (exclusive), "
                          f"got {shown(value)}")
    return float(value)
