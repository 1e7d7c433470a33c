"""Flat partitions (fl.data.partition.NodeIndices), the vectorised local split, numpy IID shards
and lazy Synthetic(α, β).

The digests of `test_partitions_are_bit_identical_to_the_per_node_lists` were taken with the code
before the change (per-node lists, flwr-datasets' IidPartitioner, one local_split per node)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from fl.data import DataConfig, load_federated
from fl.data.partition import NodeIndices, iid_shards, local_split, local_split_all
from fl.data.synthetic import (
    DIMENSION,
    LazySynthetic,
    LazySyntheticSource,
    client_sizes,
    generate_synthetic,
)
from fl.schema import ConfigError


def _digest(name: str, partition: str, extra: dict, n: int, seed: int) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fd = load_federated(DataConfig(name=name, partition=partition, **extra), n, seed)
    h = hashlib.sha256()
    for arrs in (fd.node_train, fd.node_test):
        for a in arrs:
            h.update(np.asarray(a, dtype=np.int64).tobytes())
            h.update(b"|")
    for t in fd.node(0) + fd.node(n - 1):
        h.update(t.numpy().tobytes())
    h.update(repr(fd.node_names).encode())
    return h.hexdigest()[:16]


BEFORE = [
    ("digits", "iid", {}, 10, 0, "adf83c87f11cc447"),
    ("digits", "iid", {"local_test_fraction": 0.0}, 7, 1, "3bd8e36b76dcf129"),
    ("digits", "iid", {"local_test_fraction": 0.5}, 33, 2, "9aa9be68c592219e"),
    ("digits", "dirichlet", {"alpha": 0.3}, 12, 0, "2913cfa162ba0cab"),
    ("digits", "shards", {}, 15, 3, "c6fbbe3364347498"),
    ("digits", "size", {"size_skew": 1.0}, 9, 4, "b9b87a8c23b141ef"),
    ("digits", "size", {"size_skew": 0.0}, 9, 4, "92e5592a5cf1ebce"),
    ("digits", "iid", {"outlier_class": 3}, 8, 5, "a230d5aad9da45c0"),
    ("digits", "dirichlet", {"outlier_class": 1, "alpha": 1.0}, 6, 5, "2f1a277cc69dfbfd"),
    ("digits", "iid", {"max_samples": 500}, 20, 6, "41a4b03a70500c86"),
    ("mnist", "iid", {}, 100, 0, "7cd729e36e063688"),
    ("mnist", "iid", {"max_samples": 5000}, 1000, 1, "89b8f86e15a6015f"),
    ("mnist", "shards", {"max_samples": 3000}, 20, 2, "985c979dfc24de95"),
    ("synthetic", "natural", {}, 30, 1, "fa16aca20dca168a"),
    ("synthetic", "natural", {"local_test_fraction": 0.0}, 30, 1, "049b871209deeec9"),
    (
        "synthetic",
        "natural",
        {"synthetic_iid": True, "max_samples": 3000},
        20,
        2,
        "baf1de5799e533a3",
    ),
    ("synthetic", "iid", {}, 10, 3, "0b9a5b627631dff0"),
    ("synthetic", "dirichlet", {}, 10, 3, "0311f870b5e224f6"),
    ("shakespeare", "natural", {}, 20, 0, "a3fb98251151a17b"),
]


@pytest.mark.parametrize(("name", "partition", "extra", "n", "seed", "digest"), BEFORE)
def test_partitions_are_bit_identical_to_the_per_node_lists(
    name: str, partition: str, extra: dict, n: int, seed: int, digest: str
) -> None:
    assert _digest(name, partition, extra, n, seed) == digest


@pytest.mark.parametrize(("num_samples", "num_nodes"), [(10, 10), (101, 7), (1797, 40), (60, 1)])
def test_iid_shards_are_flwr_datasets_iid_partitioner_shards(
    num_samples: int, num_nodes: int
) -> None:
    from datasets import Dataset
    from flwr_datasets.partitioner import IidPartitioner

    parts = iid_shards(num_samples, num_nodes, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    rng.integers(2**31 - 1)
    order = rng.permutation(num_samples)
    partitioner = IidPartitioner(num_partitions=num_nodes)
    partitioner.dataset = Dataset.from_dict({"idx": order})
    for i in range(num_nodes):
        expected = np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64)
        np.testing.assert_array_equal(parts[i], expected)
    assert sorted(parts.indices().tolist()) == list(range(num_samples))


def test_iid_does_not_import_datasets() -> None:
    code = (
        "import sys\n"
        "from fl.data import DataConfig, load_federated\n"
        "fd = load_federated(DataConfig(name='digits'), 30, 0)\n"
        "assert len(fd.node_train) == 30\n"
        "bad = [m for m in ('datasets', 'flwr_datasets') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.05])
@pytest.mark.parametrize("contiguous", [False, True])
def test_local_split_all_is_local_split_node_by_node(fraction: float, contiguous: bool) -> None:
    gen = np.random.default_rng(0)
    sizes = [0, 1, 2, 3, 5, 11, 40, 12_000, 7, 1, 2]  # 12 000: numpy's other choice() branch
    pool = gen.permutation(sum(sizes))
    arrays = np.split(pool, np.cumsum(sizes)[:-1])
    parts = NodeIndices.from_arrays(arrays)
    train, test = local_split_all(parts, fraction, np.random.default_rng(9), contiguous)
    rng = np.random.default_rng(9)
    for i, arr in enumerate(arrays):
        tr, te = local_split(arr, fraction, rng, contiguous)
        np.testing.assert_array_equal(train[i], tr)
        np.testing.assert_array_equal(test[i], te)


def test_node_indices_behave_as_the_lists_they_replace() -> None:
    arrays = [np.array([5, 1]), np.array([], dtype=np.int64), np.array([3])]
    parts = NodeIndices.from_arrays(arrays)
    assert len(parts) == 3 and parts.sizes.tolist() == [2, 0, 1] and parts.total == 3
    assert [a.tolist() for a in parts] == [[5, 1], [], [3]]
    assert parts[-1].tolist() == [3] and [a.tolist() for a in parts[1:]] == [[], [3]]
    both = parts + parts
    assert isinstance(both, list) and len(both) == 6
    assert np.concatenate(parts + [np.array([9])]).tolist() == [5, 1, 3, 9]  # noqa: RUF005
    with pytest.raises(IndexError):
        parts[3]
    with pytest.raises(ValueError):
        parts[0][0] = 7  # read-only views of the flat array
    ranges = NodeIndices.ranges(np.array([2, 3]), starts=np.array([10, 0]))
    assert [a.tolist() for a in ranges] == [[10, 11], [0, 1, 2]]
    assert ranges.indices().tolist() == [10, 11, 0, 1, 2]
    moved = parts.take_nodes(np.array([2, 0, 1]))
    assert [a.tolist() for a in moved] == [[3], [5, 1], []]


# ------------------------------------------------------------------------------- lazy Synthetic
def test_lazy_synthetic_shares_the_eager_sizes_and_priors() -> None:
    eager_sizes = [len(y) for _, y in generate_synthetic(12, 1.0, 1.0, False, 4)]
    gen = LazySynthetic(12, 1.0, 1.0, False, 4)
    assert gen.sizes.tolist() == eager_sizes == client_sizes(12, 4).tolist()
    x_tr, y_tr, x_te, y_te = gen.client(3)
    assert x_tr.shape == (int(0.9 * eager_sizes[3]), DIMENSION) and x_tr.dtype == np.float32
    assert len(y_tr) + len(y_te) == eager_sizes[3] and len(x_te) == len(y_te)
    again = LazySynthetic(12, 1.0, 1.0, False, 4).client(3)  # generated from (seed, client)
    for a, b in zip(gen.client(3), again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_lazy_synthetic_million_nodes_is_cheap_and_touches_only_used_clients() -> None:
    cfg = DataConfig(name="synthetic", partition="natural", synthetic_lazy=True)
    fd = load_federated(cfg, 1_000_000, 0)
    assert isinstance(fd.train, LazySyntheticSource) and fd.num_nodes == 1_000_000
    assert fd.node_train.flat is None and fd.node_test.flat is None  # ranges, no index arrays
    gen = fd.train.gen
    assert not gen._cache
    x_tr, y_tr, x_te, y_te = fd.node(123_456)
    assert list(gen._cache) == [123_456]
    n_train = int(0.9 * gen.sizes[123_456])
    assert len(y_tr) + len(y_te) == n_train and len(y_te) == max(1, round(0.2 * n_train))
    assert fd.label_counts(123_456).sum() == len(y_tr)
    assert fd.node_names is not None and fd.node_names[123_456] == "f_123456"
    # local train and test are the two ends of the node's generated 90 % part
    client_x, client_y = gen.client(123_456)[:2]
    np.testing.assert_array_equal(np.concatenate([y_tr, y_te]), client_y)
    np.testing.assert_array_equal(np.concatenate([x_tr, x_te]), client_x)


def test_lazy_synthetic_iid_has_the_eager_distribution() -> None:
    cfg = DataConfig(name="synthetic", partition="natural", synthetic_iid=True, synthetic_lazy=True)
    fd = load_federated(cfg, 30, 1)
    x, _ = fd.train.take(np.arange(len(fd.train)))
    var = x.var(dim=0).numpy()
    assert abs(var[0] - 1.0) < 0.1 and abs(var[59] / 60**-1.2 - 1.0) < 0.1
    dominant = np.median([fd.label_counts(i).max() / len(fd.node_train[i]) for i in range(30)])
    lazy_niid = load_federated(
        DataConfig(name="synthetic", partition="natural", synthetic_lazy=True), 30, 1
    )
    dominant_niid = np.median(
        [lazy_niid.label_counts(i).max() / len(lazy_niid.node_train[i]) for i in range(30)]
    )
    assert dominant_niid > 0.75 and dominant < 0.45  # as the eager generator's test checks


@pytest.mark.parametrize(
    "extra",
    [
        {"name": "mnist", "partition": "iid"},
        {"name": "synthetic", "partition": "iid"},
        {"name": "synthetic", "partition": "natural", "max_samples": 100},
        {"name": "synthetic", "partition": "natural", "synthetic_lazy": 1},
    ],
)
def test_synthetic_lazy_needs_a_natural_uncapped_synthetic(extra: dict) -> None:
    with pytest.raises(ConfigError) as err:
        load_federated(DataConfig(synthetic_lazy=extra.pop("synthetic_lazy", True), **extra), 5, 0)
    assert err.value.key == "data.synthetic_lazy"
