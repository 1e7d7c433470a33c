"""What the synchronous and the asynchronous loop share: the clock, the rows they record,
central evaluation every k rounds (or model updates), checkpoint cadence, and wall time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, MetricRecord

from fl.loops.checkpoint import LoopState
from fl.strategies.async_driver import clock_of

CentralEval = Callable[[int, ArrayRecord], dict[str, float] | None]
RowHook = Callable[[dict[str, Any]], None]
CheckpointFn = Callable[[LoopState], None]


@dataclass
class LoopResult:
    """Final model and the per-round rows."""

    arrays: ArrayRecord
    rows: list[dict[str, Any]]
    stop_reason: str


@dataclass
class Recorder:
    """The rows of a run, its central evaluation cadence, checkpoint cadence and wall time.

    `last` is the final round (model version) a run aims for: it is always evaluated.
    """

    clock: Callable[[], float]
    last: int
    eval_every: int = 1
    central_eval: CentralEval | None = None
    on_row: RowHook | None = None
    checkpoint: CheckpointFn | None = None
    checkpoint_every: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    wall0: float = field(default_factory=time.perf_counter)

    @classmethod
    def for_grid(
        cls,
        grid: Any,
        last: int,
        eval_every: int,
        central_eval: CentralEval | None,
        on_row: RowHook | None,
        start: LoopState | None,
        checkpoint: CheckpointFn | None,
        checkpoint_every: int,
    ) -> Recorder:
        """A recorder on `grid`'s clock, continuing `start`'s rows and wall time if given."""
        return cls(
            clock=clock_of(grid),
            last=last,
            eval_every=eval_every,
            central_eval=central_eval,
            on_row=on_row,
            checkpoint=checkpoint if checkpoint_every > 0 else None,
            checkpoint_every=checkpoint_every,
            rows=list(start.rows) if start else [],
            wall0=time.perf_counter() - (start.extra.get("wall_s", 0.0) if start else 0.0),
        )

    def wall(self) -> float:
        """Wall seconds of the run so far (including those before a resume)."""
        return time.perf_counter() - self.wall0

    def initial_row(self, arrays: ArrayRecord) -> None:
        """Row 0: the initial model's central evaluation (nothing without an evaluator)."""
        if self.central_eval is None:
            return
        row0: dict[str, Any] = {"round": 0, "virtual_time": self.clock(), "wall_time": 0.0}
        row0.update(prefixed(self.central_eval(0, arrays), "central_"))
        self.add(row0)

    def due(self, rnd: int) -> bool:
        """Whether round / version `rnd` is centrally evaluated."""
        return self.central_eval is not None and (rnd % self.eval_every == 0 or rnd == self.last)

    def evaluate_into(self, row: dict[str, Any], rnd: int, arrays: ArrayRecord) -> None:
        """Add the central evaluation of `arrays` to `row`."""
        assert self.central_eval is not None
        row.update(prefixed(self.central_eval(rnd, arrays), "central_"))

    def stamp(self, row: dict[str, Any]) -> None:
        """Add the row's virtual and wall time."""
        row["virtual_time"] = self.clock()
        row["wall_time"] = self.wall()

    def add(self, row: dict[str, Any]) -> None:
        """Record `row` and report it."""
        self.rows.append(row)
        if self.on_row:
            self.on_row(row)

    def checkpoint_due(self, done: int, since: int) -> bool:
        """Whether to checkpoint now, `done` rounds / versions in, the last one at `since`."""
        return (
            self.checkpoint is not None
            and done < self.last
            and done >= since + self.checkpoint_every
        )

    def finish(self, arrays: ArrayRecord) -> None:
        """A run that stopped early still has its last row evaluated."""
        last = self.rows[-1] if self.rows else None
        if self.central_eval is not None and last is not None and "central_accuracy" not in last:
            self.evaluate_into(last, int(last["round"]), arrays)


def prefixed(metrics: dict[str, float] | None, prefix: str) -> dict[str, float]:
    """`metrics` with each key prefixed (values as floats)."""
    return {f"{prefix}{k}": float(v) for k, v in (metrics or {}).items()}


def numeric(rec: MetricRecord | None, prefix: str) -> dict[str, float]:
    """The numeric entries of a MetricRecord, keys prefixed."""
    if rec is None:
        return {}
    return {f"{prefix}{k}": float(v) for k, v in rec.items() if isinstance(v, int | float)}


def first_time_reaching(rows: list[dict[str, Any]], key: str, target: float) -> tuple[float, int]:
    """(virtual time, round) at which `key` first reached `target`; (inf, -1) if never."""
    for row in rows:
        value = row.get(key)
        if value is not None and not math.isnan(value) and value >= target:
            return float(row["virtual_time"]), int(row["round"])
    return math.inf, -1
