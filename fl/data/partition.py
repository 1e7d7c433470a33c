"""Split a pool's indices over nodes, then split every node locally; partitions are held flat.

A partition of N nodes is a :class:`NodeIndices`: one flat int64 index array and N + 1 offsets
(node i holds ``flat[offsets[i]:offsets[i + 1]]``), or offsets alone when every node holds a
contiguous range of the pool. The local train/test split (:func:`local_split_all`) works on the
flat arrays for all nodes at once.

``iid`` is computed with numpy (no ``datasets`` import): the shards ``IidPartitioner`` cuts,
which tests/test_partitions_flat.py checks against flwr-datasets. The other partitioners run over
an in-memory ``datasets.Dataset`` with two columns, ``label`` and ``idx`` (the position in the
pool); a node's indices are read back from the ``idx`` column of its partition. Rows are put in a
seeded random order first, because ``IidPartitioner`` and the size partitioners cut contiguous
blocks.

- ``iid``: equal contiguous shards of the shuffled pool, as ``IidPartitioner`` cuts them
  (computed with numpy, :func:`iid_shards`).
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
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from fl.data.config import DataConfig, invalid

__all__ = ["NodeIndices", "iid_shards", "local_split", "local_split_all", "partition_indices"]


class NodeIndices(Sequence[np.ndarray]):
    """Per-node index arrays held flat: node ``i`` holds ``flat[offsets[i]:offsets[i + 1]]``.

    ``flat=None`` means ranges: node ``i`` holds ``arange(starts[i], starts[i] + size_i)``
    (``starts`` defaults to ``offsets[:-1]``: consecutive blocks of the pool), which costs
    nothing per sample. Indexing returns a read-only int64 view (or a fresh ``arange``); ``len``
    is the number of nodes; ``+`` with a list (or another ``NodeIndices``) gives the list of
    arrays, as the ``list[np.ndarray]`` this replaces did.
    """

    __slots__ = ("flat", "offsets", "starts")

    def __init__(
        self, flat: np.ndarray | None, offsets: np.ndarray, starts: np.ndarray | None = None
    ) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        if len(offsets) < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ValueError("NodeIndices offsets must start at 0 and not decrease")
        if flat is not None:
            flat = np.asarray(flat, dtype=np.int64)
            if flat.shape != (int(offsets[-1]),):
                raise ValueError(
                    f"NodeIndices: {len(flat)} indices for offsets ending at {int(offsets[-1])}"
                )
            flat.flags.writeable = False
            starts = None
        elif starts is not None:
            starts = np.asarray(starts, dtype=np.int64)
            if starts.shape != (len(offsets) - 1,):
                raise ValueError("NodeIndices starts: one per node")
            starts.flags.writeable = False
        offsets.flags.writeable = False
        self.flat = flat
        self.offsets = offsets
        self.starts = starts

    @classmethod
    def from_arrays(cls, parts: Sequence[np.ndarray]) -> NodeIndices:
        """Pack a list of per-node arrays (copied into one flat array)."""
        if isinstance(parts, NodeIndices):
            return parts
        sizes = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        flat = (
            np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
            if len(parts)
            else np.zeros(0, dtype=np.int64)
        )
        return cls(flat, offsets)

    @classmethod
    def ranges(cls, sizes: np.ndarray, starts: np.ndarray | None = None) -> NodeIndices:
        """Node ``i`` holds ``sizes[i]`` consecutive pool positions from ``starts[i]`` (default:
        the blocks follow each other from 0); no index array."""
        return cls(None, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]), starts)

    def _starts(self) -> np.ndarray:
        return self.offsets[:-1] if self.starts is None else self.starts

    @property
    def sizes(self) -> np.ndarray:
        """Samples per node (int64)."""
        return np.diff(self.offsets)

    @property
    def total(self) -> int:
        """Samples over all nodes."""
        return int(self.offsets[-1])

    def indices(self) -> np.ndarray:
        """Every node's indices, concatenated in node order (materialised for ranges)."""
        if self.flat is not None:
            return self.flat
        if self.starts is None:
            return np.arange(self.total, dtype=np.int64)
        sizes = self.sizes
        return np.repeat(self.starts - self.offsets[:-1], sizes) + np.arange(self.total)

    def node_of_sample(self) -> np.ndarray:
        """For each position of :meth:`indices`, the node holding it."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.sizes)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"node index {i} out of range for {n} nodes")
        start, stop = int(self.offsets[j]), int(self.offsets[j + 1])
        if self.flat is None:
            first = int(self._starts()[j])
            return np.arange(first, first + stop - start, dtype=np.int64)
        return self.flat[start:stop]

    def __iter__(self) -> Iterator[np.ndarray]:
        for j in range(len(self)):
            yield self[j]

    def __add__(self, other: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(self) + list(other)

    def __radd__(self, other: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(other) + list(self)

    def __repr__(self) -> str:
        return f"NodeIndices({len(self)} nodes, {self.total} samples)"

    def take_nodes(self, order: np.ndarray) -> NodeIndices:
        """The nodes in ``order`` (a permutation of node indices): node ``k`` of the result is
        node ``order[k]`` of this one."""
        order = np.asarray(order, dtype=np.int64)
        sizes = self.sizes[order]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        starts = self.offsets[order]
        pos = np.repeat(starts - offsets[:-1], sizes) + np.arange(int(offsets[-1]))
        return NodeIndices(self.indices()[pos], offsets)

    def sorted_within(self) -> NodeIndices:
        """Each node's indices sorted ascending (one sort over all nodes)."""
        if self.flat is None:
            return self  # ranges are ascending
        flat, nodes = self.flat, self.node_of_sample()
        span = int(flat.max()) + 1 if len(flat) else 1
        if len(self) * span < 2**62:
            key = np.sort(nodes * span + flat)
            return NodeIndices(key - nodes * span, self.offsets)
        return NodeIndices(flat[np.lexsort((flat, nodes))], self.offsets)


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
    rows are taken from the partitioner's own assignment instead — its index lists — and
    that shortcut is checked against the
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
    partitioner.load_partition(0)  # makes the partitioner determine its assignment
    idx = idx_column(partitioner.dataset)
    mapping = getattr(partitioner, "_partition_id_to_indices", None)
    if isinstance(mapping, dict) and len(mapping) == num_nodes:
        return [idx[np.asarray(mapping[i], dtype=np.int64)] for i in range(num_nodes)]
    return None


