"""Flatten an ArrayRecord (a model) into one vector by name, and back, keeping dtypes.

Robust aggregators see each client update as one row of an n×d matrix. Only floating-point
arrays take part; any other array (integer buffers such as a batch counter) is carried over
from the server's model unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fl.protocol.payload import decode
from fl.protocol.records import array_copy, array_from_numpy, array_record, fast


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of a model's arrays, in record order."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    floating: tuple[bool, ...]

    @property
    def size(self) -> int:
        """Number of floating-point coordinates (d)."""
        return sum(int(np.prod(s)) for s, f in zip(self.shapes, self.floating, strict=True) if f)


def layout_of(record: ArrayRecord) -> Layout:
    """The layout of `record`."""
    keys = tuple(record.keys())
    arrays = [record[k] for k in keys]
    return Layout(
        keys=keys,
        shapes=tuple(tuple(a.shape) for a in arrays),
        dtypes=tuple(a.dtype for a in arrays),
        floating=tuple(np.dtype(a.dtype).kind == "f" for a in arrays),
    )


def flatten(
    record: ArrayRecord, layout: Layout, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The floating-point arrays of `record`, concatenated in layout order, as one vector."""
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    parts = [
        np.asarray(decode(record[k], copy=False), dtype=np_dtype).ravel()
        for k, f in zip(layout.keys, layout.floating, strict=True)
        if f
    ]
    if not parts:
        return torch.zeros(0, dtype=dtype)
    return torch.from_numpy(np.concatenate(parts))


def unflatten(vector: torch.Tensor, layout: Layout, template: ArrayRecord) -> ArrayRecord:
    """Inverse of `flatten`: arrays cast back to their dtypes; non-float arrays from
    `template` (the server's model)."""
    out: dict[str, Array] = {}
    flat = vector.detach().cpu().numpy()
    offset = 0
    for key, shape, dtype, floating in zip(
        layout.keys, layout.shapes, layout.dtypes, layout.floating, strict=True
    ):
        if floating:
            n = int(np.prod(shape))
            part = flat[offset : offset + n].reshape(shape).astype(dtype)
            out[key] = array_from_numpy(part) if fast() else Array(part)
            offset += n
        else:
            out[key] = array_copy(template[key]) if fast() else template[key]
    return array_record(out) if fast() else ArrayRecord(out)
