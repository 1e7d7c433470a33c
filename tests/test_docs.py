"""The documentation site (mkdocs.yml, docs/*.md) shows what the code and the experiments say.

Every table of results on a page is included at build time from the file its experiment wrote
(docs/*_table.md, docs/benchmarks.md), never pasted; the reference pages are generated from
the schema; every page is in the nav; the TOML examples load; the fl-sim commands the pages
and the README name exist with the options they use; nothing points outside the repository.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from html import escape as html_escape
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GENERATED_TABLES = sorted(DOCS.glob("*_table.md"))  # written by the experiment scripts
GENERATED = [*GENERATED_TABLES, DOCS / "benchmarks.md"]  # and by `make bench`
PAGES = sorted(p for p in DOCS.glob("*.md") if p not in GENERATED)  # written by hand
SNIPPET = re.compile(r'^-{1,}8<-{1,}[ \t]+"([^"]+)"[ \t]*$', re.M)
FORBIDDEN = re.compile(r"issue [0-9]|issue #|the issue|research|DESIGN\.md|shared/|§", re.I)


def _yaml_tolerant_load(path: Path) -> dict[str, Any]:
    """mkdocs.yml as a dict; mkdocs' own tags (`!relative`) read as plain strings."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
        return f"!{suffix} {loader.construct_scalar(node)}"  # type: ignore[arg-type]

    Loader.add_multi_constructor("!", tag)
    return yaml.load(path.read_text(), Loader=Loader)


CONFIG = _yaml_tolerant_load(ROOT / "mkdocs.yml")


def _nav_files(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in _nav_files(item)]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in _nav_files(value)]
    return []


