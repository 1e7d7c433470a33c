"""Flower `Array` payloads (.npy bytes) decoded without parsing their header each time.

`Array.numpy()` calls `np.load`, which parses the .npy header with `ast.literal_eval` on
every call: for the small models of a simulation that is 70% of decoding a message. The
header depends only on dtype and shape, so the one `np.save` writes is built once per
(dtype, shape) and compared byte for byte; the data is then read in place. A payload whose
header is not the expected one for its declared dtype and shape is read with `np.load`, which
reports what is wrong with it.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from flwr.app import Array


@lru_cache(maxsize=4096)
def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The header `np.save` writes before the data of a C-ordered array of dtype and shape
    (format 1.0; a payload with any other header is left to `np.load`)."""
    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def decode(array: Array, *, copy: bool = True) -> np.ndarray:
    """The ndarray of a Flower `Array`: a writable copy, like `Array.numpy()`, or with
    `copy=False` a read-only view of the payload (for checks and reductions)."""
    data = array.data
    try:
        header = npy_header(array.dtype, tuple(int(s) for s in array.shape))
    except (TypeError, ValueError):  # an invalid declared dtype or shape
        return array.numpy()
    n = len(header)
    dtype = np.dtype(array.dtype)
    count = math.prod(int(n) for n in array.shape)
    if (
        array.stype != "numpy.ndarray"
        or dtype.hasobject
        or len(data) != n + count * dtype.itemsize
        or data[:n] != header
    ):
        return array.numpy()
    view = np.frombuffer(data, dtype=dtype, count=count, offset=n).reshape(array.shape)
    return view.copy() if copy else view
