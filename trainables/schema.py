"""Typed nested dicts -> frozen, validated dataclasses; errors that name the key path.

The machinery behind every config and every result record of the project:

- ``config_from_dict`` builds a config (``trainables.config``, the sweep spec) from YAML-like
  dicts plus dotted-key overrides, checking unknown keys (with a close-match suggestion), types
  and the dataclass's own range checks, and raises one :class:`ConfigError` naming the key, the
  value and what is allowed.
- ``read_record`` reads a result file (``run.json``, ``summary.json``, ``verification.json``)
  into its record dataclass with the same checks, stricter (no YAML-style numbers in strings,
  every required key present, lists and mapping values checked too), and raises one
  :class:`~trainables.files.ResultFileError` naming the file and the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range.

    Attributes:
        key: Dotted path of the offending key (``"model.z_i_dim"``), or ``""`` for the whole file.
        message: What is wrong and what is allowed.
        source: The file the value came from, if any.
    """

    def __init__(self, key: str, message: str, source: str | None = None):
        self.key, self.message, self.source = key, message, source
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)

    def under(self, prefix: str) -> ConfigError:
        """Return the same error with ``prefix`` prepended to its key path."""
        return ConfigError(_join(prefix, self.key), self.message, self.source)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError(key, "got <value>; allowed: <allowed>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(key, f"got {value!r}; allowed: {allowed}")


def config_from_dict(
    cls: type[T],
    raw: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> T:
    """Build and validate a config dataclass from a nested dict plus dotted-key overrides.

    Args:
        cls: The config class (:class:`TrainConfig`, :class:`DataConfig`, ...).
        raw: Nested values, as read from YAML; missing keys take the defaults.
        overrides: Dotted keys whose values replace those in ``raw``.
        source: Where ``raw`` came from, for error messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: A key is unknown or a value has the wrong type or is out of range.
    """
    try:
        merged = apply_overrides(raw, overrides or {})
        return _build(cls, merged, "", strict=False)
    except ConfigError as err:
        raise ConfigError(err.key, err.message, source) from None


def record_from_dict(cls: type[T], raw: Any) -> T:
    """Build a result record dataclass from parsed JSON, checking every key and type.

    Unlike configs, a record has no YAML leniency: numbers must be JSON numbers, keys without a
    default must be present, and lists and mapping values are checked against their element
    types. A ``float`` field takes JSON integers too (``1`` and ``1.0`` are the same value).

    Raises:
        ConfigError: A key is missing, unknown or of the wrong type (``key`` is its path).
    """
    return _build(cls, raw, "", strict=True)


def read_record(cls: type[T], path: str | Path) -> T:
    """Read a JSON result file into its record dataclass.

    Raises:
        ResultFileError: The file is missing, not JSON, or not of the record's shape; the
            message names the file and the offending key (one line).
    """
    from trainables.files import ResultFileError

    try:
        payload = Path(path).read_bytes()
    except FileNotFoundError:
        raise ResultFileError(path, "file not found") from None
    except OSError as err:
        raise ResultFileError(path, f"unreadable ({err})") from None
    return parse_record(cls, payload, str(path))


def parse_record(cls: type[T], payload: bytes, source: str) -> T:
    """Parse a JSON result file's bytes into its record dataclass; errors name ``source``.

    Raises:
        ResultFileError: Not JSON, or not of the record's shape (naming the key).
    """
    from trainables.files import ResultFileError

    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultFileError(source, f"corrupt JSON ({err})") from None
    try:
        return record_from_dict(cls, raw)
    except ConfigError as err:
        where = f"key {err.key!r}: " if err.key else ""
        name = _record_name(cls)
        raise ResultFileError(source, f"not a valid {name}: {where}{err.message}") from None


def _record_name(cls: type) -> str:
    return getattr(cls, "FILE_NAME", cls.__name__)


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``raw`` with each dotted-key override set in it."""
    merged = _deep_copy(raw)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                key = ".".join(parents[: depth + 1])
                raise ConfigError(key, f"is {child!r}, so it has no key {dotted!r}")
            node = child
        node[leaf] = value
    return merged


def config_to_dict(config: Any) -> dict[str, Any]:
    """Return a config as plain nested dicts and lists, ready for JSON or YAML."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def flatten_dict(tree: Mapping[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``{"model.z_i_dim": 30, ...}`` (the inverse of overrides)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat |= flatten_dict(value, sep, name)
        else:
            flat[name] = value
    return flat


def config_keys(cls: type) -> list[str]:
    """List the dotted paths of every leaf field of a config class (``"model.z_i_dim"``, ...)."""
    keys = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += [f"{f.name}.{sub}" for sub in config_keys(hints[f.name])]
        else:
            keys.append(f.name)
    return keys


def field_type(cls: type, dotted: str) -> Any:
    """Return the annotation of a dotted leaf key of a config class (``"model.z_i_dim"``: int).

    Raises:
        KeyError: No such key.
    """
    head, _, rest = dotted.partition(".")
    hints = get_type_hints(cls)
    if head not in hints:
        raise KeyError(dotted)
    if rest:
        if not dataclasses.is_dataclass(hints[head]):
            raise KeyError(dotted)
        return field_type(hints[head], rest)
    return hints[head]


def suggest(key: str, choices: list[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- internals -----------------------------------------------------------------------------


def read_yaml(path: str | Path | None, allow_empty: bool = True) -> dict[str, Any]:
    """Read a YAML mapping (``{}`` for no path, or an empty file where ``allow_empty``).

    A key given twice in one mapping is an error: YAML would silently keep the last value.

    Raises:
        ConfigError: The file is missing, not a text file, not YAML, not a mapping, holds a key
            twice, or is empty where that is not allowed (naming the file, one line).
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except FileNotFoundError:
        raise ConfigError("", "file not found", str(path)) from None
    except IsADirectoryError:
        raise ConfigError("", "is a directory, not a YAML file", str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("", "not a text file (is it binary?)", str(path)) from None
    except OSError as err:
        raise ConfigError("", f"unreadable ({err.strerror or err})", str(path)) from None
    except yaml.YAMLError as err:
        raise ConfigError("", f"invalid YAML: {_one_line(err)}", str(path)) from None
    if raw is None:
        if not allow_empty:
            raise ConfigError("", "the file is empty: it must hold at least one setting", str(path))
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("", f"expected a mapping of keys, got {type(raw).__name__}", str(path))
    return raw


def parse_yaml_value(text: str) -> Any:
    """Parse one value as YAML (``[64, 64]``, ``1e-3``, ``true``), as in a config file.

    Raises:
        ValueError: The text is not valid YAML (the message is one line).
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML: {_one_line(err)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {seen[key]} and {line})"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _one_line(err: Exception) -> str:
    """A YAML error's message in one line, with the line and column where it was found."""
    mark = getattr(err, "problem_mark", None)
    what = getattr(err, "problem", None) or str(err)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{what}{where}".split())


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def _build(cls: type[T], raw: Any, where: str, strict: bool) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"expected a mapping, got {_shown(raw)}")
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    values = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(_join(where, str(key)), "unknown key" + suggest(str(key), names))
        values[key] = _coerce(hints[key], value, _join(where, key), strict)
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in values:
            raise ConfigError(_join(where, f.name), "missing")
    try:
        return cls(**values)
    except ConfigError as err:
        raise err.under(where) from None


def _coerce(tp: Any, value: Any, key: str, strict: bool) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, strict)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms[:-1]:  # several types (records only): the first that fits
            try:
                return _coerce(arm, value, key, strict)
            except ConfigError:
                continue
        return _coerce(arms[-1], value, key, strict)
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"got {_shown(value)}; allowed: {', '.join(map(str, args))}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {_shown(value)}")
        if not strict:
            return _deep_copy(value)
        return {
            _coerce(args[0], k, f"{key}.{k}", strict): _coerce(args[1], v, f"{key}.{k}", strict)
            for k, v in value.items()
        }
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {_shown(value)}")
        if origin is list or args[-1] is Ellipsis:
            items = [_coerce(args[0], v, f"{key}[{i}]", strict) for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        if len(value) != len(args):
            raise ConfigError(key, f"expected a list of {len(args)} values, got {_shown(value)}")
        return tuple(
            _coerce(a, v, f"{key}[{i}]", strict)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    return _coerce_scalar(tp, value, key, strict)


def _coerce_scalar(tp: type, value: Any, key: str, strict: bool) -> Any:
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and not isinstance(value, bool):
        number = value if isinstance(value, int | float) else None
        if isinstance(value, str) and not strict:  # YAML 1.1 reads "1e-3" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None and (strict or math.isfinite(number)):
            return float(number)  # a record may hold inf or NaN (a drift, a diverged loss)
        if number is not None:
            raise ConfigError(key, f"got {_shown(value)}; allowed: a finite number")
    if tp is str and isinstance(value, str):
        return value
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise ConfigError(key, f"expected {names[tp]}, got {_shown(value)}")


def _shown(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters: an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 4]} ...{text[-1]}"
