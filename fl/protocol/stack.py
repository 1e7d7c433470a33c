"""A round's reply models decoded once, into one stacked array the strategies read in place.

`split_replies` (the round loop's check of every reply) decodes the floating-point arrays of
all the replies it is given into one (n, d) array — row i the arrays of reply i concatenated in
the reference model's key order, as `fl.strategies.flatten.flatten` lays them out — checks them
for NaN/Inf in one pass, and remembers which row holds which reply. A strategy that aggregates
the same replies (`stacked`) then gets its matrix from that array instead of decoding every
payload again; a reply that is not in it (another round, a reply built elsewhere, a record
changed since) is decoded on its own, so the result never depends on what was cached.

Only the latest stack is kept (one round's replies), and each row is tied to the payload bytes
objects it was decoded from (immutable: a record whose arrays were replaced is a miss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from flwr.app import Array, ArrayRecord

from fl.protocol.payload import npy_header

LayoutKey = tuple[tuple[str, tuple[int, ...], str], ...]
"""(name, shape, dtype) of every array of the reference model, in its key order."""


def layout_key(reference: ArrayRecord) -> LayoutKey:
    """The layout a stack built against `reference` has."""
    return tuple((k, tuple(int(s) for s in a.shape), a.dtype) for k, a in reference.items())


@dataclass
class Stack:
    """Decoded floating-point arrays of many replies: `values[row]` for a record's row."""

    layout: LayoutKey
    values: np.ndarray  # (n, d), the floating arrays' common dtype (read only)
    rows: dict[int, tuple[ArrayRecord, tuple[bytes, ...], int]]  # id(record) → its row

    def row_of(self, record: ArrayRecord) -> int | None:
        """The row holding `record` (its arrays unchanged since), or None."""
        hit = self.rows.get(id(record))
        if hit is None or hit[0] is not record:
            return None
        datas = hit[1]
        if len(record) != len(datas) or any(
            a.data is not b for a, b in zip(record.values(), datas, strict=False)
        ):
            return None
        return hit[2]


_latest: list[Stack] = []


def floating_dtype(layout: LayoutKey) -> np.dtype | None:
    """The common dtype of the layout's floating arrays (None: some array is complex or of a
    kind this module does not stack)."""
    try:
        kinds = [np.dtype(dt) for _, _, dt in layout]
    except (TypeError, ValueError):  # a dtype string numpy does not read back
        return None
    if any(d.kind in "cV" or d.hasobject for d in kinds):
        return None
    floats = [d for d in kinds if d.kind == "f"]
    return np.result_type(*floats) if floats else np.dtype(np.float32)


def readable(record: ArrayRecord, layout: LayoutKey) -> bool:
    """True if `record` has exactly the layout's arrays (names, shapes, dtypes) and each payload
    is the .npy bytes `np.save` writes for it (so it can be read in place)."""
    if len(record) != len(layout):
        return False
    for name, shape, dtype in layout:
        arr = record.get(name)
        if (
            arr is None
            or arr.dtype != dtype
            or tuple(arr.shape) != shape
            or arr.stype != "numpy.ndarray"
            or not _payload_ok(arr, dtype, shape)
        ):
            return False
    return True


def _payload_ok(arr: Array, dtype: str, shape: tuple[int, ...]) -> bool:
    expected = _expected(dtype, shape)
    if expected is None:
        return False
    header, size = expected
    data = arr.data
    return len(data) == size and data.startswith(header)


@lru_cache(maxsize=4096)
def _expected(dtype: str, shape: tuple[int, ...]) -> tuple[bytes, int] | None:
    """(the .npy header, the payload's length) of an array of dtype and shape."""
    try:
        header = npy_header(dtype, shape)
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError):
        return None
    return header, len(header) + int(np.prod(shape, dtype=np.int64)) * itemsize


def build(records: Sequence[ArrayRecord], layout: LayoutKey) -> Stack:
    """Decode `records` (each `readable` with `layout`) into one stack and keep it as the
    latest."""
    dtype = floating_dtype(layout)
    assert dtype is not None
    parts = [
        (name, np.dtype(dt), int(np.prod(shape, dtype=np.int64)))
        for name, shape, dt in layout
        if np.dtype(dt).kind == "f"
    ]
    width = sum(count for _, _, count in parts)
    if all(dt == dtype for _, dt, _ in parts):
        # every payload is header + data: join the data parts, one copy, then read in place
        bodies = []
        for rec in records:
            for name, dt, count in parts:
                data = rec[name].data
                bodies.append(memoryview(data)[len(data) - count * dt.itemsize :])
        values = np.frombuffer(b"".join(bodies), dtype=dtype).reshape(len(records), width)
    else:
        values = np.empty((len(records), width), dtype=dtype)
        for i, rec in enumerate(records):
            off = 0
            for name, dt, count in parts:
                data = rec[name].data
                values[i, off : off + count] = np.frombuffer(
                    data, dtype=dt, count=count, offset=len(data) - count * dt.itemsize
                )
                off += count
    rows = {id(rec): (rec, tuple(a.data for a in rec.values()), i) for i, rec in enumerate(records)}
    stack = Stack(layout, values, rows)
    _latest[:] = [stack]
    return stack


def latest() -> Stack | None:
    """The stack the last `build` made (None before any)."""
    return _latest[0] if _latest else None


def float_segments(layout: LayoutKey) -> list[tuple[str, int, int]]:
    """(name, start, end) columns of each floating array in a stack of `layout`."""
    out, off = [], 0
    for name, shape, dt in layout:
        if np.dtype(dt).kind == "f":
            n = int(np.prod(shape, dtype=np.int64))
            out.append((name, off, off + n))
            off += n
    return out


def rows_for(records: Sequence[ArrayRecord], layout: LayoutKey) -> np.ndarray | None:
    """The latest stack's rows of `records`, in order (a view when they are all its rows in
    order), or None if any is not in it."""
    stack = latest()
    if stack is None or stack.layout != layout:
        return None
    idx = []
    for rec in records:
        row = stack.row_of(rec)
        if row is None:
            return None
        idx.append(row)
    if idx == list(range(len(stack.values))):
        return stack.values
    return stack.values[idx]


def clear() -> None:
    """Forget the latest stack."""
    _latest.clear()


def model_matrix(
    records: Sequence[ArrayRecord], reference: ArrayRecord, dtype: np.dtype | type
) -> np.ndarray | None:
    """(n, d) of `records`' floating arrays in `reference`'s key order, cast to `dtype`, from
    the latest stack (what `np.stack([flatten(r) for r in records])` gives, value for value),
    or None when any record is not in it."""
    rows = rows_for(records, layout_key(reference))
    if rows is None:
        return None
    return rows.astype(dtype)  # a copy: the stack itself stays as decoded
