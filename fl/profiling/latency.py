"""Response-latency profiling from message timestamps (TiFL's profiler, reusable by others).

Latency of a task = reply `created_at` − instruction `created_at`: the same two fields on the
virtual grid (virtual seconds) and on Flower's real engines (wall-clock POSIX seconds), so no
strategy needs a clock of its own. A node that misses the deadline is charged the deadline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import Message


def reply_latencies(
    instructions: Iterable[Message], replies: Iterable[Message]
) -> dict[int, float]:
    """Latency per node of every non-error reply, matched to its instruction by message id."""
    sent = {m.metadata.message_id: m for m in instructions}
    out: dict[int, float] = {}
    for reply in replies:
        if reply.has_error():
            continue
        ins = sent.get(reply.metadata.reply_to_message_id)
        if ins is None:
            continue
        latency = float(reply.metadata.created_at) - float(ins.metadata.created_at)
        if math.isfinite(latency) and latency >= 0:
            out[int(ins.metadata.dst_node_id)] = latency
    return out


@dataclass
class LatencyProfile:
    """Accumulated response latencies per node; timeouts are charged `t_max`."""

    t_max: float
    total: dict[int, float] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)
    timeouts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.t_max > 0 and math.isfinite(self.t_max)):
            raise ValueError(f"t_max = {self.t_max!r} is invalid: must be a positive number")

    def observe(self, node: int, latency: float) -> None:
        """Record one measured latency (capped at t_max, as a timeout would be)."""
        self.total[node] = self.total.get(node, 0.0) + min(float(latency), self.t_max)
        self.count[node] = self.count.get(node, 0) + 1

    def charge_timeout(self, node: int) -> None:
        """The node missed the deadline: charge it `t_max`."""
        self.total[node] = self.total.get(node, 0.0) + self.t_max
        self.count[node] = self.count.get(node, 0) + 1
        self.timeouts[node] = self.timeouts.get(node, 0) + 1

    def record_round(self, sent_to: Iterable[int], latencies: Mapping[int, float]) -> None:
        """One profiling round: measured nodes observe, the others are charged t_max."""
        for node in sent_to:
            if node in latencies:
                self.observe(node, latencies[node])
            else:
                self.charge_timeout(node)

    def mean(self, node: int) -> float:
        """Mean latency of a node (inf if never profiled)."""
        n = self.count.get(node, 0)
        return self.total[node] / n if n else math.inf

    def dropouts(self) -> set[int]:
        """Nodes that never answered in time: every observation was a timeout."""
        return {n for n, c in self.count.items() if self.timeouts.get(n, 0) >= c}

    def means(self) -> dict[int, float]:
        """Mean latency of every profiled node that is not a dropout."""
        drop = self.dropouts()
        return {n: self.mean(n) for n in sorted(self.count) if n not in drop}
