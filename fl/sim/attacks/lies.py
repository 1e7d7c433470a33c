"""Lies a malicious node tells about itself in a train reply's metrics (``attack.lies``).

- ``inflate_examples``: ``num-examples`` × f (the FedAvg weight), and — a consistent liar —
  ``examples-processed`` and every entry of ``label-counts`` × f too, so that the counts
  still sum to the examples processed. Integers stay integers: ``int(round(n·f))``; the label
  counts are rounded by largest remainder (ties: the lowest class) so that they sum to
  ``int(round(sum·f))`` exactly, which is the inflated ``examples-processed`` whenever the
  honest counts summed to it (for an integer f every rounding is exact).
  ``work-flops`` is left honest: the node's virtual compute time stays what its device
  needs (a ClientApp that reports no ``work-flops`` is charged by ``num-examples``, then
  inflated too: see `fl.sim.messages.reported_work`).
- ``forge_labels``: ``label-counts`` becomes one-hot: the honest total on the class the node
  has least of in its honest counts (ties: the lowest index). Without knowing the global
  label distribution q, a one-hot p on a rare class minimises the Bhattacharyya coefficient
  BC(p, q) = Σ √(p_c q_c) = √q_c, hence maximises AdaSGD's boost 1/BC. A reply without
  ``label-counts`` is left as it is (there is nothing to forge, and adding the key would
  change the reply's layout, which the server checks).

Forging runs before inflating, so ``forge_labels`` + ``inflate_examples`` gives the inflated
total on one class. Both are pure functions of the reply's metrics (no randomness).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import Message, MetricRecord, RecordDict

from fl.protocol import keys

__all__ = ["forge_label_counts", "inflate_counts", "inflate_metrics", "lie_in_metrics"]


def _scaled(value: Any, factor: float) -> Any:
    """A scalar metric × factor (ints stay ints: int(round(n·f))); other values unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return round(value * factor) if isinstance(value, int) else float(value) * factor


def inflate_counts(counts: Sequence[int | float], factor: float) -> list[int] | list[float]:
    """Counts × factor. Integer counts stay integers and sum to int(round(sum·factor)): the
    floors, plus one for the largest remainders (ties: the lowest index)."""
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return [float(c) * factor for c in counts]
    ints = [int(c) for c in counts]
    exact = [c * factor for c in ints]
    out = [math.floor(x) for x in exact]
    leftover = round(sum(ints) * factor) - sum(out)
    order = sorted(range(len(out)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: max(0, leftover)]:
        out[i] += 1
    return out


def forge_label_counts(counts: Sequence[int | float]) -> list[int] | list[float]:
    """One-hot counts: the total on the least-counted class (ties: the lowest index)."""
    if not counts:
        return list(counts)
    rare = min(range(len(counts)), key=lambda i: (counts[i], i))
    if all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        total = sum(int(c) for c in counts)
        return [total if i == rare else 0 for i in range(len(counts))]
    total_f = float(sum(counts))
    return [total_f if i == rare else 0.0 for i in range(len(counts))]


def inflate_metrics(metrics: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """`metrics` with num-examples, examples-processed and label-counts × factor."""
    out = dict(metrics)
    for key in (keys.NUM_EXAMPLES, keys.EXAMPLES_PROCESSED):
        if key in out:
            out[key] = _scaled(out[key], factor)
    counts = out.get(keys.LABEL_COUNTS)
    if isinstance(counts, list):
        out[keys.LABEL_COUNTS] = inflate_counts(counts, factor)
    return out


def lie_in_metrics(reply: Message, lies: Sequence[str], factor: float) -> None:
    """Replace the reply's MetricRecords by their lying versions (forge, then inflate)."""
    forge, inflate = "forge_labels" in lies, "inflate_examples" in lies
    if not (forge or inflate) or reply.has_error() or not reply.has_content():
        return
    content = RecordDict()
    for name, rec in reply.content.items():
        if isinstance(rec, MetricRecord):
            metrics = dict(rec)
            counts = metrics.get(keys.LABEL_COUNTS)
            if forge and isinstance(counts, list):
                metrics[keys.LABEL_COUNTS] = forge_label_counts(counts)
            if inflate:
                metrics = inflate_metrics(metrics, factor)
            rec = MetricRecord(metrics)
        content[name] = rec
    reply.content = content
