"""Message helpers of the virtual grid: private copies of shared content, payload sizes, and
the work a reply says its task did (what the time model charges)."""

from __future__ import annotations

import copy
import math
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fl.protocol import keys, records


def copy_recorddict(content: RecordDict) -> RecordDict:
    """Copy a RecordDict so a node can't mutate what other nodes (or the server) hold.

    Strategies send one shared RecordDict to every node and some aggregators pop from reply
    records. Arrays are copied shallowly (their payload bytes are immutable and shared, so the
    copy is cheap); config and metric records hold scalars and lists of scalars, copied too.
    The records are refilled without Flower's per-item validation (`fl.protocol.records`):
    their contents were validated when the originals were built, and the copies are equal.
    """
    if not records.fast():
        return _plain_copy(content)
    out: dict[str, Any] = {}
    for key, record in content.items():
        if isinstance(record, ArrayRecord):
            out[key] = records.array_record({k: records.array_copy(a) for k, a in record.items()})
        elif isinstance(record, ConfigRecord | MetricRecord):
            values = {k: list(v) if isinstance(v, list) else v for k, v in record.items()}
            fresh: ConfigRecord | MetricRecord = type(record)()
            fresh.__dict__["_data"].update(values)  # as records.filled, for either type
            out[key] = fresh
        else:
            out[key] = copy.deepcopy(record)
    return records.record_dict(out)


def _plain_copy(content: RecordDict) -> RecordDict:
    """`copy_recorddict` through Flower's constructors (the reference)."""
    out = RecordDict()
    for key, record in content.items():
        if isinstance(record, ArrayRecord):
            out[key] = ArrayRecord({k: a for k, a in record.items()})
        elif isinstance(record, ConfigRecord | MetricRecord):
            values = {k: list(v) if isinstance(v, list) else v for k, v in record.items()}
            out[key] = type(record)(values)  # type: ignore[arg-type]
        else:
            out[key] = copy.deepcopy(record)
    return out


def shared_copy(content: RecordDict, memo: dict[int, tuple[RecordDict, RecordDict]]) -> RecordDict:
    """`copy_recorddict(content)`, made once per content object for all the nodes of one push
    whose apps only read their message (`reads_only`): they may share one private snapshot.
    `memo` (a dict the caller creates per push and drops after it) holds each original next
    to its copy, so an id is never reused while the memo lives."""
    hit = memo.get(id(content))
    if hit is not None and hit[0] is content:
        return hit[1]
    snapshot = copy_recorddict(content)
    memo[id(content)] = (content, snapshot)
    return snapshot


def payload_bytes(content: RecordDict) -> int:
    """Bytes of all arrays in a message: what goes over the network in the time model
    (`ArrayRecord.count_bytes`: payloads and key lengths)."""
    return sum(
        len(a.data) + len(k)
        for rec in content.values()
        if isinstance(rec, ArrayRecord)
        for k, a in rec.items()
    )


def reported_work(reply: Message, fallback_flops_per_example: float) -> float:
    """FLOPs the ClientApp says it did; else num-examples × a fallback cost (stock clients).

    A malformed value (negative, NaN, not a number) counts as no work: the reply itself is
    judged (and rejected) by the server, the grid only needs a time for it.
    """
    if reply.has_error():
        return 0.0
    for key, scale in ((keys.WORK_FLOPS, 1.0), (keys.NUM_EXAMPLES, fallback_flops_per_example)):
        for rec in reply.content.values():
            if isinstance(rec, MetricRecord) and key in rec:
                value = rec[key]
                if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
                    return float(value) * scale
                return 0.0
    return 0.0
