"""What an asynchronous strategy holds: the task each busy node was given, and the client
updates it accepted, waiting in the buffer to be weighted and applied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message

from fl.protocol import keys


@dataclass
class Task:
    """Work handed to one node: the model version it was sent and when."""

    node_id: int
    version: int
    arrays: ArrayRecord
    sent_at: float
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Update:
    """One accepted client update, ready to be weighted and applied."""

    node_id: int
    version: int  # the version the node trained on
    staleness: int  # τ at the time the window is applied
    model: torch.Tensor  # w_client, flat (float64)
    delta: torch.Tensor  # w_client − w_sent
    num_examples: float
    label_counts: np.ndarray | None
    metrics: dict[str, float]
    reply: Message


def parse_label_counts(value: Any) -> tuple[np.ndarray | None, str | None]:
    """The reply's label counts (None if it reports none), or why they are malformed."""
    if value is None:
        return None, None
    values = value if isinstance(value, list) else [value]
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None, f"{keys.LABEL_COUNTS} = {value!r} is not a list of numbers"
    if arr.ndim != 1 or not np.isfinite(arr).all() or (arr < 0).any():
        return None, f"{keys.LABEL_COUNTS} must be finite counts ≥ 0, got {value!r}"
    if (arr != np.floor(arr)).any():
        return None, f"{keys.LABEL_COUNTS} must be integer counts, got {value!r}"
    return arr, None


def label_counts_problem(counts: np.ndarray, metrics: Mapping[str, Any]) -> str | None:
    """Why reported label counts disagree with the reply's own `examples-processed` (None if
    they agree or it is not reported): the labels are of the examples the node trained on."""
    processed = metrics.get(keys.EXAMPLES_PROCESSED)
    if not isinstance(processed, int | float) or isinstance(processed, bool):
        return None
    if float(counts.sum()) != float(processed):
        return (
            f"{keys.LABEL_COUNTS} sum to {counts.sum():g}, but {keys.EXAMPLES_PROCESSED} "
            f"= {processed!r}"
        )
    return None
