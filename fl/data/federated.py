"""``load_federated``: one call from a ``DataConfig`` to per-node index arrays over a sample pool.

Steps, each with its own random stream derived from ``seed`` (so changing one step's use of
randomness does not shift another's): load the pool (cached per process), cap it to
``max_samples``, partition it over the nodes, split every node into local train/test.
The same ``(cfg, num_nodes, seed)`` always gives identical indices and tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fl.data.config import HF_PREFIX, DataConfig, invalid, validate_config
from fl.data.digits import load_digits_pool
from fl.data.mnist import load_mnist_pool
from fl.data.partition import NodeIndices, local_split_all, partition_indices
from fl.data.pool import Pool
from fl.data.remote import load_remote_pool
from fl.data.shakespeare import load_shakespeare_pool
from fl.data.sources import SampleSource, TextWindowSource, subset
from fl.data.synthetic import LazySyntheticSource, load_lazy_synthetic_pool, load_synthetic_pool

__all__ = ["FederatedData", "load_federated"]

_CAP, _PARTITION, _LOCAL = 1, 2, 3  # random stream ids


@dataclass
class FederatedData:
    """A dataset spread over ``num_nodes`` simulated nodes.

    ``node_train[i]`` and ``node_test[i]`` index into ``train`` (the node's local train and
    test splits; sorted, disjoint, and disjoint across nodes); ``test`` is the central held-out
    set for server-side evaluation. ``node_names`` names natural clients (e.g.
    ``"hamlet/HAMLET"``), ``None`` for other partitions.

    The splits are :class:`~fl.data.partition.NodeIndices` (one flat index array and offsets
    each; ``node_train[i]`` is an int64 view), so a million nodes cost two arrays, not two
    million; ``node_names`` may be any sequence (lazily named for large natural pools).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    vocab_size: int | None
    train: SampleSource
    test: SampleSource
    node_train: NodeIndices
    node_test: NodeIndices
    node_names: Sequence[str] | None = None

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return len(self.node_train)

    def node_sizes(self) -> np.ndarray:
        """Local training samples per node (int64, one array op)."""
        return self.node_train.sizes

    def _check_node(self, i: int) -> None:
        if not 0 <= i < self.num_nodes:
            raise IndexError(f"node index {i} out of range for {self.num_nodes} nodes")

    def node(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Node ``i``'s data as tensors: ``(x_train, y_train, x_test, y_test)`` (copies)."""
        self._check_node(i)
        x_tr, y_tr = self.train.take(self.node_train[i])
        x_te, y_te = self.train.take(self.node_test[i])
        return x_tr, y_tr, x_te, y_te

    def label_counts(self, i: int) -> np.ndarray:
        """Per-class counts of node ``i``'s local train split, shape ``(num_classes,)``."""
        self._check_node(i)
        idx = self.node_train[i]
        if isinstance(self.train, LazySyntheticSource):  # only this node's client is generated
            labels = self.train.labels_at(idx)
        else:
            labels = self.train.labels[idx]
        return np.bincount(labels, minlength=self.num_classes)


def _load_pool(cfg: DataConfig, num_nodes: int, seed: int) -> Pool:
    """Dispatch on ``cfg.name``; raw files are parsed once per process by each loader."""
    if cfg.name == "digits":
        return load_digits_pool()
    if cfg.name == "synthetic":
        load = load_lazy_synthetic_pool if cfg.synthetic_lazy else load_synthetic_pool
        return load(num_nodes, cfg.synthetic_alpha, cfg.synthetic_beta, cfg.synthetic_iid, seed)
    if cfg.name == "mnist":
        return load_mnist_pool()
    if cfg.name == "shakespeare":
        natural = cfg.partition == "natural"
        return load_shakespeare_pool(
            cfg.shakespeare_min_samples, num_nodes if natural else None, seed
        )
    return load_remote_pool(cfg.name.removeprefix(HF_PREFIX))


def _cap(pool: Pool, max_samples: int, natural: bool, rng: np.random.Generator) -> Pool:
    """Keep at most ``max_samples`` training samples (seeded).

    Non-natural partitions subsample the pool uniformly. Natural partitions subsample every
    client: client ``k`` of size ``n_k`` keeps ``1 + floor((n_k - 1)(M - K) / (N - K))``
    samples, so every client keeps at least one and the total stays <= ``M``.
    """
    n = len(pool.train)
    if max_samples >= n:
        return pool
    if not natural or pool.clients is None:
        keep = np.sort(rng.choice(n, size=max_samples, replace=False))
        return Pool(
            subset(pool.train, keep), pool.test, pool.num_classes, pool.input_shape, pool.vocab_size
        )
    k = len(pool.clients)
    if max_samples < k:
        raise invalid(
            "max_samples", max_samples, f"fewer than one sample for each of the {k} natural clients"
        )
    kept, clients, start = [], [], 0
    for members in pool.clients:
        quota = 1 + (len(members) - 1) * (max_samples - k) // (n - k)
        kept.append(np.sort(rng.choice(members, size=quota, replace=False)))
        clients.append(np.arange(start, start + quota))
        start += quota
    return Pool(
        subset(pool.train, np.concatenate(kept)),
        pool.test,
        pool.num_classes,
        pool.input_shape,
        pool.vocab_size,
        tuple(clients),
        pool.client_names,
    )


def _partition(
    pool: Pool, cfg: DataConfig, num_nodes: int, rng: np.random.Generator
) -> NodeIndices:
    """Indices of each node; with ``outlier_class`` the last node gets all of that class."""
    if cfg.partition == "natural" and isinstance(pool.clients, NodeIndices):
        if len(pool.clients) != num_nodes:  # the generator made one client per node
            raise invalid(
                "num_nodes", num_nodes, f"the data has {len(pool.clients)} natural clients"
            )
        return pool.clients  # a lazy pool's clients: its labels are never materialised
    labels = np.asarray(pool.train.labels)
    c = cfg.outlier_class
    if c < 0:
        return partition_indices(labels, cfg, num_nodes, pool.num_classes, rng, pool.clients)
    if c >= pool.num_classes:
        raise invalid("outlier_class", c, f"must be < num_classes ({pool.num_classes})")
    outlier = np.flatnonzero(labels == c)
    rest = np.flatnonzero(labels != c)
    if len(outlier) == 0:
        raise invalid("outlier_class", c, "no training example has this class")
    parts = partition_indices(labels[rest], cfg, num_nodes - 1, pool.num_classes, rng)
    return NodeIndices(
        np.concatenate([rest[parts.indices()], outlier]),
        np.append(parts.offsets, parts.total + len(outlier)),
    )


def _names(names: Sequence[str]) -> Sequence[str]:
    """A pool's client names as a list (a lazy pool's name sequence is kept as it is)."""
    return list(names) if isinstance(names, tuple | list) else names


def load_federated(cfg: DataConfig, num_nodes: int, seed: int) -> FederatedData:
    """Load ``cfg.name`` and partition it over ``num_nodes`` nodes, deterministically in ``seed``.

    Raises:
        ValueError: an invalid config value, naming the field and the value.
        DatasetUnavailableError: the dataset's package is missing, or the hub is unreachable.
    """
    validate_config(cfg, num_nodes, seed)
    pool = _load_pool(cfg, num_nodes, seed)
    if cfg.classes_per_node > pool.num_classes:
        raise invalid(
            "classes_per_node",
            cfg.classes_per_node,
            f"must be in [1, {pool.num_classes}] (num_classes of {cfg.name!r})",
        )
    natural = cfg.partition == "natural"
    if cfg.max_samples is not None:
        pool = _cap(pool, cfg.max_samples, natural, np.random.default_rng([seed, _CAP]))
    if num_nodes > len(pool.train):
        raise invalid(
            "num_nodes", num_nodes, f"more nodes than the {len(pool.train)} training samples"
        )
    parts = _partition(pool, cfg, num_nodes, np.random.default_rng([seed, _PARTITION]))
    empty = np.flatnonzero(parts.sizes == 0)
    if len(empty):
        raise invalid(
            "num_nodes",
            num_nodes,
            f"partition={cfg.partition!r} left {len(empty)} node(s) without samples "
            f"(first: node {empty[0]})",
        )
    rng = np.random.default_rng([seed, _LOCAL])
    # Text windows and generated (lazy) nodes split contiguously: no per-node random draw.
    contiguous = isinstance(pool.train, TextWindowSource | LazySyntheticSource)
    node_train, node_test = local_split_all(parts, cfg.local_test_fraction, rng, contiguous)
    return FederatedData(
        name=cfg.name,
        num_classes=pool.num_classes,
        input_shape=pool.input_shape,
        vocab_size=pool.vocab_size,
        train=pool.train,
        test=pool.test,
        node_train=node_train,
        node_test=node_test,
        node_names=_names(pool.client_names) if natural and pool.client_names else None,
    )
