"""What a user can configure, read from the code itself: every config key with its type,
default and meaning, and every strategy with its options.

`fl-sim config --defaults`, `fl-sim strategies` and the documentation's reference pages are all
built from here, so none of them can drift from the schema. A field's meaning is its trailing
``# comment`` in the dataclass, else its entry in the class docstring's ``Attributes:`` section;
a strategy option's meaning is its entry in the numpydoc ``Parameters`` section of the class
(or of the base class that declares it).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fl.experiment.config import ExperimentConfig
from fl.schema import toml_inline

__all__ = [
    "ConfigField",
    "OptionInfo",
    "StrategyInfo",
    "config_fields",
    "default_config_toml",
    "strategy_reference",
]


@dataclass(frozen=True)
class ConfigField:
    """One key of the experiment config: ``[section] key = default  # doc``."""

    section: str  # "" for top-level keys, else the table name ("data", "devices", ...)
    key: str
    type: str
    default: Any
    doc: str

    @property
    def dotted(self) -> str:
        """The key as `--set` takes it: ``data.alpha``."""
        return f"{self.section}.{self.key}" if self.section else self.key


@dataclass(frozen=True)
class OptionInfo:
    """One constructor option of a strategy (``strategy.options.<name>``)."""

    name: str
    type: str
    default: Any  # inspect.Parameter.empty if required
    doc: str


@dataclass(frozen=True)
class StrategyInfo:
    """A strategy name a config may use, what it is, and its options."""

    name: str
    cls: str  # the class it builds, e.g. "fl.strategies.tifl.TiFL"
    summary: str
    async_: bool
    options: list[OptionInfo]


