"""MkDocs hook: the reference pages, generated from the code when the site is built.

A page holding the marker ``<!-- fl:config-reference -->`` gets every key of the experiment
config (`fl.experiment.reference.config_fields`), one table per section; a page holding
``<!-- fl:strategy-reference -->`` gets every strategy name with its options
(`fl.experiment.reference.strategy_reference`). Both read the dataclasses and constructors
themselves, so the reference cannot drift from the schema. The generated benchmark output
(docs/benchmarks.md, written by ``make bench``) is laid out for Markdown on the way: its
fixed-width tables become code blocks and its Markdown tables get the blank lines they need.

The rendering functions take the reference lists as arguments, so tests can call them
without MkDocs (tests/test_docs.py).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from typing import Any

CONFIG_MARKER = "<!-- fl:config-reference -->"
STRATEGY_MARKER = "<!-- fl:strategy-reference -->"
GENERATED_PAGES = {"benchmarks.md"}  # written by `make bench`; laid out by `lay_out_generated`

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def cell(text: str) -> str:
    """`text` as one Markdown table cell: one line, reST ````code```` as Markdown code, and
    ``|``, ``<``, ``*`` escaped outside code spans (inside them the table keeps them)."""
    text = " ".join(str(text).split()).replace("``", "`")
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_escape(text[pos : m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_escape(text[pos:]))
    return "".join(out) or "–"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def code(text: str) -> str:
    """`text` as an inline code span (longer fences when it holds backticks)."""
    ticks = "`" * (max((len(t) for t in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def default_text(value: Any) -> str:
    """A default as a config would spell it: TOML for what TOML can say, else Python."""
    if value is inspect.Parameter.empty:
        return "required"
    if value is None:
        return "`None` (unset)"
    try:
        from fl.schema import toml_value

        return code(toml_value(value))
    except Exception:  # not a TOML scalar or list: a dict, a callable, an object
        if isinstance(value, dict) and not value:
            return code("{}")
        return code(repr(value))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def config_reference(fields: Sequence[Any]) -> str:
    """Markdown for every config key: a heading and a table per section, in schema order."""
    sections: dict[str, list[Any]] = {}
    for f in fields:
        sections.setdefault(f.section, []).append(f)
    out: list[str] = []
    for section, items in sections.items():
        if section:
            out += [f"## `[{section}]`", ""]
            out += [
                f"In a config: the table `[{section}]`; on the command line: "
                f"`--set {section}.<key>=<value>`.",
                "",
            ]
        else:
            out += ["## Top-level keys", ""]
            out += ["Written before any table; on the command line: `--set <key>=<value>`.", ""]
        rows = [(code(f.key), code(f.type), default_text(f.default), cell(f.doc)) for f in items]
        out += _table(("key", "type", "default", "meaning"), rows)
        out.append("")
    return "\n".join(out)


def strategy_reference(strategies: Sequence[Any]) -> str:
    """Markdown for every strategy: a summary table, then each strategy's options."""
    rows = [
        (
            f"[{code(s.name)}](#{_anchor(s.name)})",
            "asynchronous" if s.async_ else "synchronous",
            code(getattr(s, "cls", "")) if getattr(s, "cls", "") else "–",
            cell(s.summary),
        )
        for s in strategies
    ]
    out = [*_table(("name", "kind", "class", "what it is"), rows), ""]
    for s in strategies:
        kind = "asynchronous" if s.async_ else "synchronous"
        cls = f", class `{s.cls}`" if getattr(s, "cls", "") else ""
        out += [f"### `{s.name}` {{ #{_anchor(s.name)} }}", ""]
        out += [cell(s.summary), "", f"*{kind.capitalize()}*{cls}.", ""]
        if s.options:
            out += [
                "Options (`[strategy.options]`, or `--set strategy.options.<option>=...`):",
                "",
            ]
            out += _table(
                ("option", "type", "default", "meaning"),
                [
                    (code(o.name), code(o.type), default_text(o.default), cell(o.doc))
                    for o in s.options
                ],
            )
        else:
            out.append("No options.")
        out.append("")
    return "\n".join(out)


def _anchor(name: str) -> str:
    return "strategy-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _is_table_row(line: str) -> bool:
    return line.lstrip().startswith("|")


def lay_out_generated(markdown: str) -> str:
    """A generated page laid out for Markdown, its text unchanged: runs of plain lines that
    hold fixed-width columns (three spaces in a row) become ``text`` code blocks, and Markdown
    tables are set off by blank lines from the lines around them."""
    lines = markdown.splitlines()
    out: list[str] = []
    i, fence = 0, False
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fence = not fence
        if fence or not line.strip() or line.startswith("#") or _is_table_row(line):
            if (
                _is_table_row(line)
                and not fence
                and out
                and out[-1].strip()
                and not _is_table_row(out[-1])
            ):
                out.append("")
            out.append(line)
            i += 1
            continue
        run = []
        while (
            i < len(lines)
            and lines[i].strip()
            and not lines[i].startswith(("#", "```"))
            and not _is_table_row(lines[i])
        ):
            run.append(lines[i])
            i += 1
        if out and _is_table_row(out[-1]):
            out.append("")
        if any("   " in r for r in run):
            out += ["```text", *run, "```"]
        else:
            out += run
    return "\n".join(out) + ("\n" if markdown.endswith("\n") else "")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill in the reference markers; lay out the generated pages."""
    if CONFIG_MARKER in markdown:
        from fl.experiment.reference import config_fields

        markdown = markdown.replace(CONFIG_MARKER, config_reference(config_fields()))
    if STRATEGY_MARKER in markdown:
        from fl.experiment.reference import strategy_reference as reference

        markdown = markdown.replace(STRATEGY_MARKER, strategy_reference(reference()))
    if page.file.src_uri in GENERATED_PAGES:
        markdown = lay_out_generated(markdown)
    return markdown