def partition_indices(
    labels: np.ndarray,
    cfg: DataConfig,
    num_nodes: int,
    num_classes: int,
    rng: np.random.Generator,
    clients: Sequence[np.ndarray] | None = None,
) -> NodeIndices:
    """Indices into the pool for each node, following ``cfg.partition``.

    Raises ``ValueError`` naming the config field when the requested split is impossible.
    """
    if cfg.partition == "natural":
        if clients is None or len(clients) != num_nodes:
            available = 0 if clients is None else len(clients)
            raise invalid(
                "num_nodes", num_nodes, f"the data has {available} natural clients available"
            )
        return NodeIndices.from_arrays(clients)
    if cfg.partition == "iid":
        return iid_shards(len(labels), num_nodes, rng)

    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IdToSizeFncPartitioner,
        PathologicalPartitioner,
    )

    seed = int(rng.integers(2**31 - 1))
    dataset = _partition_dataset(labels, rng)
    if cfg.partition == "dirichlet":
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
    flat = NodeIndices.from_arrays(parts)
    if cfg.partition == "size":
        flat = flat.take_nodes(rng.permutation(num_nodes))
        smallest = int(flat.sizes.min())
        if smallest < cfg.min_partition_size:
            raise invalid(
                "size_skew",
                cfg.size_skew,
                f"the smallest of num_nodes={num_nodes} nodes gets {smallest} samples, "
                f"fewer than min_partition_size={cfg.min_partition_size}",
            )
    return flat


def iid_shards(num_samples: int, num_nodes: int, rng: np.random.Generator) -> NodeIndices:
    """``iid`` without flwr-datasets: the equal contiguous shards ``IidPartitioner`` cuts.

    The same random stream as the partitioner path: one ``integers`` draw (the seed the other
    partitioners get), then the seeded row order of :func:`_partition_dataset`; shard ``i`` is
    rows ``[div·i + min(i, mod), div·(i+1) + min(i+1, mod))`` with ``div, mod =
    divmod(num_samples, num_nodes)``, as ``datasets.Dataset.shard(contiguous=True)`` cuts them.
    """
    if num_nodes > num_samples:
        raise invalid(
            "num_nodes",
            num_nodes,
            f"partition='iid' over {num_samples} samples with num_nodes={num_nodes} failed: "
            "more partitions than samples",
        )
    rng.integers(2**31 - 1)  # the partitioners' seed: drawn so the streams stay aligned
    order = rng.permutation(num_samples).astype(np.int64)
    div, mod = divmod(num_samples, num_nodes)
    i = np.arange(num_nodes + 1, dtype=np.int64)
    return NodeIndices(order, div * i + np.minimum(i, mod))


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


def _test_sizes(n: np.ndarray, fraction: float) -> np.ndarray:
    """:func:`local_split`'s test size for nodes of sizes ``n``, vectorised."""
    n_test = np.rint(n * float(fraction)).astype(np.int64)  # round(): half to even, as Python
    if fraction > 0:
        n_test = np.where(n >= 2, np.maximum(n_test, 1), n_test)
    return np.where(n > 0, np.minimum(n_test, n - 1), 0)


def local_split_all(
    parts: NodeIndices, fraction: float, rng: np.random.Generator, contiguous: bool
) -> tuple[NodeIndices, NodeIndices]:
    """:func:`local_split` of every node at once: ``(local train, local test)`` partitions.

    Bit-identical to calling :func:`local_split` node after node with the same ``rng``: the sort,
    the test sizes and the gathering are one numpy pass over the flat arrays; only the random
    choice of each node's test samples remains a per-node ``rng.choice`` call (its stream
    consumption depends on the node's size, so the calls must run in node order), and nodes
    whose test split is empty (``fraction == 0``, or one sample) or taken contiguously make
    none.
    """
    parts = parts.sorted_within()
    n = parts.sizes
    if parts.flat is None and contiguous:  # ranges stay ranges: O(nodes), no per-sample array
        n_test = _test_sizes(n, fraction)
        starts = parts._starts()
        return NodeIndices.ranges(n - n_test, starts), NodeIndices.ranges(
            n_test, starts + n - n_test
        )
    n_test = _test_sizes(n, fraction)
    n_train = n - n_test
    if contiguous:
        chosen = np.arange(parts.total) - np.repeat(parts.offsets[:-1], n) >= np.repeat(n_train, n)
    else:
        chosen = np.zeros(parts.total, dtype=bool)
        starts = parts.offsets[:-1]
        for i in np.flatnonzero(n_test).tolist():
            picked = rng.choice(int(n[i]), size=int(n_test[i]), replace=False)
            chosen[int(starts[i]) + picked] = True
    flat = parts.indices()
    train = NodeIndices(flat[~chosen], np.concatenate([[0], np.cumsum(n_train)]))
    test = NodeIndices(flat[chosen], np.concatenate([[0], np.cumsum(n_test)]))
    return train, test