def hook() -> ModuleType:
    """docs/hooks/reference.py, the MkDocs hook, imported by path (it is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "docs_hook_reference", DOCS / "hooks/reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(text: str) -> list[str]:
    """The rows of every Markdown table in `text`, stripped, separator rows left out."""
    rows = [line.strip() for line in text.splitlines() if line.lstrip().startswith("|")]
    return [r for r in rows if not re.fullmatch(r"[|:\- ]+", r)]


def cells(row: str) -> list[str]:
    """The cells of a table row as Markdown splits them: on ``|`` outside code spans and not
    escaped."""
    out, cell, tick, i = [], "", False, 0
    body = row.strip().removeprefix("|").removesuffix("|")
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            cell, i = cell + body[i : i + 2], i + 2
            continue
        if c == "`":
            tick = not tick
        if c == "|" and not tick:
            out.append(cell.strip())
            cell = ""
        else:
            cell += c
        i += 1
    return [*out, cell.strip()]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```", text, re.S | re.M)


# --- the site's structure -------------------------------------------------------------------


def test_the_config_builds_from_docs_with_the_hook_and_snippets() -> None:
    assert CONFIG["docs_dir"] == "docs"
    assert CONFIG["theme"]["name"] == "material"
    assert CONFIG["hooks"] == ["docs/hooks/reference.py"]
    (hook_path,) = CONFIG["hooks"]
    assert (ROOT / hook_path).is_file()
    extensions = {
        (ext if isinstance(ext, str) else next(iter(ext))): ext
        for ext in CONFIG["markdown_extensions"]
    }
    snippets = extensions["pymdownx.snippets"]["pymdownx.snippets"]
    assert snippets["check_paths"] is True  # a missing table fails the build
    assert snippets["base_path"] == ["!relative $config_dir"]
    assert "*_table.md" in CONFIG["exclude_docs"]


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_files(CONFIG["nav"])
    assert len(nav) == len(set(nav)), "a page is twice in the nav"
    for name in nav:
        assert (DOCS / name).is_file(), f"nav names {name}, which does not exist"
    missing = {p.name for p in PAGES} - set(nav)
    assert not missing, f"pages missing from the nav: {sorted(missing)}"
    assert "benchmarks.md" in nav  # the generated benchmark output is a page as it was written
    assert not {p.name for p in GENERATED_TABLES} & set(nav)  # the table fragments are not


# --- tables come from the files the experiments wrote ---------------------------------------


def test_no_page_pastes_a_row_of_a_generated_table() -> None:
    generated = {row: path.name for path in GENERATED for row in table_rows(path.read_text())}
    assert len(generated) > 100
    for page in [*PAGES, README, ROOT / "CHANGELOG.md"]:
        text = page.read_text()
        if page == README:  # the README's include blocks are checked in test_readme.py
            text = re.sub(r"<!-- include: .*?<!-- end include -->", "", text, flags=re.S)
        pasted = [r for r in table_rows(text) if r in generated]
        assert not pasted, (
            f"{page.name} pastes rows of {generated[pasted[0]]}: include the file instead "
            f"(first: {pasted[0]})"
        )


def test_every_snippet_names_a_file_that_exists() -> None:
    found = 0
    for page in PAGES:
        for name in SNIPPET.findall(page.read_text()):
            found += 1
            assert (ROOT / name).is_file(), f"{page.name} includes {name}, which does not exist"
    assert found >= len(GENERATED_TABLES)


def test_every_generated_table_is_shown_by_a_page() -> None:
    included = {name for page in PAGES for name in SNIPPET.findall(page.read_text())}
    for path in GENERATED_TABLES:
        assert f"docs/{path.name}" in included, f"no page includes docs/{path.name}"


def test_tables_are_included_only_at_the_start_of_a_line() -> None:
    """A snippet marker anywhere else would be shown as text (or silently included)."""
    for page in PAGES:
        for line in page.read_text().splitlines():
            if "--8<--" in line:
                assert SNIPPET.match(line) or "`--8<--`" in line, f"{page.name}: {line!r}"


# --- the generated reference pages ----------------------------------------------------------


def test_the_reference_pages_hold_their_markers() -> None:
    h = hook()
    assert h.CONFIG_MARKER in (DOCS / "configuration.md").read_text()
    assert h.STRATEGY_MARKER in (DOCS / "strategies.md").read_text()


def test_the_config_reference_lists_every_key_under_its_section() -> None:
    from fl.experiment.reference import config_fields

    fields = config_fields()
    text = hook().config_reference(fields)
    sections = re.split(r"^## ", text, flags=re.M)
    by_title = {s.splitlines()[0]: s for s in sections if s.strip()}
    for f in fields:
        title = f"`[{f.section}]`" if f.section else "Top-level keys"
        assert title in by_title, f"no section {title}"
        assert f"| `{f.key}` | `{f.type}` |" in by_title[title], f"{f.dotted} is missing"
    rows = [r for r in table_rows(text) if not r.startswith("| key |")]
    assert len(rows) == len(fields)
    for row in rows:
        assert len(cells(row)) == 4, f"a cell holds an unescaped |: {row}"


def test_the_strategy_reference_lists_every_strategy_and_option() -> None:
    from fl.experiment.reference import strategy_reference

    infos = strategy_reference()
    text = hook().strategy_reference(infos)
    assert {"tifl", "adasgd", "bgmd", "geomedian", "fedbuff", "fedavg"} <= {i.name for i in infos}
    for info in infos:
        heading = f"### `{info.name}` {{ #strategy-{info.name} }}"
        assert heading in text, f"no section for {info.name}"
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        for opt in info.options:
            assert f"| `{opt.name}` |" in section, f"{info.name}: option {opt.name} is missing"


def test_cells_escape_pipes_outside_code_and_keep_them_inside() -> None:
    h = hook()
    assert h.cell("``a | b`` or c | d") == "`a | b` or c \\| d"
    assert h.cell("") == "–"
    assert h.cell("x <y>") == "x &lt;y>"


def test_defaults_are_written_as_a_config_writes_them() -> None:
    import inspect

    h = hook()
    assert h.default_text(True) == "`true`"
    assert h.default_text((16, 32)) == "`[16, 32]`"
    assert h.default_text("mlp") == '`"mlp"`'
    assert h.default_text(None) == "`None` (unset)"
    assert h.default_text(inspect.Parameter.empty) == "required"
    assert h.default_text({}) == "`{}`"


def test_the_generated_benchmark_page_is_laid_out_with_its_text_unchanged() -> None:
    h = hook()
    source = (DOCS / "benchmarks.md").read_text()
    laid_out = h.lay_out_generated(source)

    def text(md: str) -> list[str]:
        return [line for line in md.splitlines() if line.strip() and not line.startswith("```")]

    assert text(laid_out) == text(source)
    assert table_rows(laid_out) == table_rows(source)
    lines = laid_out.splitlines()
    for i, line in enumerate(lines[1:], 1):  # every Markdown table starts after a blank line
        if line.startswith("|") and not lines[i - 1].startswith("|"):
            assert not lines[i - 1].strip(), f"a table starts right after {lines[i - 1]!r}"
    for line in source.splitlines():  # fixed-width tables end up in code blocks
        if re.match(r"^ +\d", line):
            block = laid_out.split(line, 1)[0]
            assert block.count("```") % 2 == 1, f"not in a code block: {line!r}"


# --- examples and commands ------------------------------------------------------------------


TOML_EXAMPLES = [(p.name, b) for p in PAGES for b in code_blocks(p.read_text(), "toml")]


@pytest.mark.parametrize(
    "block",
    [b for _, b in TOML_EXAMPLES],
    ids=[f"{n}-{i}" for i, (n, _) in enumerate(TOML_EXAMPLES)],
)
def test_each_toml_example_in_the_docs_loads(block: str) -> None:
    from fl.experiment.config import load_dict

    tree = tomllib.loads(block)
    tree.setdefault("strategy", {"name": "fedavg"})  # a fragment: one section of a config
    tree.setdefault("num_nodes", 20)
    tree.setdefault("data", {"name": "digits"})
    cfg = load_dict(tree)
    assert cfg.strategy.name == tree["strategy"]["name"]


def fl_sim_calls(text: str) -> list[list[str]]:
    """Every `fl-sim ...` command line of the bash blocks of `text`, as argv after fl-sim."""
    calls = []
    for block in code_blocks(text, "bash"):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].split(">", 1)[0]
            m = re.search(r"(?:^|\s|/)fl-sim\s+(.*)$", line)
            if m:
                calls.append(shlex.split(m.group(1).replace("[", " ").replace("]", " ")))
    return calls


def _cli_options() -> dict[str, set[str]]:
    import typer.main

    from fl.cli import cli

    group = typer.main.get_command(cli)
    out = {"": {o for p in group.params for o in p.opts}}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        out[name] = {
            o for p in cmd.params for o in [*p.opts, *p.secondary_opts] if o.startswith("-")
        }
    return out


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_the_fl_sim_commands_shown_exist_with_their_options(page: Path) -> None:
    options = _cli_options()
    for argv in fl_sim_calls(page.read_text()):
        if argv[0].startswith("-"):
            command, args = "", argv
        else:
            command, args = argv[0], argv[1:]
        assert command in options, f"{page.name}: `fl-sim {command}` does not exist"
        for arg in args:
            if arg.startswith("--"):
                name = arg.split("=", 1)[0]
                assert name in options[command], f"{page.name}: `fl-sim {command} {name}`?"


PYTHON_EXAMPLES = [
    (p.name, b)
    for p in PAGES
    for b in code_blocks(p.read_text(), "python")
    if not b.startswith("# fragment:")
]


@pytest.mark.slow
def test_each_python_example_in_the_docs_runs(tmp_path: Path) -> None:
    """Every complete Python example of the pages, as written, one after another (their
    results folders go to a scratch directory; the configs they name are the repository's)."""
    assert len(PYTHON_EXAMPLES) >= 4
    (tmp_path / "simulations").symlink_to(ROOT / "simulations")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for i, (name, block) in enumerate(PYTHON_EXAMPLES):
        script = tmp_path / f"example_{i}.py"
        script.write_text(block)
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, f"{name}, example {i}:\n{proc.stderr[-3000:]}"


def test_the_cli_reference_covers_every_command() -> None:
    text = (DOCS / "cli.md").read_text()
    for command in _cli_options():
        if command:
            assert f"## `{command}`" in text, f"docs/cli.md does not describe `fl-sim {command}`"


def test_no_page_points_outside_the_repository() -> None:
    for page in [README, *PAGES, ROOT / "CHANGELOG.md"]:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            assert not FORBIDDEN.search(line), f"{page.name}:{n}: {line.strip()}"


# --- the site itself ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_table_in_it(tmp_path: Path) -> None:
    """`mkdocs build --strict` (what `make docs` runs); the built experiment pages hold the
    rows of the files they include (MkDocs and Material come with the dev extra)."""
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in PAGES:
        for name in SNIPPET.findall(page.read_text()):
            if not name.endswith("_table.md"):
                continue
            html = (site / page.with_suffix(".html").name).read_text()
            for row in table_rows((ROOT / name).read_text())[1:]:
                first = html_escape(cells(row)[0], quote=False)
                assert re.search(rf"<t[dh]>{re.escape(first)}</t[dh]>", html), (
                    f"{page.name}: {name} is not in the page ({first})"
                )
    assert not (site / "tifl_table.html").exists()  # fragments are not pages
    config = (site / "configuration.html").read_text()
    assert "checkpoint_every" in config and "outlier_class" in config
