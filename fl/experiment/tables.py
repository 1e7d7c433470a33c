"""Tidy CSV tables: written with the union of the rows' keys, read back with numbers parsed.

`csv_text` is the one formatter: `write_csv` writes a whole table with it, and the live tables
of a running run (`fl.experiment.live`) append rows with it, so a table grown row by row has
the same bytes as one written at once.
"""

from __future__ import annotations

import csv
import io
import locale
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def columns_of(rows: Iterable[dict[str, Any]], columns: Iterable[str] | None = None) -> list[str]:
    """`columns` if given, else the union of the rows' keys in first-seen order."""
    if columns is not None:
        return list(columns)
    cols: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def csv_text(rows: Iterable[dict[str, Any]], cols: Sequence[str], *, header: bool = True) -> str:
    """`rows` as CSV text on columns `cols` (a missing key is empty, floats are `repr`), with
    the header line first if `header`: what `csv.DictWriter(fieldnames=cols,
    extrasaction="ignore")` writes, a row at a time as cheaply as a whole table."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)  # DictWriter's own writer: the excel dialect, "\r\n" lines
    if header:
        writer.writerow(cols)
    for row in rows:
        writer.writerow([_fmt(row.get(k, "")) for k in cols])
    return buf.getvalue()


def encode(text: str) -> bytes:
    """`text` as `open(path, "w")` would write it (the locale's preferred encoding)."""
    return text.encode(locale.getpreferredencoding(False))


def replace_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename, so a reader (or a run
    killed meanwhile) sees either the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_csv(
    path: Path, rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None
) -> None:
    """Write dict rows as CSV with the union of their keys (first-seen order)."""
    replace_text(path, csv_text(rows, columns_of(rows, columns)))


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    return value


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Read a results CSV back, converting numeric fields."""
    with path.open() as fh:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def read_complete_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a CSV another process may be appending to (numbers parsed): a
    last row without its line end ("\\r\\n", as `csv_text` ends rows) is left out; [] if the
    file is missing or empty."""
    try:
        with path.open(newline="") as fh:
            text = fh.read()
    except FileNotFoundError:
        return []
    text = text[: text.rfind("\r\n") + 2] if "\r\n" in text else ""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return [{k: _parse(v) for k, v in row.items()} for row in reader]


def _parse(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text
