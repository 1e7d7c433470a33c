"""Sample sources: pools of labelled examples that partitions index into.

A partition is just an array of integer indices into a source, so nodes never copy the pool;
``take(idx)`` materialises the tensors for one node (or one batch) when they are needed.
Two concrete sources cover every dataset here: dense tensors (images, tabular) and lazily cut
text windows (next-character prediction), which keep Shakespeare at ~80 MB instead of the
~350 MB that fully materialised 80-character windows would take.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["SampleSource", "TensorSource", "TextWindowSource", "subset"]


@runtime_checkable
class SampleSource(Protocol):
    """A pool of labelled samples addressed by integer index."""

    @property
    def labels(self) -> np.ndarray:
        """All labels as an int64 array of shape ``(N,)``."""
        ...

    def __len__(self) -> int: ...

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)`` for the given indices; ``y`` is int64."""
        ...


def _as_index(idx: np.ndarray | list[int] | torch.Tensor) -> np.ndarray:
    """Normalise any index container to a 1-D int64 numpy array."""
    if isinstance(idx, torch.Tensor):
        idx = idx.numpy()
    out = np.asarray(idx, dtype=np.int64)
    if out.ndim != 1:
        raise ValueError(f"idx must be 1-D, got shape {out.shape}")
    return out


@dataclass(frozen=True, eq=False)
class TensorSource:
    """Dense examples held in memory: ``x`` float32 ``(N, *input_shape)``, ``y`` int64 ``(N,)``.

    The tensors may be shared with an in-process cache of the raw dataset; treat them as
    read-only (``take`` returns copies, so training code never aliases the pool).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x and y differ in length: x has {self.x.shape[0]}, y has {self.y.shape[0]}"
            )
        if self.y.dtype != torch.int64 or self.y.ndim != 1:
            raise ValueError(
                f"y must be a 1-D int64 tensor, got {self.y.dtype} {tuple(self.y.shape)}"
            )

    @property
    def labels(self) -> np.ndarray:
        """Labels as a numpy view of ``y`` (int64, no copy)."""
        return self.y.numpy()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy out the examples at ``idx``."""
        # Partitions hand out read-only views (fl.data.partition.NodeIndices): torch wants a
        # writable array, so those are copied (one small int64 array per node).
        t = torch.from_numpy(np.require(_as_index(idx), requirements="W"))
        return self.x[t], self.y[t]

    def subset(self, idx: np.ndarray) -> TensorSource:
        """A new source holding only the examples at ``idx`` (in that order)."""
        x, y = self.take(idx)
        return TensorSource(x, y)


@dataclass(frozen=True, eq=False)
class TextWindowSource:
    """Next-character samples cut lazily from one encoded text array.

    Sample ``i`` has position ``p = positions[i]``: ``x = codes[p - window : p]`` (int64,
    left-padded with ``pad_code`` where ``p < window``) and ``y = codes[p]``. Loaders that
    follow LEAF's per-line rule store ``window`` pad codes before every line, so a window never
    sees the previous line and no per-sample padding logic is needed.
    """

    codes: np.ndarray
    positions: np.ndarray
    window: int = 80
    pad_code: int = 1

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.codes.ndim != 1 or self.positions.ndim != 1:
            raise ValueError("codes and positions must be 1-D arrays")
        if len(self.positions) and (
            self.positions.min() < 0 or self.positions.max() >= len(self.codes)
        ):
            raise ValueError("positions must index into codes")

    @cached_property
    def labels(self) -> np.ndarray:
        """The target character code of every sample (int64, computed once)."""
        return self.codes[self.positions].astype(np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut the windows for ``idx``: ``x`` int64 ``(n, window)``, ``y`` int64 ``(n,)``."""
        pos = self.positions[_as_index(idx)]
        cols = pos[:, None] + np.arange(-self.window, 0, dtype=np.int64)[None, :]
        x = self.codes[np.maximum(cols, 0)].astype(np.int64)
        x[cols < 0] = self.pad_code
        y = self.codes[pos].astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)

    def subset(self, idx: np.ndarray) -> TextWindowSource:
        """A new source over the samples at ``idx``; the code array is shared, not copied."""
        return TextWindowSource(
            self.codes, self.positions[_as_index(idx)], self.window, self.pad_code
        )


def subset(source: SampleSource, idx: np.ndarray) -> SampleSource:
    """Restrict ``source`` to the samples at ``idx`` (used for ``max_samples`` caps)."""
    if isinstance(source, TensorSource | TextWindowSource):
        return source.subset(idx)
    raise TypeError(f"cannot take a subset of {type(source).__name__}")