def type_name(tp: Any) -> str:
    """An annotation as a reader writes it: ``float | None``, ``tuple[int, ...]``."""
    if isinstance(tp, str):
        return tp
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin is not None:
        args = typing.get_args(tp)
        if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            return " | ".join(type_name(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{name}[{inner}]"
    return getattr(tp, "__qualname__", None) or str(tp).replace("typing.", "")


def _field_comments(cls: type) -> dict[str, str]:
    """Trailing ``# comment`` of each ``name: type = default`` line of a dataclass body."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pattern = re.compile(r"^\s+(\w+)\s*:")
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        line = lines[tok.start[0] - 1]
        match = pattern.match(line)
        if match and tok.start[1] > match.end():  # a trailing comment, not a comment line
            out.setdefault(match.group(1), tok.string.lstrip("#").strip())
    return out


def _docstring_attributes(cls: type) -> dict[str, str]:
    """Entries of the ``Attributes:`` section of a class docstring (``a, b: text`` included)."""
    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    in_section, indent = False, 0
    current: list[str] = []
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_section = True
            continue
        if not in_section:
            continue
        if line and not line.startswith(" "):
            break  # the section ended
        stripped = line.strip()
        match = re.match(r"^(\s+)([\w, ]+):\s*(.*)$", line)
        if match and (not current or len(match.group(1)) <= indent):
            indent = len(match.group(1))
            current = [n.strip() for n in match.group(2).split(",")]
            for name in current:
                out[name] = match.group(3)
        elif stripped and current:
            for name in current:
                out[name] = f"{out[name]} {stripped}".strip()
    return out


def _field_docs(cls: type) -> dict[str, str]:
    """A dataclass's field docs: its docstring's entries, else the fields' trailing comments."""
    doc = inspect.getdoc(cls) or ""
    return {**_field_comments(cls), **_parameters_section(doc), **_docstring_attributes(cls)}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _walk(cls: type, section: str) -> Iterator[ConfigField]:
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    nested = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((f.name, tp))
            continue
        yield ConfigField(section, f.name, type_name(tp), _default(f), docs.get(f.name, ""))
    for name, tp in nested:
        yield from _walk(tp, f"{section}.{name}" if section else name)  # type: ignore[arg-type]


def config_fields() -> list[ConfigField]:
    """Every key of the experiment config, top-level keys first, then each section in the order
    `ExperimentConfig` declares them."""
    return list(_walk(ExperimentConfig, ""))


def _comment(text: str, width: int = 96) -> list[str]:
    """`text` as ``# `` lines of at most `width` characters."""
    words, lines, line = text.split(), [], "#"
    for word in words:
        if len(line) + 1 + len(word) > width and line != "#":
            lines.append(line)
            line = "#"
        line += " " + word
    if line != "#":
        lines.append(line)
    return lines


def default_config_toml() -> str:
    """A complete TOML config of every key at its default, each with a comment saying what it
    is. Keys whose default is None are commented out (TOML has no null) with what None means."""
    out = [
        "# Every key of an fl experiment config, at its default (`fl-sim config --defaults`).",
        "# Keep the keys you change; `fl-sim run` fills the rest from these defaults.",
    ]
    section = None
    for f in config_fields():
        if f.section != section:
            section = f.section
            if section:
                out += ["", f"[{section}]"]
            else:
                out.append("")
        doc = f"{f.doc} ({f.type})" if f.doc else f"({f.type})"
        out += _comment(doc)
        if f.default is None:
            out.append(f"# {f.key} =   # unset (None)")
        else:
            out.append(f"{f.key} = {toml_inline(f.default)}")
    return "\n".join(out) + "\n"


def _parameters_section(doc: str) -> dict[str, str]:
    """``name : type`` entries of a numpydoc ``Parameters`` section, with their descriptions."""
    lines = doc.splitlines()
    out: dict[str, str] = {}
    starts = [  # "Parameters", or "Parameters (beyond FedAvg's)"
        i
        for i, line in enumerate(lines[:-1])
        if line.strip().startswith("Parameters") and set(lines[i + 1].strip()) == {"-"}
    ]
    if not starts:
        return out
    body = lines[starts[0] + 2 :]
    name: str | None = None
    for i, line in enumerate(body):
        if i + 1 < len(body) and body[i + 1].strip() and set(body[i + 1].strip()) == {"-"}:
            break  # the next section's title
        match = re.match(r"^(\w+)\s*(:.*)?$", line)  # "name : type", or a bare "name"
        if match:
            name = match.group(1)
            out[name] = ""
        elif name and line.startswith(" ") and line.strip():
            out[name] = f"{out[name]} {line.strip()}".strip()
    return out


def _numpydoc_parameters(cls: type) -> dict[str, str]:
    """Documented constructor options of `cls` and of its bases (the nearest class wins)."""
    out: dict[str, str] = {}
    for klass in getattr(cls, "__mro__", (cls,)):
        for name, text in _parameters_section(inspect.getdoc(klass) or "").items():
            out.setdefault(name, text)
    return out


def _summary(cls: Any) -> str:
    doc = inspect.getdoc(cls) or ""
    first = doc.split("\n\n", 1)[0]
    return " ".join(first.split())


def strategy_reference() -> list[StrategyInfo]:
    """Every strategy name of `fl.strategies.registry.STRATEGIES` with the options a config
    may give it (callables, such as Flower's metric aggregators, are left out)."""
    from fl.strategies.registry import ASYNC_STRATEGIES, STRATEGIES, strategy_options

    out = []
    for name, factory in STRATEGIES.items():
        docs = _numpydoc_parameters(factory)  # type: ignore[arg-type]
        docs.setdefault("aggregator_options", "Options of `aggregator` (a table), in a config.")
        options = [  # a callable (a metrics aggregator) cannot come from a config
            OptionInfo(p.name, type_name(p.annotation), p.default, docs.get(p.name, ""))
            for p in strategy_options(name).values()
            if "Callable" not in type_name(p.annotation)
        ]
        out.append(
            StrategyInfo(
                name=name,
                cls=f"{factory.__module__}.{getattr(factory, '__qualname__', factory)}",
                summary=_summary(factory),
                async_=name in ASYNC_STRATEGIES,
                options=options,
            )
        )
    return out
