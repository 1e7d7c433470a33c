"""Typed loading of nested dataclasses from plain dicts (TOML tables, `--set` overrides).

One schema serves the TOML file, `fl-sim run --set`, and Flower's flat `run_config`: every
field is declared once on a dataclass, unknown keys are errors, and a wrong type or value
raises `ConfigError` naming the dotted key and the value.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Union

T = TypeVar("T")


_FREE = object()


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key and the value.

    ``ConfigError(key, value, rule)`` reads ``"{key} = {value!r} is invalid: must be {rule}"``
    and keeps ``key`` (the dotted config key, e.g. ``"strategy.options.proximal_mu"``),
    ``value`` and ``rule`` as attributes. Where no single key applies (an unknown key, a file
    that is not TOML) ``ConfigError(message)`` takes a free message; then ``key``, ``value``
    and ``rule`` are None. ``message=`` overrides the text but keeps the attributes.
    """

    def __init__(
        self, key: str, value: Any = _FREE, rule: str | None = None, *, message: str | None = None
    ) -> None:
        if value is _FREE and rule is None:
            self.key: str | None = None
            self.value: Any = None
            self.rule: str | None = None
            text = key if message is None else message
        else:
            self.key, self.value, self.rule = key, None if value is _FREE else value, rule
            text = message or f"{key} = {self.value!r} is invalid: must be {rule}"
        super().__init__(text)

    def __reduce__(self) -> Any:  # picklable across worker processes
        if self.key is None:
            return (ConfigError, (str(self),))
        return (_rebuild, (self.key, self.value, self.rule, str(self)))

    def rekeyed(self, key: str) -> ConfigError:
        """The same error under another key (e.g. ``PopulationConfig.kind`` -> ``devices.kind``)."""
        return ConfigError(key, self.value, self.rule)


def _rebuild(key: str, value: Any, rule: str | None, message: str) -> ConfigError:
    return ConfigError(key, value, rule, message=message)


def rekey(exc: ConfigError, owner: str, where: str) -> ConfigError:
    """``exc`` with a key under ``owner.`` (a class name or section) moved under ``where.``."""
    if exc.key is None or not where:
        return exc
    for prefix in (f"{owner}.", f"{where}."):
        if exc.key.startswith(prefix):
            return exc.rekeyed(f"{where}.{exc.key[len(prefix) :]}")
    return exc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert `value` to the annotated type `tp`, or raise ConfigError at `where`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (value == "none" and str not in args)):
            return None  # `--set key=none` unsets an optional number
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1 and (type(None) not in args or errors[0].key != where):
            raise errors[0]  # one type, or an element of a list: that error says it best
        rules = [e.rule or str(e) for e in errors]
        if type(None) in args:
            rules.append("none")
        raise ConfigError(where, value, " or ".join(rules))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(where, value, "a table")
        return from_dict(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str) and value.strip().startswith("["):
            value = parse_value(value)  # Flower's run_config has no lists: "[32, 16]"
        if not isinstance(value, list | tuple):
            raise ConfigError(where, value, "a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(where, value, f"a list of {len(args)} values")
        return tuple(
            coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin in (list, Sequence) or tp is list:
        args = typing.get_args(tp)
        if isinstance(value, str) and value.strip().startswith("["):
            value = parse_value(value)
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(where, value, "a list")
        item = args[0] if args else Any
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is Callable:
        raise ConfigError(where, value, "a Python callable (a config cannot give one)")
    if origin in (dict, Mapping) or tp is dict:
        if isinstance(value, str) and value.strip().startswith("{"):
            value = parse_value(value)  # Flower's run_config has no tables: "{policy = 'fast'}"
        if not isinstance(value, Mapping):
            raise ConfigError(where, value, "a table")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(where, value, "an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(where, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(where, value, "a string")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(where, value, f"a {_type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and bad values are ConfigErrors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {prefix}{unknown[0]!r} (known keys: {known})")
    kwargs = {k: coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise rekey(exc, cls.__name__, where) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """Plain nested dict/list view of a dataclass (tuples become lists), for TOML/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_value(text: str) -> Any:
    """Parse a `--set key=value` value as TOML (numbers, booleans, lists), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c = value` in a nested dict, creating tables on the way."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {part!r} is a value, not a table")
        node = nxt
    node[parts[-1]] = value


# Flower's run_config holds scalars only: lists, empty tables and None travel as tagged strings.
_LIST, _TABLE, _NONE = "\x00list:", "\x00table", "\x00none"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a.b': scalar}; lists, empty tables and None become tagged strings that
    no user value can collide with (Flower run_config values must be scalars)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, f"{name}."))
            else:
                out[name] = _TABLE
        elif isinstance(value, list):
            out[name] = _LIST + toml_value(value)
        elif value is None:
            out[name] = _NONE
        else:
            out[name] = value
    return out


def flatten_plain(tree: Mapping[str, Any], free_tables: set[str], prefix: str = "") -> dict:
    """Nested dict -> {'a.b': scalar} in a form a person types into Flower's run_config:
    lists as TOML strings ("[64]"), None as "none", and the free-form tables named in
    `free_tables` (e.g. "strategy.options") as one inline-table string ("{policy = 'fast'}"),
    so the set of keys never depends on the values (Flower rejects override keys its defaults
    lack). `unflatten` + the schema read both this form and `flatten`'s."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if name in free_tables:
            out[name] = toml_inline(value or {})
        elif isinstance(value, Mapping):
            out.update(flatten_plain(value, free_tables, f"{name}."))
        elif isinstance(value, list):
            out[name] = toml_value(value)
        elif value is None:
            out[name] = "none"
        else:
            out[name] = value
    return out


def toml_inline(value: Any) -> str:
    """A value as inline TOML (tables as `{k = v, ...}`)."""
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{toml_value(k)} = {toml_inline(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    return toml_value(value)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten`."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        if isinstance(value, str) and value.startswith(_LIST):
            value = tomllib.loads(f"v = {value[len(_LIST) :]}")["v"]
        elif value == _NONE:
            value = None
        elif value == _TABLE:
            value = {}
        set_dotted(tree, key, value)
    return _drop_none(tree)


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in tree.items() if v is not None
    }


_TOML_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    **{chr(i): f"\\u{i:04x}" for i in [*range(0x20), 0x7F]},
}


def toml_value(value: Any) -> str:
    """One TOML value (scalars and lists) as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(c, c) for c in value) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def to_toml(tree: Mapping[str, Any]) -> str:
    """Write a nested dict as TOML (tables after scalars); None values are left out."""
    lines: list[str] = []

    def emit(node: Mapping[str, Any], path: str) -> None:
        scalars = [(k, v) for k, v in node.items() if not isinstance(v, Mapping) and v is not None]
        tables = [(k, v) for k, v in node.items() if isinstance(v, Mapping)]
        if path and (scalars or not tables):
            lines.append(f"\n[{path}]")
        for k, v in scalars:
            lines.append(f"{k} = {toml_value(v)}")
        for k, v in tables:
            emit(v, f"{path}.{k}" if path else k)

    emit(tree, "")
    return "\n".join(lines).lstrip("\n") + "\n"
