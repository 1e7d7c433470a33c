"""Per-node mini-batch sizes for any synchronous strategy, chosen by a profiler (I-Prof).

`WithProfiler(strategy, profiler)` is a Flower strategy that delegates everything to `strategy`
and only (1) asks the nodes for their device features once, with a query message, (2) sets each
train message's `batch-size` and `local-steps` from `profiler.request(...)`, and (3) lets the
profiler learn from each reply's `compute-s` and `examples-processed`. A round then takes about
the SLO on every phone instead of waiting for the slowest one's fixed batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl.strategies.async_driver import as_features


class WithProfiler(Strategy):
    """Wrap `strategy` so its train messages carry per-node batch sizes from `profiler`."""

    def __init__(self, strategy: Strategy, profiler: Any, query_timeout: float = 60.0) -> None:
        self.strategy = strategy
        self.profiler = profiler
        self.query_timeout = float(query_timeout)
        self.features: dict[int, dict[str, float]] = {}
        self._sent: dict[int, dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:  # attributes the round loop reads (min nodes, ...)
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)

    def _query(self, nodes: list[int], grid: Grid) -> None:
        """Ask nodes without known features for them. Only answers that are in when the first
        one arrives are used (a lost query must not hold the round up to its TTL); a node that
        did not answer is asked again the next time it is selected."""
        new = [n for n in nodes if n not in self.features]
        if not new:
            return
        msgs = [
            Message(RecordDict(), n, MessageType.QUERY, group_id="features", ttl=self.query_timeout)
            for n in new
        ]
        ids = [i for i in grid.push_messages(msgs) if i]
        replies = list(grid.pull_messages(ids))  # the virtual grid jumps to the first answer
        deadline = time.monotonic() + self.query_timeout
        while not replies and not hasattr(grid, "now") and time.monotonic() < deadline:
            time.sleep(0.05)  # a real grid: poll until the first answers are in
            replies = list(grid.pull_messages(ids))
        answered = {r.metadata.reply_to_message_id for r in replies}
        drop = getattr(grid, "drop", None)
        if drop is not None:
            drop([i for i in ids if i not in answered])
        for reply in replies:
            if not reply.has_error():
                for rec in reply.content.metric_records.values():
                    if feats := as_features(rec):
                        self.features[int(reply.metadata.src_node_id)] = feats

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        msgs = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._query([int(m.metadata.dst_node_id) for m in msgs], grid)
        out = []
        for m in msgs:
            node = int(m.metadata.dst_node_id)
            content = RecordDict()
            for key, rec in m.content.items():
                if isinstance(rec, ConfigRecord):
                    cfg = dict(rec)
                    cfg.update(self.profiler.request(node, self.features.get(node), cfg))
                    self._sent[node] = cfg
                    rec = ConfigRecord(cfg)
                content[key] = rec
            out.append(
                Message(content, node, m.metadata.message_type, group_id=m.metadata.group_id)
            )
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for r in replies:
            if r.has_error():
                continue
            node = int(r.metadata.src_node_id)
            for rec in r.content.metric_records.values():
                scalars = {k: float(v) for k, v in rec.items() if isinstance(v, int | float)}
                self.profiler.observe(
                    node, self.features.get(node), self._sent.get(node, {}), scalars
                )
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
