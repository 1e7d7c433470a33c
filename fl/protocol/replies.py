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
from typing import TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fl.protocol import keys, records, stack
from fl.protocol.payload import decode

R = TypeVar("R", ArrayRecord, MetricRecord, ConfigRecord)


def reply_problem(
    reply: Message, reference: ArrayRecord | None, weighted_by_key: str = keys.NUM_EXAMPLES
) -> str | None:
    """Why `reply` must not be aggregated (None if it is fine). `reference` is the model the
    server sent; None skips the array checks (evaluate replies)."""
    problem = _metric_problem(reply, weighted_by_key)
    if problem is not None or reply.has_error() or reference is None:
        return problem
    arrays = _records(reply.content, ArrayRecord)
    if len(arrays) != 1:
        return f"expected one ArrayRecord, got {len(arrays)}"
    return _array_problem(arrays[0], reference)


def _records(content: RecordDict, kind: type[R]) -> list[R]:
    """The records of one type in `content`, in order (`content.<kind>_records.values()`,
    without building Flower's synced view)."""
    return [r for r in content.values() if isinstance(r, kind)]


def _metric_problem(reply: Message, weighted_by_key: str) -> str | None:
    if reply.has_error():
        return None  # error replies are failures, counted by the strategy as such
    metrics = _records(reply.content, MetricRecord)
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
    return None


def _array_problem(rec: ArrayRecord, reference: ArrayRecord) -> str | None:
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


def _problems(
    replies: list[Message], reference: ArrayRecord | None, weighted_by_key: str
) -> list[str | None]:
    """`reply_problem` of every reply. The models of the replies whose arrays match the
    reference exactly (names, shapes, dtypes, plain .npy payloads) are decoded together into
    one stack (`fl.protocol.stack`, which strategies then read) and checked for NaN/Inf in
    one pass; any other reply is checked on its own, with the same outcome either way."""
    problems: list[str | None] = []
    fast: list[tuple[int, ArrayRecord]] = []
    lay = stack.layout_key(reference) if reference is not None else None
    use_stack = records.fast() and lay is not None and stack.floating_dtype(lay) is not None
    for i, reply in enumerate(replies):
        problem = _metric_problem(reply, weighted_by_key)
        if problem is None and not reply.has_error() and reference is not None:
            arrays = _records(reply.content, ArrayRecord)
            if len(arrays) != 1:
                problem = f"expected one ArrayRecord, got {len(arrays)}"
            elif use_stack and stack.readable(arrays[0], lay):  # type: ignore[arg-type]
                fast.append((i, arrays[0]))
            else:
                problem = _array_problem(arrays[0], reference)
        problems.append(problem)
    if fast:
        assert lay is not None
        latest = stack.latest()
        recs = [rec for _, rec in fast]
        values = stack.rows_for(recs, lay) if latest is not None else None
        if values is None:
            values = stack.build(recs, lay).values
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            segments = stack.float_segments(lay)
            for (i, _), ok, row in zip(fast, finite, values, strict=True):
                if not ok:
                    bad = next(n for n, a, b in segments if not np.isfinite(row[a:b]).all())
                    problems[i] = f"array {bad!r} has NaN or Inf values"
    return problems


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
    replies = list(replies)
    keep: list[Message] = []
    rejected: dict[int, str] = {}
    for reply, problem in zip(replies, _problems(replies, reference, weighted_by_key), strict=True):
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
    ((metric_name, metrics),) = [(k, r) for k, r in content.items() if isinstance(r, MetricRecord)]
    names = tuple(k for k, r in content.items() if isinstance(r, ArrayRecord))
    return names, metric_name, tuple(sorted(metrics))
