"""The asynchronous server loop: keep nodes busy, apply updates as they arrive.

It uses only Flower's Grid API (`get_node_ids`, `push_messages`, `pull_messages`), so it runs
on the virtual grid and on Flower's own engines. On the virtual grid `pull_messages` jumps the
clock to the next arrival, so the event order depends only on the seed and the device profiles;
on a real grid the loop polls.

Each iteration: hand the current model to idle nodes until `concurrency` are busy
(`strategy.configure_train`), pull the replies that have arrived (all those arriving at the same
instant), feed them to the strategy one at a time in arrival order, evaluate centrally every
`eval_every` model updates, repeat until `max_updates` model updates or the time budget. Work
is dispatched after all replies of an instant are processed, so with buffer = concurrency =
cohort and equal devices the loop is synchronous FedAvg (a test checks it).

One row per model update: version (`round`), virtual and wall time, the nodes in the window,
their mean and max staleness, the mean weight, and whatever the strategy logs (AdaSGD: τ_thres,
β, boosts, similarity).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fl.checkpoint import LoopState
from fl.rounds import CentralEval, LoopResult, _clock, _prefixed
from fl.strategies.asynchronous import AsyncStrategy, as_features


@dataclass
class AsyncSettings:
    """Stopping rule and bookkeeping of the asynchronous loop."""

    max_updates: int
    timeout: float = 3600.0  # TTL of each task, seconds of the grid's clock
    time_budget: float = 0.0  # stop once the clock passes this (0: none)
    eval_every: int = 10  # model updates between central evaluations
    train_config: ConfigRecord = field(default_factory=ConfigRecord)
    poll_interval: float = 0.05  # wall seconds between polls on a real grid
    retry_after: float = 60.0  # seconds a node whose task failed gets no new work
    max_idle_tasks: int = 0  # stop after this many failed/rejected tasks in a row (0: 10 × C)


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


def run_async(
    strategy: AsyncStrategy,
    grid: Any,
    initial_arrays: ArrayRecord,
    settings: AsyncSettings,
    central_eval: CentralEval | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    start: LoopState | None = None,
    checkpoint: Callable[[LoopState], None] | None = None,
    checkpoint_every: int = 0,
) -> LoopResult:
    """Run `strategy` asynchronously on `grid`; return the final model and one row per update.

    Stops after `max_updates` model updates, at the time budget (replies arriving after it are
    not applied), when no node will ever be online again, or when `max_idle_tasks` tasks in a
    row failed or were rejected (no progress is possible: every node crashes, say).

    `checkpoint(state)` is called once at least `checkpoint_every` model updates have happened
    since the last one, after all replies of an instant are processed (work in flight stays in
    the grid and the strategy, which the checkpoint holds); `start` continues from such a state.
    """
    if settings.max_updates < 1:
        raise ValueError(f"max_updates = {settings.max_updates} is invalid: must be ≥ 1")
    clock = _clock(grid)
    wall0 = time.perf_counter() - (start.extra["wall_s"] if start else 0.0)
    if start is None:
        strategy.initialize(initial_arrays)
    strategy.clock = clock
    rows: list[dict[str, Any]] = list(start.rows) if start else []
    evaluated: set[int] = set(start.extra["evaluated"]) if start else set()
    if central_eval is not None and start is None:
        row0: dict[str, Any] = {"round": 0, "virtual_time": clock(), "wall_time": 0.0}
        row0.update(_prefixed(central_eval(0, initial_arrays), "central_"))
        rows.append(row0)
        evaluated.add(0)
        if on_update:
            on_update(row0)
    queries: dict[str, int] = dict(start.extra["queries"]) if start else {}  # id → node
    if strategy.profiler is not None and start is None:
        queries = push_queries(grid, sorted(grid.get_node_ids()), settings.timeout)
        for reply in grid.pull_messages(list(queries)):  # the answers of this instant
            queries.pop(reply.metadata.reply_to_message_id, None)
            take_features(strategy, reply)
    in_flight: dict[str, int] = dict(start.extra["in_flight"]) if start else {}  # id → node
    stop_reason = "updates"
    failed: dict[int, str] = dict(start.extra["failed"]) if start else {}
    unproductive = int(start.extra["unproductive"]) if start else 0  # failed/rejected in a row
    last_checkpoint = strategy.version
    max_idle = settings.max_idle_tasks or 10 * strategy.concurrency

    def save_checkpoint() -> None:
        assert checkpoint is not None and strategy.arrays is not None
        extra = {
            "wall_s": time.perf_counter() - wall0,
            "evaluated": sorted(evaluated),
            "queries": dict(queries),
            "in_flight": dict(in_flight),
            "failed": dict(failed),
            "unproductive": unproductive,
        }
        strategy.clock = None  # a closure over the grid: not part of the state
        try:
            checkpoint(LoopState(strategy.version, rows, strategy.arrays, extra))
        finally:
            strategy.clock = clock

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
        if unproductive >= max_idle:
            stop_reason = f"no progress: the last {unproductive} tasks failed or were rejected"
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
                unproductive += 1
                continue
            rejected_before = len(strategy.rejected)
            updated = strategy.receive(node, reply)
            unproductive = unproductive + 1 if len(strategy.rejected) > rejected_before else 0
            if not updated:
                continue
            for info in strategy.update_log:
                row = dict(info)
                row["virtual_time"] = clock()
                row["wall_time"] = time.perf_counter() - wall0
                row["num_failed"] = len(failed)
                row["failed"] = "; ".join(f"{n}: {why}" for n, why in sorted(failed.items()))
                row["num_rejected"] = len(strategy.rejected)
                row["rejected"] = "; ".join(f"{n}: {why}" for n, why in strategy.rejected)
                failed.clear()
                strategy.rejected.clear()
                v = int(row["round"])
                if central_eval is not None and (
                    v % settings.eval_every == 0 or v == settings.max_updates
                ):
                    assert strategy.arrays is not None
                    row.update(_prefixed(central_eval(v, strategy.arrays), "central_"))
                    evaluated.add(v)
                rows.append(row)
                if on_update:
                    on_update(row)
            strategy.update_log.clear()
            if strategy.version >= settings.max_updates:
                break
        if (
            checkpoint is not None
            and checkpoint_every > 0
            and strategy.version < settings.max_updates
            and strategy.version >= last_checkpoint + checkpoint_every
        ):
            save_checkpoint()
            last_checkpoint = strategy.version
    # Work still in flight is abandoned (as a server that stops would).
    drop = getattr(grid, "drop", None)
    if drop is not None:
        drop([*in_flight, *queries])
    for node in in_flight.values():
        strategy.release(node)
    assert strategy.arrays is not None
    last = rows[-1] if rows else None
    if central_eval is not None and last is not None and int(last["round"]) not in evaluated:
        last.update(_prefixed(central_eval(int(last["round"]), strategy.arrays), "central_"))
    return LoopResult(arrays=strategy.arrays, rows=rows, stop_reason=stop_reason)
