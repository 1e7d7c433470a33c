"""Refresh the README's included tables: every block between
``<!-- include: docs/<file>.md -->`` and ``<!-- end include -->`` becomes that file's text.

The experiments write their tables (results/<experiment>/table.md); copy the one a section
reports to docs/, then run ``python docs/include.py``. tests/test_readme.py checks that every
block equals its file, so a table in the README is never edited by hand.
"""

from __future__ import annotations

import re
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


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(refresh(path.read_text()))
