"""Split a pool's indices over nodes with flwr-datasets partitioners, then split each node locally.

The partitioners run over an in-memory ``datasets.Dataset`` with two columns, ``label`` and
``idx`` (the position in the pool); a node's indices are read back from the ``idx`` column of its
partition. Rows are put in a seeded random order first, because ``IidPartitioner`` and the size
partitioners cut contiguous blocks.

- ``iid``: ``IidPartitioner`` (equal contiguous shards of the shuffled pool).
- ``dirichlet``: ``DirichletPartitioner(alpha, min_partition_size, self_balancing=False)``;
  flwr resamples (up to 10 times) until every node has ``min_partition_size`` samples.
- ``shards``: ``PathologicalPartitioner(classes_per_node, "first-deterministic")``: node ``i``
  gets class ``i mod C`` plus ``k - 1`` random others, each class split evenly over its nodes.
  With fewer nodes than classes some classes are unused (flwr warns).
- ``size``: ``IdToSizeFncPartitioner`` with size ∝ ``rank ** size_skew``; ranks are assigned
  to nodes by a seeded permutation so that node id and data size are not correlated.
- ``natural``: the pool's natural clients (one per node), no partitioner involved.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fl.data.config import DataConfig, invalid

__all__ = ["local_split", "partition_indices"]


def _partition_dataset(labels: np.ndarray, rng: np.random.Generator) -> Any:
    """The in-memory ``datasets.Dataset`` the partitioners see: rows in seeded random order.

    Two speed-ups that do not change any result: the arrow format returns columns as pyarrow
    arrays, which numpy converts at once (the default lazy ``Column`` converts element by
    element, ~50x slower); and ``select`` gets a ready-made fingerprint, because ``datasets``
    would otherwise hash every index list with dill (~20 s for a 4M-sample pool).
    """
    from datasets import Dataset
    from datasets.fingerprint import generate_random_fingerprint

    class _InMemory(Dataset):
        def select(self, indices: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("new_fingerprint", generate_random_fingerprint())
            return super().select(indices, *args, **kwargs)

    order = rng.permutation(len(labels)).astype(np.int64)
    return _InMemory.from_dict({"label": labels[order], "idx": order}).with_format("arrow")


def idx_column(part: Any) -> np.ndarray:
    """A partition's ``idx`` column as an int64 array.

    ``select`` leaves a row mapping that ``datasets`` resolves one row at a time in Python
    (~13 s for a 4M-row pool), so when that mapping is visible the column is gathered with one
    arrow ``take``; otherwise (or if the private layout ever changes) it is read the public way.
    """
    mapping, table = getattr(part, "_indices", None), getattr(part, "data", None)
    if mapping is not None and table is not None:
        try:
            return table.column("idx").take(mapping.column(0)).to_numpy().astype(np.int64)
        except (AttributeError, KeyError, TypeError, ValueError):
            pass
    return part.with_format("arrow")["idx"].to_numpy().astype(np.int64)


def _read_back(partitioner: Any, num_nodes: int) -> list[np.ndarray]:
    """Each partition's ``idx`` column.

    Reading a partition builds a ``datasets.Dataset`` (~2 ms: 20 s for 10 000 nodes), so the
    rows are taken from the partitioner's own assignment instead — its index lists, or the
    contiguous shards an IID partitioner cuts — and that shortcut is checked against the
    public `load_partition` on the first, middle and last partitions; on any difference (a
    partitioner that works otherwise), every partition is read the public way.
    """
    fast = _assigned_rows(partitioner, num_nodes)
    if fast is not None:
        probe = sorted({0, num_nodes // 2, num_nodes - 1})
        if all(np.array_equal(fast[i], idx_column(partitioner.load_partition(i))) for i in probe):
            return fast
    return [idx_column(partitioner.load_partition(i)) for i in range(num_nodes)]


def _assigned_rows(partitioner: Any, num_nodes: int) -> list[np.ndarray] | None:
    """The ``idx`` column of each partition from the partitioner's assignment (None if it is
    not one this knows how to read)."""
    from flwr_datasets.partitioner import IidPartitioner

    partitioner.load_partition(0)  # makes the partitioner determine its assignment
    idx = idx_column(partitioner.dataset)
    mapping = getattr(partitioner, "_partition_id_to_indices", None)
    if isinstance(mapping, dict) and len(mapping) == num_nodes:
        return [idx[np.asarray(mapping[i], dtype=np.int64)] for i in range(num_nodes)]
    if type(partitioner) is IidPartitioner:  # datasets' contiguous shards
        div, mod = divmod(len(idx), num_nodes)
        starts = [div * i + min(i, mod) for i in range(num_nodes + 1)]
        return [idx[starts[i] : starts[i + 1]] for i in range(num_nodes)]
    return None


def partition_indices(
    labels: np.ndarray,
    cfg: DataConfig,
    num_nodes: int,
    num_classes: int,
    rng: np.random.Generator,
    clients: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Indices into the pool for each node, following ``cfg.partition``.

    Raises ``ValueError`` naming the config field when the requested split is impossible.
    """
    if cfg.partition == "natural":
        if clients is None or len(clients) != num_nodes:
            available = 0 if clients is None else len(clients)
            raise invalid(
                "num_nodes", num_nodes, f"the data has {available} natural clients available"
            )
        return [np.asarray(c, dtype=np.int64) for c in clients]

    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IdToSizeFncPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    seed = int(rng.integers(2**31 - 1))
    dataset = _partition_dataset(labels, rng)
    if cfg.partition == "iid":
        partitioner = IidPartitioner(num_partitions=num_nodes)
    elif cfg.partition == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=num_nodes,
            partition_by="label",
            alpha=float(cfg.alpha),
            min_partition_size=cfg.min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    elif cfg.partition == "shards":
        if cfg.classes_per_node > num_classes:
            raise invalid(
                "classes_per_node", cfg.classes_per_node, f"must be in [1, {num_classes}]"
            )
        present = len(np.unique(labels))
        if cfg.classes_per_node > present:
            raise invalid(
                "classes_per_node",
                cfg.classes_per_node,
                f"only {present} classes occur in the training pool",
            )
        partitioner = PathologicalPartitioner(
            num_partitions=num_nodes,
            partition_by="label",
            num_classes_per_partition=cfg.classes_per_node,
            class_assignment_mode="first-deterministic",
            shuffle=True,
            seed=seed,
        )
    elif cfg.partition == "size":
        skew = float(cfg.size_skew)
        partitioner = IdToSizeFncPartitioner(
            num_partitions=num_nodes, partition_id_to_size_fn=lambda ids: np.power(ids, skew)
        )
    else:  # validate_config rejects unknown names first
        raise invalid("partition", cfg.partition, "unknown partition")
    partitioner.dataset = dataset
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The specified min_partition_size")
            parts = _read_back(partitioner, num_nodes)
    except ValueError as err:
        field, value = {
            "dirichlet": ("alpha", cfg.alpha),
            "shards": ("classes_per_node", cfg.classes_per_node),
            "size": ("size_skew", cfg.size_skew),
        }.get(cfg.partition, ("num_nodes", num_nodes))
        raise invalid(
            field,
            value,
            f"partition={cfg.partition!r} over {len(labels)} samples with num_nodes={num_nodes}"
            f" and min_partition_size={cfg.min_partition_size} failed: {err}",
        ) from err
    if cfg.partition == "size":
        parts = [parts[r] for r in rng.permutation(num_nodes)]
        smallest = min(len(p) for p in parts)
        if smallest < cfg.min_partition_size:
            raise invalid(
                "size_skew",
                cfg.size_skew,
                f"the smallest of num_nodes={num_nodes} nodes gets {smallest} samples, "
                f"fewer than min_partition_size={cfg.min_partition_size}",
            )
    return parts


def local_split(
    indices: np.ndarray, fraction: float, rng: np.random.Generator, contiguous: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Split one node's indices into (local train, local test), both sorted ascending.

    ``round(n * fraction)`` samples go to the local test split, at least one when
    ``fraction > 0`` and ``n >= 2``, and never all of them (a node keeps >= 1 training sample).
    ``contiguous`` takes the test split from the end of the node's data in pool order instead of
    at random: for text windows this keeps the two splits on different lines, so local test
    windows do not overlap local training windows.
    """
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    n = len(indices)
    n_test = round(n * fraction)
    if fraction > 0 and n >= 2:
        n_test = max(n_test, 1)
    n_test = min(n_test, n - 1) if n else 0
    if contiguous:
        return indices[: n - n_test], indices[n - n_test :]
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.choice(n, size=n_test, replace=False)] = True
    return indices[~chosen], indices[chosen]
