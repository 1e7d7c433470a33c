"""Fast payload decoding reads exactly what Flower's `Array.numpy()` reads."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array

from fl.protocol.payload import decode, npy_header

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(10),
    np.zeros((0, 5)),
    np.array(3.0),
    np.array([True, False]),
    np.ones((7, 1, 3), dtype=np.int8),
    np.arange(6.0).reshape(2, 3).T,  # Fortran order: np.save writes another header
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_decode_equals_flowers_numpy(array: np.ndarray) -> None:
    payload = Array.from_numpy_ndarray(array)
    ref = payload.numpy()
    out = decode(payload)
    assert out.dtype == ref.dtype and out.shape == ref.shape and np.array_equal(out, ref)
    assert out.flags.writeable
    view = decode(payload, copy=False)
    assert np.array_equal(view, ref)
    if array.flags.c_contiguous:
        assert payload.data.startswith(npy_header(str(array.dtype), array.shape))


def test_a_payload_that_does_not_match_its_declared_layout_gets_numpys_error() -> None:
    good = Array.from_numpy_ndarray(np.arange(8, dtype=np.float32))
    truncated = Array(dtype="float32", shape=(8,), stype="numpy.ndarray", data=good.data[:50])
    with pytest.raises(ValueError):
        decode(truncated)
    lying = Array(dtype="float32", shape=(4,), stype="numpy.ndarray", data=good.data)
    assert decode(lying).shape == (8,)  # the header wins, as with np.load; validation compares
