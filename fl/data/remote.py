"""The downloading loader, ``name="hf:<hub-dataset-name>"``, via ``flwr_datasets.FederatedDataset``.

Kept for users with internet (MNIST, Fashion-MNIST, CIFAR-10, ... from the Hugging Face Hub).
It fails fast when the hub cannot be used: ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` are read
at call time (the hub libraries read them only at import), and otherwise a 3-second TCP probe of
the hub endpoint runs first, instead of waiting ~20 s for the hub client's retries.

The splits are converted to tensors and partitioned by this package's own partitioners, like
the offline datasets: images become float32 ``(C, H, W)`` in [0, 1]; tabular numeric columns
become float32 features. Without a ``test`` split, a stratified 20% of ``train`` (fixed seed) is
held out as the central test set.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from fl.data.config import DATASETS, HF_PREFIX
from fl.data.pool import DatasetUnavailableError, Pool
from fl.data.sources import TensorSource

__all__ = ["hub_unreachable_reason", "load_remote_pool", "split_to_tensors"]

LABEL_COLUMNS = ("label", "labels", "fine_label", "character", "target", "y")
IMAGE_COLUMNS = ("image", "img", "pixel_values")
PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_unreachable_reason() -> str | None:
    """Why the Hugging Face Hub cannot be used right now, or ``None`` if it seems reachable."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return f"{var}={os.environ[var]} is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"cannot reach {host}:{port} ({err})"
    return None


def _unavailable(name: str, reason: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"cannot load dataset {HF_PREFIX}{name!s} from the Hugging Face Hub: {reason}. "
        f"Use an offline dataset instead: {', '.join(DATASETS)}"
    )


def split_to_tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Convert one ``datasets.Dataset`` split to ``(x float32, y int64, num_classes)``."""
    from datasets import ClassLabel, Image

    features = split.features
    label_col = next((c for c in LABEL_COLUMNS if c in features), None)
    if label_col is None:
        label_col = next((c for c, f in features.items() if isinstance(f, ClassLabel)), None)
    if label_col is None:
        raise ValueError(f"no label column found among {list(features)}")
    data = split.with_format("numpy")
    y = np.asarray(data[label_col], dtype=np.int64)
    feature = features[label_col]
    num_classes = int(feature.num_classes) if isinstance(feature, ClassLabel) else int(y.max()) + 1
    image_col = next(
        (c for c, f in features.items() if isinstance(f, Image) or c in IMAGE_COLUMNS), None
    )
    if image_col is not None:
        x = np.stack([np.asarray(img) for img in data[image_col]]).astype(np.float32)
        if x.max() > 1.0:
            x /= 255.0
        x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)  # (N, C, H, W)
    else:
        cols = [c for c in features if c != label_col]
        x = np.stack([np.asarray(data[c], dtype=np.float32) for c in cols], axis=1)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), num_classes


@lru_cache(maxsize=2)
def load_remote_pool(name: str) -> Pool:
    """Download (or read from the local hub cache) ``name`` and return it as a pool."""
    reason = hub_unreachable_reason()
    if reason is not None:
        raise _unavailable(name, reason)
    try:
        from flwr_datasets import FederatedDataset

        fds = FederatedDataset(dataset=name, partitioners={"train": 1}, shuffle=False)
        train = fds.load_split("train")
    except Exception as err:  # the hub raises many types; all mean "not available"
        raise _unavailable(name, f"{type(err).__name__}: {err}") from err
    try:
        test = fds.load_split("test")
    except ValueError:  # flwr_datasets: the split is not present
        test = None
    x_tr, y_tr, num_classes = split_to_tensors(train)
    if test is not None:
        x_te, y_te, _ = split_to_tensors(test)
    else:
        from sklearn.model_selection import train_test_split

        tr, te = train_test_split(
            np.arange(len(y_tr)), test_size=0.2, stratify=y_tr.numpy(), random_state=0
        )
        tr_t, te_t = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
        x_tr, y_tr, x_te, y_te = x_tr[tr_t], y_tr[tr_t], x_tr[te_t], y_tr[te_t]
    return Pool(
        train=TensorSource(x_tr, y_tr),
        test=TensorSource(x_te, y_te),
        num_classes=num_classes,
        input_shape=tuple(x_tr.shape[1:]),
    )
