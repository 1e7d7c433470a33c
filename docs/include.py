"""Refresh the README's included tables: every block between
``<!-- include: docs/<file>.md -->`` and ``<!-- end include -->`` becomes that file's text.

The documentation site includes the experiments' tables at build time (pymdownx.snippets,
see mkdocs.yml), but GitHub shows the README as it is, so a table the README shows is kept
between these markers instead. Each experiment script writes ``table.md`` into its results
folder; copy it to ``docs/<experiment>_table.md``, then run ``python docs/include.py``
(``--check`` only reports whether a block is stale). tests/test_readme.py checks that every
block equals its file, so a table in the README is never edited by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
BLOCK = re.compile(r"(<!-- include: (\S+) -->\n)(.*?)(<!-- end include -->)", re.S)


def included(readme: str) -> list[tuple[str, str]]:
    """(file, the README's text for it) for every include block."""
    return [(m.group(2), m.group(3)) for m in BLOCK.finditer(readme)]


def refresh(readme: str) -> str:
    """`readme` with every include block replaced by its file's current text."""

    def sub(m: re.Match[str]) -> str:
        text = (ROOT / m.group(2)).read_text()
        return m.group(1) + text + ("" if text.endswith("\n") else "\n") + m.group(4)

    return BLOCK.sub(sub, readme)


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    fresh = refresh(text)
    if "--check" in argv:
        if fresh != text:
            print("README.md: an include block differs from its file; run python docs/include.py")
            return 1
        return 0
    if fresh != text:
        path.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
