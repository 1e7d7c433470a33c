"""The README's example configs load as they are written."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from fl.experiment.config import load_dict

README = (Path(__file__).parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```toml\n(.*?)```", README, re.S)


def test_the_readme_has_toml_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"toml-{i}" for i in range(len(BLOCKS))])
def test_each_toml_example_in_the_readme_loads(block: str) -> None:
    tree = tomllib.loads(block)
    if "strategy" not in tree:
        pytest.skip("not an experiment config")
    tree.setdefault("num_nodes", 20)
    tree.setdefault("data", {"name": "digits"})
    cfg = load_dict(tree)
    assert cfg.strategy.name == tree["strategy"]["name"]


def test_included_tables_are_the_files_the_experiments_wrote() -> None:
    import importlib.util

    path = Path(__file__).parents[1] / "docs" / "include.py"
    spec = importlib.util.spec_from_file_location("docs_include", path)
    assert spec and spec.loader
    include = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(include)
    blocks = include.included(README)
    assert blocks, "the README includes no table"
    for name, text in blocks:
        expected = (Path(__file__).parents[1] / name).read_text()
        assert text == expected, f"{name}: run docs/include.py"
