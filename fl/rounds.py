"""The synchronous server loop: Flower's `Strategy.start`, plus what an experiment records.

It drives any message-API strategy through `configure_train` → `send_and_receive` →
`aggregate_train` (→ federated evaluation) exactly as `Strategy.start` does (a test checks the
two give the same model), and adds what a study needs: waiting for enough online nodes in
virtual time, a virtual-time budget, per-round rows (selected/replied/failed/dropped nodes,
virtual and wall time), central evaluation every k rounds, and optional server time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl.checkpoint import LoopState
from fl.strategies.validation import split_replies

CentralEval = Callable[[int, ArrayRecord], dict[str, float] | None]


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


@dataclass
class LoopResult:
    """Final model and the per-round rows."""

    arrays: ArrayRecord
    rows: list[dict[str, Any]]
    stop_reason: str


def _ids(nodes: Iterable[int]) -> str:
    return " ".join(str(n) for n in sorted(nodes))


def _metrics(rec: MetricRecord | None, prefix: str) -> dict[str, float]:
    if rec is None:
        return {}
    out: dict[str, float] = {}
    for k, v in rec.items():
        if isinstance(v, int | float):
            out[f"{prefix}{k}"] = float(v)
    return out


def _needed_nodes(strategy: Strategy, evaluate: bool = False) -> int:
    """Online nodes a strategy's sampling waits for (Flower sleeps on the wall clock until
    then; on the virtual grid the loop waits in virtual time first)."""
    key = "min_evaluate_nodes" if evaluate else "min_train_nodes"
    return max(int(getattr(strategy, "min_available_nodes", 1)), int(getattr(strategy, key, 1)))


def _clock(grid: Grid) -> Callable[[], float]:
    """Virtual clock of a VirtualGrid, wall clock of a real grid."""
    if hasattr(grid, "now"):
        return lambda: float(grid.now)  # type: ignore[attr-defined]
    t0 = time.time()
    return lambda: time.time() - t0


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
    clock = _clock(grid)
    wall0 = time.perf_counter() - (start.extra.get("wall_s", 0.0) if start else 0.0)
    arrays = start.arrays if start else initial_arrays
    rows: list[dict[str, Any]] = list(start.rows) if start else []
    stop_reason = "rounds"
    if central_eval is not None and start is None:
        row0: dict[str, Any] = {"round": 0, "virtual_time": clock(), "wall_time": 0.0}
        row0.update(_prefixed(central_eval(0, arrays), "central_"))
        rows.append(row0)
        if on_round:
            on_round(row0)
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
        weight_key = str(getattr(strategy, "weighted_by_key", "num-examples"))
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
        row.update(_metrics(agg_metrics, "train_"))
        wants_eval = settings.federated_eval or getattr(strategy, "requires_evaluation", False)
        if wants_eval and (wait is None or wait(_needed_nodes(strategy, evaluate=True))):
            ev = list(strategy.configure_evaluate(rnd, arrays, settings.evaluate_config, grid))
            ev_replies, ev_rejected = split_replies(
                grid.send_and_receive(ev, timeout=settings.timeout), None, weight_key
            )
            row["fed_num_rejected"] = len(ev_rejected)
            row.update(_metrics(strategy.aggregate_evaluate(rnd, ev_replies), "fed_"))
        if central_eval is not None and (
            rnd % settings.eval_every == 0 or rnd == settings.num_rounds
        ):
            row.update(_prefixed(central_eval(rnd, arrays), "central_"))
        row.update(getattr(strategy, "last_round_info", {}))
        row["virtual_time"] = clock()
        row["wall_time"] = time.perf_counter() - wall0
        rows.append(row)
        if on_round:
            on_round(row)
        if checkpoint is not None and checkpoint_every > 0 and rnd % checkpoint_every == 0:
            wall = time.perf_counter() - wall0
            checkpoint(LoopState(rnd + 1, rows, arrays, {"wall_s": wall}))
    last = rows[-1] if rows else None
    if central_eval is not None and last is not None and "central_accuracy" not in last:
        last.update(
            _prefixed(central_eval(int(last["round"]), arrays), "central_")
        )  # stopped early
    return LoopResult(arrays=arrays, rows=rows, stop_reason=stop_reason)


def _prefixed(metrics: dict[str, float] | None, prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in (metrics or {}).items()}


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


def first_time_reaching(rows: list[dict[str, Any]], key: str, target: float) -> tuple[float, int]:
    """(virtual time, round) at which `key` first reached `target`; (inf, -1) if never."""
    for row in rows:
        value = row.get(key)
        if value is not None and not math.isnan(value) and value >= target:
            return float(row["virtual_time"]), int(row["round"])
    return math.inf, -1
