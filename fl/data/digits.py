"""scikit-learn's bundled digits (UCI optdigits test part): 1797 8x8 images, 10 classes.

Pixels (0..16) are scaled to [0, 1] and flattened to 64 features. A stratified 20% is held out
as the central test set with a fixed seed, so every experiment seed evaluates on the same test
set, just as MNIST has an official test split. The data has no writer ids: no natural partition.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from fl.data.pool import Pool
from fl.data.sources import TensorSource

__all__ = ["load_digits_pool"]

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load, scale and split once per process: ``(x_train, y_train, x_test, y_test)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    return x_tr, y_tr, x_te, y_te


def load_digits_pool() -> Pool:
    """The digits pool: ~1437 training and 360 test examples of shape ``(64,)``."""
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    return Pool(
        train=TensorSource(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        test=TensorSource(torch.from_numpy(x_te), torch.from_numpy(y_te)),
        num_classes=10,
        input_shape=(64,),
    )
