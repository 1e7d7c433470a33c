"""scikit-learn's bundled digits (UCI optdigits test part): 1797 8x8 images, 10 classes.

Pixels (0..16) are scaled to [0, 1] and flattened to 64 features. A stratified 20% is held out
as the central test set with a fixed seed, so every experiment seed evaluates on the same test
set, just as MNIST has an official test split. The data has no writer ids: no natural partition.

Importing scikit-learn costs ~2 s, so the data file it ships (``sklearn/datasets/data/
digits.csv.gz``) is read directly, found without importing the package, and split by
`stratified_split`, a copy of ``train_test_split(..., stratify=y, random_state=seed)``: the
same arrays, bit for bit. Without that file, scikit-learn's own functions are used.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fl.data.pool import Pool
from fl.data.sources import TensorSource

__all__ = ["load_digits_pool"]

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_file() -> Path | None:
    """scikit-learn's ``digits.csv.gz``, located without importing scikit-learn (None if
    scikit-learn or the file is missing)."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _read_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data, target)`` as ``sklearn.datasets.load_digits`` returns them: float64 pixels
    ``(1797, 64)`` and int labels."""
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int, copy=False)


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    """``sklearn.utils.extmath._approximate_mode``: per-class draws summing to `n_draws`,
    proportional to `class_counts`, remainders handed out largest first (ties at random)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        values = np.sort(np.unique(remainder))[::-1]
        for value in values:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices exactly as ``sklearn.model_selection.train_test_split(...,
    test_size=test_fraction, stratify=y, random_state=seed)`` picks them (its
    ``StratifiedShuffleSplit``, scikit-learn 1.x), drawing from ``RandomState(seed)`` in the
    same order. For a 1-d `y` of class labels, each present at least twice."""
    n_samples = len(y)
    n_test = math.ceil(test_fraction * n_samples)
    n_train = n_samples - n_test
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"cannot stratify {n_samples} labels into {n_train}/{n_test}")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[np.integer] = []
    test: list[np.integer] = []
    for i in range(len(classes)):
        permutation = rng.permutation(class_counts[i])
        perm_indices_class_i = class_indices[i].take(permutation, mode="clip")
        train.extend(perm_indices_class_i[: n_i[i]])
        test.extend(perm_indices_class_i[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _sklearn_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The split through scikit-learn itself (the reference; slow to import)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    return x_tr, y_tr, x_te, y_te


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load, scale and split once per process: ``(x_train, y_train, x_test, y_test)``."""
    path = digits_file()
    if path is None:
        return _sklearn_arrays()
    data, target = _read_digits(path)
    x = (data / 16.0).astype(np.float32)
    y = target.astype(np.int64)
    train, test = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    return x[train], y[train], x[test], y[test]


def load_digits_pool() -> Pool:
    """The digits pool: ~1437 training and 360 test examples of shape ``(64,)``."""
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    return Pool(
        train=TensorSource(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        test=TensorSource(torch.from_numpy(x_te), torch.from_numpy(y_te)),
        num_classes=10,
        input_shape=(64,),
    )
