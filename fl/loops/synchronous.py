"""The synchronous server loop: Flower's `Strategy.start`, plus what an experiment records.

It drives any message-API strategy through `configure_train` → `send_and_receive` →
`aggregate_train` (→ federated evaluation) exactly as `Strategy.start` does (a test checks the
two give the same model), and adds what a study needs: waiting for enough online nodes in
virtual time, a virtual-time budget, per-round rows (selected/replied/failed/dropped nodes,
virtual and wall time), central evaluation every k rounds, and optional server time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl.loops.checkpoint import LoopState
from fl.loops.common import CentralEval, LoopResult, Recorder, numeric
from fl.protocol import keys
from fl.protocol.replies import split_replies


@dataclass
class LoopSettings:
    """Stopping rule and bookkeeping of the round loop."""

    num_rounds: int
    timeout: float | None = 3600.0  # per send_and_receive, seconds of the grid's clock
    time_budget: float = 0.0  # stop once the clock passes this (0: none)
    eval_every: int = 1
    federated_eval: bool = False
    server_time_factor: float = 0.0  # virtual seconds charged per wall second of aggregation
    train_config: ConfigRecord = field(default_factory=ConfigRecord)
    evaluate_config: ConfigRecord = field(default_factory=ConfigRecord)


def _ids(nodes: Iterable[int]) -> str:
    return " ".join(str(n) for n in sorted(nodes))


def _needed_nodes(strategy: Strategy, evaluate: bool = False) -> int:
    """Online nodes a strategy's sampling waits for (Flower sleeps on the wall clock until
    then; on the virtual grid the loop waits in virtual time first)."""
    key = "min_evaluate_nodes" if evaluate else "min_train_nodes"
    return max(int(getattr(strategy, "min_available_nodes", 1)), int(getattr(strategy, key, 1)))


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    initial_arrays: ArrayRecord,
    settings: LoopSettings,
    central_eval: CentralEval | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    start: LoopState | None = None,
    checkpoint: Callable[[LoopState], None] | None = None,
    checkpoint_every: int = 0,
) -> LoopResult:
    """Run synchronous rounds of `strategy` on `grid` and return the final model and rows.

    `start` continues from a checkpoint's loop state; `checkpoint(state)` is called after every
    `checkpoint_every` rounds with the state to continue from.
    """
    rec = Recorder.for_grid(
        grid,
        settings.num_rounds,
        settings.eval_every,
        central_eval,
        on_round,
        start,
        checkpoint,
        checkpoint_every,
    )
    clock = rec.clock
    arrays = start.arrays if start else initial_arrays
    stop_reason = "rounds"
    if start is None:
        rec.initial_row(arrays)
    for rnd in range(start.next_round if start else 1, settings.num_rounds + 1):
        if settings.time_budget and clock() >= settings.time_budget:
            stop_reason = "time budget"
            break
        wait = getattr(grid, "wait_for_nodes", None)
        if wait is not None and not wait(_needed_nodes(strategy)):
            stop_reason = f"fewer than {_needed_nodes(strategy)} nodes will ever be online"
            break
        messages: list[Message] = list(
            strategy.configure_train(rnd, arrays, settings.train_config, grid)
        )
        started = clock()  # after configure: a strategy's own set-up (profiling) is not the round
        selected = [m.metadata.dst_node_id for m in messages]
        replies = list(grid.send_and_receive(messages, timeout=settings.timeout))
        train_end = clock()
        weight_key = str(getattr(strategy, "weighted_by_key", keys.NUM_EXAMPLES))
        replies, rejected = split_replies(replies, arrays, weight_key)
        wall_agg = time.perf_counter()
        agg_arrays, agg_metrics = strategy.aggregate_train(rnd, replies)
        wall_agg = time.perf_counter() - wall_agg
        if settings.server_time_factor > 0 and hasattr(grid, "advance"):
            grid.advance(settings.server_time_factor * wall_agg)  # type: ignore[attr-defined]
        if agg_arrays is not None:
            arrays = agg_arrays
        row: dict[str, Any] = {
            "round": rnd,
            "round_start": started,
            "train_duration": train_end - started,
            "aggregated": agg_arrays is not None,
            "num_selected": len(selected),
            "selected": _ids(selected),
            "aggregation_wall_s": wall_agg,
        }
        row.update(_exchange_columns(grid, replies, selected))
        row["num_rejected"] = len(rejected)
        row["rejected"] = "; ".join(f"{n}: {why}" for n, why in sorted(rejected.items()))
        row.update(numeric(agg_metrics, "train_"))
        wants_eval = settings.federated_eval or getattr(strategy, "requires_evaluation", False)
        if wants_eval and (wait is None or wait(_needed_nodes(strategy, evaluate=True))):
            ev = list(strategy.configure_evaluate(rnd, arrays, settings.evaluate_config, grid))
            ev_replies, ev_rejected = split_replies(
                grid.send_and_receive(ev, timeout=settings.timeout), None, weight_key
            )
            row["fed_num_rejected"] = len(ev_rejected)
            row.update(numeric(strategy.aggregate_evaluate(rnd, ev_replies), "fed_"))
        if rec.due(rnd):
            rec.evaluate_into(row, rnd, arrays)
        row.update(getattr(strategy, "last_round_info", {}))
        rec.stamp(row)
        rec.add(row)
        if rec.checkpoint is not None and rnd % checkpoint_every == 0:
            rec.checkpoint(LoopState(rnd + 1, rec.rows, arrays, {"wall_s": rec.wall()}))
    rec.finish(arrays)  # a run that stopped early: its last row is evaluated
    return LoopResult(arrays=arrays, rows=rec.rows, stop_reason=stop_reason)


def _exchange_columns(grid: Grid, replies: list[Message], selected: list[int]) -> dict[str, Any]:
    """Who replied, failed or was dropped in the last training exchange."""
    exchanges = getattr(grid, "exchanges", None)
    if exchanges:
        ex = exchanges[-1]
        return {
            "replied": _ids(ex.replied),
            "num_replied": len(ex.replied),
            "failed": _ids(ex.failed),
            "num_failed": len(ex.failed),
            "dropped": _ids(ex.dropped),
            "num_dropped": len(ex.dropped),
        }
    ok = [r.metadata.src_node_id for r in replies if not r.has_error()]
    bad = [r.metadata.src_node_id for r in replies if r.has_error()]
    missing = set(selected) - set(ok) - set(bad)
    return {
        "replied": _ids(ok),
        "num_replied": len(ok),
        "failed": _ids(bad),
        "num_failed": len(bad),
        "dropped": _ids(missing),
        "num_dropped": len(missing),
    }
