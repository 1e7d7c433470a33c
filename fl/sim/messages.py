"""Message helpers of the virtual grid: private copies of shared content, payload sizes, and
the work a reply says its task did (what the time model charges)."""

from __future__ import annotations

import copy
import math

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fl.protocol import keys
from fl.protocol.flower_internals import copy_array


def copy_recorddict(content: RecordDict) -> RecordDict:
    """Copy a RecordDict so a node can't mutate what other nodes (or the server) hold.

    Strategies send one shared RecordDict to every node and some aggregators pop from reply
    records. Arrays are copied shallowly (their payload bytes are immutable and shared, so the
    copy is cheap); config and metric records hold scalars and lists of scalars, copied too.
    """
    out = RecordDict()
    for key, record in content.items():
        if isinstance(record, ArrayRecord):
            out[key] = ArrayRecord({k: copy_array(a) for k, a in record.items()})
        elif isinstance(record, ConfigRecord | MetricRecord):
            values = {k: list(v) if isinstance(v, list) else v for k, v in record.items()}
            out[key] = type(record)(values)  # type: ignore[arg-type]
        else:
            out[key] = copy.deepcopy(record)
    return out


def payload_bytes(content: RecordDict) -> int:
    """Bytes of all arrays in a message: what goes over the network in the time model."""
    return sum(int(rec.count_bytes()) for rec in content.array_records.values())


def reported_work(reply: Message, fallback_flops_per_example: float) -> float:
    """FLOPs the ClientApp says it did; else num-examples × a fallback cost (stock clients).

    A malformed value (negative, NaN, not a number) counts as no work: the reply itself is
    judged (and rejected) by the server, the grid only needs a time for it.
    """
    if reply.has_error():
        return 0.0
    for key, scale in ((keys.WORK_FLOPS, 1.0), (keys.NUM_EXAMPLES, fallback_flops_per_example)):
        for rec in reply.content.metric_records.values():
            if key in rec:
                value = rec[key]
                if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
                    return float(value) * scale
                return 0.0
    return 0.0
