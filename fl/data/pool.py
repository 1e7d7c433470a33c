"""What every dataset loader returns (a ``Pool``), or raises when its data is not available.

A pool is a loaded but not yet partitioned dataset: the training pool, the central test set and,
for datasets with a real client identity, the natural clients as index arrays into the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fl.data.sources import SampleSource

__all__ = ["DatasetUnavailableError", "Pool"]


class DatasetUnavailableError(RuntimeError):
    """The dataset's package is not installed, or a downloading loader cannot reach its hub."""


@dataclass(frozen=True, eq=False)
class Pool:
    """A loaded dataset before partitioning.

    Attributes:
        train: the training pool that node partitions index into.
        test: the central held-out test set.
        num_classes: number of labels (the vocabulary size for next-character prediction).
        input_shape: per-example shape of ``x``.
        vocab_size: text only; ``None`` otherwise.
        clients: natural clients as index arrays into ``train`` (``None`` if the data has none).
        client_names: one name per natural client (same order as ``clients``).
    """

    train: SampleSource
    test: SampleSource
    num_classes: int
    input_shape: tuple[int, ...]
    vocab_size: int | None = None
    clients: tuple[np.ndarray, ...] | None = None
    client_names: tuple[str, ...] | None = None
