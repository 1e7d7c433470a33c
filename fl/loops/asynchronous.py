"""The asynchronous experiment loop: the strategy's push/pull pump, plus what a study records.

The pump (`fl.strategies.async_driver.pump`, which `AsyncStrategy.start` also runs) keeps
`concurrency` nodes busy and applies updates as they arrive; this loop adds one row per model
update — version (`round`), virtual and wall time, the nodes in the window, their mean and max
staleness, the mean weight, the tasks that failed or were rejected since the previous update,
whatever the strategy logs (AdaSGD: τ_thres, β, boosts, similarity) — central evaluation every
`eval_every` model updates, and checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord

from fl.loops.checkpoint import LoopState
from fl.loops.common import CentralEval, LoopResult, Recorder
from fl.strategies.async_driver import (
    AsyncSettings,
    PumpState,
    pump,
    push_queries,
    take_features,
)
from fl.strategies.asynchronous import AsyncStrategy

__all__ = ["AsyncSettings", "push_queries", "run_async", "take_features"]


@dataclass
class _Rows:
    """The pump's hooks in an experiment: rows, central evaluation, checkpoints."""

    strategy: AsyncStrategy
    rec: Recorder
    last_checkpoint: int

    def on_update(
        self, info: dict[str, Any], failed: dict[int, str], rejected: list[tuple[int, str]]
    ) -> None:
        row = dict(info)
        self.rec.stamp(row)
        row["num_failed"] = len(failed)
        row["failed"] = "; ".join(f"{n}: {why}" for n, why in sorted(failed.items()))
        row["num_rejected"] = len(rejected)
        row["rejected"] = "; ".join(f"{n}: {why}" for n, why in rejected)
        v = int(row["round"])
        if self.rec.due(v):
            assert self.strategy.arrays is not None
            self.rec.evaluate_into(row, v, self.strategy.arrays)
        self.rec.add(row)

    def after_instant(self, state: PumpState) -> None:
        s = self.strategy
        if not self.rec.checkpoint_due(s.version, self.last_checkpoint):
            return
        assert self.rec.checkpoint is not None and s.arrays is not None
        extra = {
            "wall_s": self.rec.wall(),
            "queries": dict(state.queries),
            "in_flight": dict(state.in_flight),
            "failed": dict(state.failed),
            "unproductive": state.unproductive,
        }
        clock, s.clock = s.clock, None  # a closure over the grid: not part of the state
        try:
            self.rec.checkpoint(LoopState(s.version, self.rec.rows, s.arrays, extra))
        finally:
            s.clock = clock
        self.last_checkpoint = s.version


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

    Stops as `pump` does. `checkpoint(state)` is called once at least `checkpoint_every` model
    updates have happened since the last one, after all replies of an instant are processed
    (work in flight stays in the grid and the strategy, which the checkpoint holds); `start`
    continues from such a state.
    """
    if settings.max_updates < 1:
        raise ValueError(f"max_updates = {settings.max_updates} is invalid: must be ≥ 1")
    rec = Recorder.for_grid(
        grid,
        settings.max_updates,
        settings.eval_every,
        central_eval,
        on_update,
        start,
        checkpoint,
        checkpoint_every,
    )
    if start is None:
        rec.initial_row(initial_arrays)
    state = None
    if start is not None:
        x = start.extra
        state = PumpState(
            dict(x["queries"]), dict(x["in_flight"]), dict(x["failed"]), int(x["unproductive"])
        )
    hooks = _Rows(strategy, rec, strategy.version if start else 0)
    stop_reason = pump(strategy, grid, initial_arrays, settings, hooks, state)
    assert strategy.arrays is not None
    rec.finish(strategy.arrays)
    return LoopResult(arrays=strategy.arrays, rows=rec.rows, stop_reason=stop_reason)
