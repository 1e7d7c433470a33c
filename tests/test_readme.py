"""The README: short, self-contained, and every example in it works.

Its include blocks (``<!-- include: docs/<file>.md -->`` ... ``<!-- end include -->``, refreshed
by docs/include.py; GitHub runs no snippets) equal the files the experiments wrote, its TOML
examples load, its Python example runs, and its links point to files that exist. The checks it
shares with the documentation pages (no pasted result rows, fl-sim commands that exist, nothing
pointing outside the repository) are in tests/test_docs.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fl.experiment.config import load_dict

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
TOML_BLOCKS = re.findall(r"^```toml\n(.*?)^```", README, re.S | re.M)
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)


def include_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("docs_include", ROOT / "docs" / "include.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short() -> None:
    assert len(README.split()) <= 1550, "the README is a summary: move detail into docs/"


def test_the_readme_has_toml_and_python_examples() -> None:
    assert TOML_BLOCKS
    assert len(PYTHON_BLOCKS) == 1


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[f"toml-{i}" for i in range(len(TOML_BLOCKS))])
def test_each_toml_example_in_the_readme_loads(block: str) -> None:
    tree = tomllib.loads(block)
    tree.setdefault("strategy", {"name": "fedavg"})
    tree.setdefault("num_nodes", 20)
    tree.setdefault("data", {"name": "digits"})
    cfg = load_dict(tree)
    assert cfg.strategy.name == tree["strategy"]["name"]


def test_included_tables_are_the_files_the_experiments_wrote() -> None:
    include = include_module()
    for name, text in include.included(README):
        expected = (ROOT / name).read_text()
        assert text == expected, f"{name}: run python docs/include.py"
    assert include.refresh(README) == README


def test_include_blocks_are_refreshed_from_their_files(tmp_path: Path) -> None:
    include = include_module()
    stale = "x\n<!-- include: docs/tifl_table.md -->\n| old | row |\n<!-- end include -->\ny\n"
    fresh = include.refresh(stale)
    assert include.included(fresh) == [
        ("docs/tifl_table.md", (ROOT / "docs/tifl_table.md").read_text())
    ]
    assert fresh.startswith("x\n") and fresh.endswith("<!-- end include -->\ny\n")


def test_the_readme_links_point_to_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link.split("#", 1)[0] for link in links if "://" not in link and link[0] != "#"]
    assert len(local) >= 20
    for link in local:
        assert (ROOT / link).exists(), f"the README links to {link}, which does not exist"
    docs = {link for link in local if link.startswith("docs/") and link.endswith(".md")}
    pages = {
        f"docs/{p.name}"
        for p in (ROOT / "docs").glob("*.md")
        if not p.name.endswith("_table.md") and p.name != "changelog.md"  # CHANGELOG.md itself
    }
    assert not pages - docs, f"the README does not link to {sorted(pages - docs)}"


def test_the_readme_says_how_to_build_the_site_and_what_versions_run() -> None:
    assert "`make docs`" in README and "`site/`" in README
    assert "flwr>=1.41,<1.43" in README
    assert "make demo" in README and "make test" in README


@pytest.mark.slow
def test_the_python_example_runs(tmp_path: Path) -> None:
    """The README's Flower-app example, as written, from the repository root."""
    (script,) = PYTHON_BLOCKS
    path = tmp_path / "example.py"
    path.write_text(script)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+\.\d{3} virtual seconds", last), last
    assert float(last.split()[0]) > 0
    assert "eval_acc" in proc.stdout
