"""The push/pull pump that runs an asynchronous strategy on any Flower Grid.

An asynchronous strategy cannot be run by Flower's round-based `Strategy.start`; this is its
counterpart, and `AsyncStrategy.start` runs it, so an asynchronous strategy works in any Flower
ServerApp without the rest of `fl`. It uses only the Grid API (`get_node_ids`, `push_messages`,
`pull_messages`; the virtual grid's `wait_for_nodes`/`advance_to`/`drop` when present).

Each iteration: hand the current model to idle nodes until `concurrency` are busy, pull the
replies that have arrived (all those arriving at the same instant), feed them to the strategy one
at a time in arrival order, report every model update to the `hooks`, repeat until `max_updates`
model updates or the time budget. Work is dispatched after all replies of an instant are
processed, so with buffer = concurrency = cohort and equal devices the pump is synchronous FedAvg.

What is recorded of a run (rows, central evaluation, checkpoints) is the hooks' business: the
experiment loop (`fl.loops.asynchronous`) and `AsyncStrategy.start` each bring their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import Result

from fl.protocol import keys

if TYPE_CHECKING:
    from fl.strategies.asynchronous import AsyncStrategy

log = logging.getLogger("flwr")


@dataclass
class AsyncSettings:
    """Stopping rule and bookkeeping of an asynchronous run."""

    max_updates: int
    timeout: float = 3600.0  # TTL of each task, seconds of the grid's clock
    time_budget: float = 0.0  # stop once the clock passes this (0: none)
    eval_every: int = 10  # model updates between central evaluations (read by the hooks)
    train_config: ConfigRecord = field(default_factory=ConfigRecord)
    poll_interval: float = 0.05  # wall seconds between polls on a real grid
    retry_after: float = 60.0  # seconds a node whose task failed gets no new work
    max_idle_tasks: int = 0  # stop after this many failed/rejected tasks in a row (0: 10 × C)


@dataclass
class PumpState:
    """Where the pump stands between two instants (what a checkpoint must keep)."""

    queries: dict[str, int] = field(default_factory=dict)  # message id → node (device features)
    in_flight: dict[str, int] = field(default_factory=dict)  # message id → node (training)
    failed: dict[int, str] = field(default_factory=dict)  # node → first line of its error
    unproductive: int = 0  # failed or rejected tasks in a row


class PumpHooks(Protocol):
    """What the pump reports while it runs."""

    def on_update(
        self, info: dict[str, Any], failed: dict[int, str], rejected: list[tuple[int, str]]
    ) -> None:
        """A model update happened (`info`: the strategy's log entry for it); `failed` and
        `rejected` are the tasks that failed or were rejected since the previous update."""

    def after_instant(self, state: PumpState) -> None:
        """All replies of an instant are processed (a consistent point to checkpoint at)."""


def clock_of(grid: Any) -> Callable[[], float]:
    """Virtual clock of a VirtualGrid, wall clock (seconds since now) of a real grid."""
    if hasattr(grid, "now"):
        return lambda: float(grid.now)
    t0 = time.time()
    return lambda: time.time() - t0


def push_queries(grid: Any, nodes: list[int], timeout: float) -> dict[str, int]:
    """Ask `nodes` for their device features (for I-Prof); message id → node id."""
    msgs = [
        Message(RecordDict(), n, MessageType.QUERY, group_id="features", ttl=timeout) for n in nodes
    ]
    pushed = set(grid.push_messages(msgs))
    return {m.metadata.message_id: n for m, n in zip(msgs, nodes, strict=True)
            if m.metadata.message_id in pushed}  # fmt: skip


def take_features(strategy: AsyncStrategy, reply: Message) -> None:
    """Record the device features a query reply carries (error replies are ignored)."""
    if reply.has_error():
        return
    for rec in reply.content.metric_records.values():
        feats = as_features(rec)
        if feats:
            strategy.features[int(reply.metadata.src_node_id)] = feats


def as_features(record: Any) -> dict[str, float]:
    """`device.<name>` metrics of a query reply as a feature dict."""
    return {
        k.split(".", 1)[1]: float(v)
        for k, v in record.items()
        if k.startswith(keys.DEVICE_PREFIX) and isinstance(v, int | float)
    }


def pump(
    strategy: AsyncStrategy,
    grid: Any,
    initial_arrays: ArrayRecord,
    settings: AsyncSettings,
    hooks: PumpHooks,
    state: PumpState | None = None,
) -> str:
    """Run `strategy` on `grid` until `settings.max_updates` model updates; the stop reason.

    Stops after `max_updates` model updates, at the time budget (replies arriving after it are
    not applied), when no node will ever be online again, or when `max_idle_tasks` tasks in a
    row failed or were rejected (no progress is possible: every node crashes, say; logged as an
    error naming the last failures). `state` continues a run from a checkpoint; without it the
    strategy is initialised from `initial_arrays`. Work still in flight at the end is abandoned.
    """
    if settings.max_updates < 1:
        raise ValueError(f"max_updates = {settings.max_updates} is invalid: must be ≥ 1")
    clock = clock_of(grid)
    fresh = state is None
    if state is None:
        strategy.initialize(initial_arrays)
        state = PumpState()
    strategy.clock = clock
    if strategy.profiler is not None and fresh:
        state.queries = push_queries(grid, sorted(grid.get_node_ids()), settings.timeout)
        for reply in grid.pull_messages(list(state.queries)):  # the answers of this instant
            state.queries.pop(reply.metadata.reply_to_message_id, None)
            take_features(strategy, reply)
    queries, in_flight, failed = state.queries, state.in_flight, state.failed
    stop_reason = "updates"
    max_idle = settings.max_idle_tasks or 10 * strategy.concurrency
    recent_errors: dict[int, str] = {}

    def dispatch() -> None:
        msgs = list(strategy.configure_train(strategy.version + 1, initial_arrays,
                                             settings.train_config, grid))  # fmt: skip
        for m in msgs:
            m.metadata.ttl = settings.timeout
        # Grids set each message's id in place and return the ids they accepted (Flower's
        # leave refused messages out, so positions cannot be trusted).
        pushed = set(grid.push_messages(msgs))
        for m in msgs:
            mid = m.metadata.message_id
            if mid and mid in pushed:
                in_flight[mid] = int(m.metadata.dst_node_id)
            else:  # the grid refused it: the node is free again
                strategy.release(int(m.metadata.dst_node_id))

    def over_budget() -> bool:
        return bool(settings.time_budget) and clock() > settings.time_budget

    wait = getattr(grid, "wait_for_nodes", None)
    while strategy.version < settings.max_updates:
        if settings.time_budget and clock() >= settings.time_budget:
            stop_reason = "time budget"
            break
        if state.unproductive >= max_idle:
            why = "; ".join(f"{n}: {e}" for n, e in list(recent_errors.items())[-3:])
            stop_reason = (
                f"no progress: the last {state.unproductive} tasks failed or were rejected"
                f" (last: {why or 'none'})"
            )
            log.error("%s: %s", type(strategy).__name__, stop_reason)
            break
        dispatch()
        if not in_flight:  # nobody busy: every node is offline or resting
            if wait is None:
                time.sleep(settings.poll_interval)
                continue
            online = set(grid.get_node_ids())
            rest_ends = [t for n, t in strategy.resting.items() if n in online and t > clock()]
            if rest_ends:
                grid.advance_to(min(rest_ends))
            elif not wait(len(online) + 1):  # wait in virtual time for one more node
                stop_reason = "no node will ever be online"
                break
            continue
        replies = grid.pull_messages([*in_flight, *queries])
        if over_budget():  # the clock jumped past the budget: these replies came too late
            stop_reason = "time budget"
            break
        if not replies:
            time.sleep(settings.poll_interval)  # only on a real grid: the virtual one jumps
            continue
        for reply in replies:
            mid = reply.metadata.reply_to_message_id
            if mid in queries:
                queries.pop(mid)
                take_features(strategy, reply)
                continue
            node = in_flight.pop(mid, None)
            if node is None:
                continue
            if reply.has_error():
                strategy.release(node)
                strategy.rest(node, clock() + settings.retry_after)
                failed[node] = (reply.error.reason or "").splitlines()[0]
                recent_errors[node] = failed[node]
                state.unproductive += 1
                continue
            rejected_before = len(strategy.rejected)
            updated = strategy.receive(node, reply)
            if len(strategy.rejected) > rejected_before:
                state.unproductive += 1
                recent_errors[node] = strategy.rejected[-1][1]
            else:
                state.unproductive = 0
            if not updated:
                continue
            for info in strategy.update_log:
                hooks.on_update(info, failed, strategy.rejected)
                failed.clear()
                strategy.rejected.clear()
            strategy.update_log.clear()
            if strategy.version >= settings.max_updates:
                break
        hooks.after_instant(state)
    # Work still in flight is abandoned (as a server that stops would).
    drop = getattr(grid, "drop", None)
    if drop is not None:
        drop([*in_flight, *queries])
    for node in in_flight.values():
        strategy.release(node)
    return stop_reason


@dataclass
class EvaluateEachUpdate:
    """The pump's hooks under `AsyncStrategy.start`: call `evaluate_fn` after every model
    update (as Flower's `Strategy.start` does after every round) into `result`."""

    strategy: Any  # an AsyncStrategy (its current model: `arrays`)
    result: Result
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None

    def on_update(
        self, info: dict[str, Any], failed: dict[int, str], rejected: list[tuple[int, str]]
    ) -> None:
        if self.evaluate_fn is not None and self.strategy.arrays is not None:
            v = int(info["round"])
            rec = self.evaluate_fn(v, self.strategy.arrays)
            if rec is not None:
                self.result.evaluate_metrics_serverapp[v] = rec

    def after_instant(self, state: PumpState) -> None:
        return None
