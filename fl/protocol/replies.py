"""Checks on client replies before anything is aggregated.

A reply whose model has NaN/Inf, a missing or extra array, a different shape or dtype than the
model the server sent, or a missing/negative/non-finite `num-examples` is rejected and counted,
never averaged in. The round loop applies this to every strategy (stock Flower ones included),
and the robust strategies apply it themselves so they are safe on any grid.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, Message

from fl.protocol import keys
from fl.protocol.payload import decode


def reply_problem(
    reply: Message, reference: ArrayRecord | None, weighted_by_key: str = keys.NUM_EXAMPLES
) -> str | None:
    """Why `reply` must not be aggregated (None if it is fine). `reference` is the model the
    server sent; None skips the array checks (evaluate replies)."""
    if reply.has_error():
        return None  # error replies are failures, counted by the strategy as such
    content = reply.content
    metrics = list(content.metric_records.values())
    if len(metrics) != 1:
        return f"expected one MetricRecord, got {len(metrics)}"
    if weighted_by_key not in metrics[0]:
        return f"missing metric {weighted_by_key!r}"
    n = metrics[0][weighted_by_key]
    if not isinstance(n, int | float) or not math.isfinite(float(n)) or float(n) < 0:
        return f"{weighted_by_key} = {n!r} is not a finite number ≥ 0"
    work = metrics[0].get(keys.WORK_FLOPS)
    if work is not None and (
        not isinstance(work, int | float) or not math.isfinite(float(work)) or float(work) < 0
    ):
        return f"work-flops = {work!r} is not a finite number ≥ 0"
    if reference is None:
        return None
    arrays = list(content.array_records.values())
    if len(arrays) != 1:
        return f"expected one ArrayRecord, got {len(arrays)}"
    rec = arrays[0]
    missing = set(reference) - set(rec)
    extra = set(rec) - set(reference)
    if missing or extra:
        return (
            f"array keys differ from the model sent (missing {sorted(missing)}, "
            f"extra {sorted(extra)})"
        )
    for key, ref in reference.items():
        arr = rec[key]
        if tuple(arr.shape) != tuple(ref.shape):
            return f"array {key!r} has shape {tuple(arr.shape)}, expected {tuple(ref.shape)}"
        if arr.dtype != ref.dtype:
            return f"array {key!r} has dtype {arr.dtype}, expected {ref.dtype}"
        try:
            values = decode(arr, copy=False)
        except Exception as exc:  # corrupted payload bytes
            return f"array {key!r} cannot be decoded: {exc}"
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            return f"array {key!r} has NaN or Inf values"
    return None


def split_replies(
    replies: Iterable[Message],
    reference: ArrayRecord | None,
    weighted_by_key: str = keys.NUM_EXAMPLES,
) -> tuple[list[Message], dict[int, str]]:
    """(replies fit to aggregate, rejected node → reason); error replies are kept (they are
    failures the strategy counts).

    Flower's strategies also need every reply to have the same record names and metric keys;
    replies whose layout differs from the most common one (ties: the first seen) are rejected
    rather than allowed to stop the run.
    """
    keep: list[Message] = []
    rejected: dict[int, str] = {}
    for reply in replies:
        problem = reply_problem(reply, reference, weighted_by_key)
        if problem is None:
            keep.append(reply)
        else:
            rejected[int(reply.metadata.src_node_id)] = problem
    layouts = [_layout(r) for r in keep]
    counts = Counter(x for x in layouts if x is not None)
    if counts:
        common = max(counts, key=lambda x: (counts[x], -layouts.index(x)))
        consistent = []
        for reply, lay in zip(keep, layouts, strict=True):
            if lay is None or lay == common:
                consistent.append(reply)
            else:
                rejected[int(reply.metadata.src_node_id)] = (
                    f"record names or metric keys {lay} differ from the other replies' {common}"
                )
        keep = consistent
    return keep, rejected


def _layout(reply: Message) -> tuple[tuple[str, ...], str, tuple[str, ...]] | None:
    """(ArrayRecord names, MetricRecord name, metric keys) of a content reply."""
    if reply.has_error():
        return None
    content = reply.content
    ((metric_name, metrics),) = content.metric_records.items()
    return tuple(content.array_records), metric_name, tuple(sorted(metrics))
