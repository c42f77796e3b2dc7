"""Build `Settings` from layers: defaults, the --dev profile, a TOML file, then environment overrides.

This module owns reading and validating; the shapes live in `config.settings`. Every problem becomes one
`ConfigError` naming the key path, so the command line can print it and exit 2 without a traceback.
Unknown keys are errors: a typo must never be silently ignored.

Environment overrides: `MAILSERVER_<SECTION>__<KEY>[__<KEY>...]=value`, for example
`MAILSERVER_SMTP__MX__PORT=2525` or `MAILSERVER_DATABASE__DSN=postgresql://...`. The value is read as a
TOML value when it parses as one (numbers, booleans, `["a", "b"]`), else as a plain string.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.settings import DEV_PROFILE, Settings

ENV_PREFIX = "MAILSERVER_"
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class ConfigError(Exception):
    """A configuration problem, already phrased for the admin: `key.path: what is wrong`."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


def load_settings(path: str | Path | None = None, *, dev: bool = False,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings: defaults, then the dev profile (if asked), the file (if given), then the environment."""
    data: dict[str, Any] = {}
    if dev:
        _merge(data, copy.deepcopy(DEV_PROFILE))
    if path is not None:
        _merge(data, read_toml(path))
    env = environ if environ is not None else {}
    _merge(data, _env_layer(env))
    return _build(Settings(), data, "")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read one TOML file, turning I/O and syntax errors into ConfigError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError("", f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError("", f"config file {path}: cannot be read ({exc.strerror})") from None
    # TOML is UTF-8 (TOML 1.0 "Spec"). A leading byte-order mark, as some Windows editors write, is
    # dropped rather than reported as "Invalid statement" at line 1.
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError("", f"config file {path}: not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"config file {path}: invalid TOML: {exc}") from None


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    top = {f.name for f in dataclasses.fields(Settings)}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):]
        if "__" not in rest and rest.lower() not in top:
            # Not an override (MAILSERVER_CONFIG, a test's own variable) unless it starts like one:
            # MAILSERVER_SMTP_MX_PORT, with single underscores, would otherwise be ignored in silence.
            if any(rest.lower().startswith(f"{section}_") for section in top):
                raise ConfigError(name, "unknown setting: sections and keys are joined by '__' "
                                  "(e.g. MAILSERVER_SMTP__MX__PORT)")
            continue
        parts = [p.lower() for p in rest.split("__")]
        if any(not p for p in parts):
            raise ConfigError(name, "malformed environment override name")
        node = layer
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(name, "conflicting environment overrides")
        node[parts[-1]] = _env_value(raw)
    return layer


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def _build(base: Any, data: Mapping[str, Any], prefix: str) -> Any:
    """Return `base` with the values in `data` replaced, validated; nested tables keep their own defaults."""
    cls = type(base)
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip("."), "must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{prefix}{key}", "unknown setting")
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if name not in data:
            continue
        raw = data[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(getattr(base, name), raw, key + ".")
            continue
        value = _coerce(tp, raw, key)
        check = fld.metadata.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                raise ConfigError(key, problem)
        values[name] = value
    result = dataclasses.replace(base, **values)
    cross_check = getattr(result, "cross_check", None)
    problem = cross_check() if cross_check is not None else None
    if problem:
        raise ConfigError(f"{prefix}{problem[0]}", problem[1])
    return result


def _coerce(tp: Any, raw: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1]
        if not isinstance(raw, list):
            raise ConfigError(key, f"must be a list of {item_tp.__name__}")
        return [_coerce(item_tp, item, f"{key}[{i}]") for i, item in enumerate(raw)]
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(raw, Mapping):
            raise ConfigError(key, f"must be a table of {value_tp.__name__}")
        # Keys come from TOML, so they are strings already; a value is checked like any other setting.
        return {_coerce(key_tp, k, key): _coerce(value_tp, v, f"{key}.{k}") for k, v in raw.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(key, "unsupported type")  # pragma: no cover - not used by Settings
    if tp is bool:
        if not isinstance(raw, bool):
            raise ConfigError(key, "must be true or false")
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(key, "must be an integer")
        # TOML 1.0: integers are 64-bit signed; tomllib reads any size, and a bigger one fails far
        # from here (a database parameter, a socket option) with a traceback.
        if not INT_MIN <= raw <= INT_MAX:
            raise ConfigError(key, f"must be between {INT_MIN} and {INT_MAX}")
        return raw
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(key, "must be a number")
        if not math.isfinite(raw):  # nan passes no comparison, inf every upper-bound-free check
            raise ConfigError(key, "must be a finite number")
        if not INT_MIN <= raw <= INT_MAX:
            raise ConfigError(key, f"must be between {INT_MIN} and {INT_MAX}")
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(key, "must be a string")
        if "\0" in raw:
            raise ConfigError(key, "must not contain NUL")
        return raw
    raise ConfigError(key, "unsupported type")  # pragma: no cover


def iter_documented(instance: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf setting as (key path, default, documentation), for the reference doc and its test."""
    if instance is None:
        instance = Settings()
    out: list[tuple[str, Any, str]] = []
    for fld in dataclasses.fields(instance):
        value = getattr(instance, fld.name)
        if dataclasses.is_dataclass(value):
            out.extend(iter_documented(value, f"{prefix}{fld.name}."))
        else:
            out.append((f"{prefix}{fld.name}", value, fld.metadata.get("doc", "")))
    return out
