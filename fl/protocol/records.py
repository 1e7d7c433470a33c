"""Records built without Flower's per-item validation: the reply fast path.

Flower validates every item it stores (`TypedDict.__setitem__` type-checks key and value, and
its `cast(Callable[...], ...)` builds a typing alias on every call) and serializes each array
with `np.save`. For a ClientApp reply whose contents are known to be valid (arrays encoded here,
metric values the app computed) that is most of the cost of building it. These helpers build the
same objects — equal `__dict__`s, byte-identical payloads — writing Flower's private storage
directly:

- `Array.__dict__` (``dtype``, ``shape``, ``stype``, ``data`` and the ``_is_dirty`` flag a
  direct `Array(...)` sets), and
- `TypedDict.__dict__["_data"]`, the dict behind `ArrayRecord`, `MetricRecord` and `RecordDict`.

They are Flower internals like those of `fl.protocol.flower_internals` (which should absorb
them); `tests/test_fast_path.py` checks each against what Flower's public constructors build,
so a Flower release that changes them fails there loudly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fl.protocol.payload import npy_header

__all__ = [
    "array_copy",
    "array_from_numpy",
    "array_from_tensor",
    "array_record",
    "fast",
    "filled",
    "metric_record",
    "plain_flower",
    "record_dict",
    "state_bytes",
    "state_record",
]

_NUMPY = "numpy.ndarray"
_FAST = [True]
_DTYPE_NAMES: dict[np.dtype, str] = {}  # str(dtype) (numpy's __str__ is slow Python code)


def fast() -> bool:
    """Whether the fast path is on: replies built here, a round's models decoded into one
    stack (`fl.protocol.stack`). Off (`plain_flower`), everything goes through Flower's own
    constructors and `np.load`, as a reference for tests and benchmarks."""
    return _FAST[0]


@contextmanager
def plain_flower() -> Iterator[None]:
    """Within the block, build and read messages only through Flower's public API (the
    reference the fast path must equal bit for bit)."""
    saved = _FAST[0]
    _FAST[0] = False
    try:
        yield
    finally:
        _FAST[0] = saved


def array_from_numpy(arr: np.ndarray) -> Array:
    """`Array.from_numpy_ndarray(arr)` (the bytes `np.save` writes), built from a cached .npy
    header and one copy of the data. Arrays `np.save` would write otherwise (Fortran order,
    object and structured dtypes) go through Flower."""
    c_order = arr.flags.c_contiguous
    if (arr.flags.f_contiguous and not c_order) or arr.dtype.hasobject or arr.dtype.kind == "V":
        return Array.from_numpy_ndarray(arr)
    dtype = _DTYPE_NAMES.get(arr.dtype)
    if dtype is None:
        dtype = _DTYPE_NAMES.setdefault(arr.dtype, str(arr.dtype))
    shape = tuple(arr.shape)
    header = npy_header(dtype, shape)
    if c_order and arr.size and arr.ndim:
        body: bytes | memoryview = memoryview(arr).cast("B")  # type: ignore[arg-type]
    else:
        body = arr.tobytes()
    out = Array.__new__(Array)
    out.__dict__.update(
        {"_is_dirty": True, "dtype": dtype, "shape": shape, "stype": _NUMPY, "data": header + body}
    )
    return out


def array_copy(array: Array) -> Array:
    """A new `Array` sharing `array`'s (immutable) payload, as `ArrayRecord(dict_of_arrays)`
    copies each one (`Array(dtype=, shape=tuple(shape), stype=, data=)`), unvalidated."""
    d = array.__dict__
    out = Array.__new__(Array)
    out.__dict__.update(
        {
            "_is_dirty": True,
            "dtype": d["dtype"],
            "shape": tuple(d["shape"]),
            "stype": d["stype"],
            "data": d["data"],
        }
    )
    return out


def array_from_tensor(tensor: torch.Tensor) -> Array:
    """`Array.from_torch_tensor(tensor)`, as `array_from_numpy` builds it."""
    return array_from_numpy(tensor.detach().cpu().numpy())


R = TypeVar("R", ArrayRecord, MetricRecord, ConfigRecord, RecordDict)


def filled(record: R, items: Mapping[str, Any]) -> R:
    """`record` (a new, empty Flower record) holding `items`, stored without validation: the
    caller guarantees keys and values of the types the record's own checks accept."""
    record.__dict__["_data"].update(items)
    return record


def array_record(arrays: Mapping[str, Array]) -> ArrayRecord:
    """`ArrayRecord(arrays)` holding these very `Array` objects (Flower's constructor copies
    each); the caller guarantees str keys and `Array` values."""
    return filled(ArrayRecord(), arrays)


def state_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """`ArrayRecord(state_dict)` (`from_torch_state_dict`), byte-identical, built fast."""
    return array_record({k: array_from_tensor(v) for k, v in state.items()})


def state_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """`ArrayRecord(state).count_bytes()` (what the virtual grid charges for a reply carrying
    `state`), computed from the cached headers without serializing anything."""
    total = 0
    for name, tensor in state.items():
        arr = tensor.detach().cpu().numpy()
        if arr.dtype.kind == "V" or arr.dtype.hasobject:
            total += len(Array.from_numpy_ndarray(arr).data) + len(name)
            continue
        dtype = _DTYPE_NAMES.get(arr.dtype) or _DTYPE_NAMES.setdefault(arr.dtype, str(arr.dtype))
        total += len(npy_header(dtype, tuple(arr.shape))) + arr.nbytes + len(name)
    return total


def metric_record(values: Mapping[str, Any]) -> MetricRecord:
    """`MetricRecord(values)` for values the caller computed (ints, floats, lists of them)."""
    return filled(MetricRecord(), values)


def record_dict(records: Mapping[str, Any]) -> RecordDict:
    """`RecordDict(records)` for records of the three Flower record types."""
    return filled(RecordDict(), records)
