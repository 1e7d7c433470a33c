"""How far a run is, and how that is shown on a terminal (or in a log file).

`Pace` turns a row's position (rounds or model updates done, virtual time) and its cumulative
wall time into a fraction of the run and an ETA; the status file, the progress bar and
`fl-sim watch` all use it, so they agree. The ETA extrapolates from the part of the run this
process did (a resumed run's earlier rounds ran at another time, maybe on another machine).

`ProgressBar` is a tqdm bar when its stream is a terminal, and otherwise one plain line every
tenth of the run (every round of a run of ten rounds or fewer): a log file or CI output gets a
bounded number of readable lines instead of one huge carriage-return line.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, TextIO

UNITS = {"round": "rounds", "update": "model updates"}
"""A run's unit of progress (synchronous: rounds; asynchronous: model updates), and its plural."""


@dataclass(frozen=True)
class Pace:
    """A run's target (`total` rounds or updates, a virtual-time `budget`, 0 = none) and where
    this process started it (done, virtual time, cumulative wall seconds)."""

    total: int
    budget: float = 0.0
    start_done: int = 0
    start_vt: float = 0.0
    start_wall: float = 0.0

    def fraction(self, done: int, vt: float) -> float:
        """Share of the run done: of the rounds, or of the time budget if that is further."""
        f = done / self.total if self.total > 0 else 0.0
        if self.budget > 0:
            f = max(f, vt / self.budget)
        return min(1.0, max(0.0, f))

    def eta(self, done: int, vt: float, wall: float) -> float | None:
        """Wall seconds left, at this process's pace so far (None before any progress)."""
        f = self.fraction(done, vt)
        if f >= 1.0:
            return 0.0
        f0 = self.fraction(self.start_done, self.start_vt)
        if f <= f0 or wall <= self.start_wall:
            return None
        return (wall - self.start_wall) * (1.0 - f) / (f - f0)


def format_duration(seconds: float | None) -> str:
    """A duration for people: 4.2 s, 35 s, 4 min 10 s, 25 min, 2 h 5 min ("?" if unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 600:
        m, r = divmod(round(s), 60)
        return f"{m} min {r} s" if r else f"{m} min"
    if s < 3600:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m} min" if m else f"{h} h"


def seconds_text(seconds: float) -> str:
    """Virtual seconds, as precise as is readable: 0.42, 7.3, 512."""
    return (
        f"{seconds:.2f}"
        if abs(seconds) < 1
        else f"{seconds:.1f}"
        if abs(seconds) < 100
        else f"{seconds:.0f}"
    )


def position_text(pace: Pace, unit: str, done: int, vt: float) -> str:
    """`round 12/40 (30%)  vt 512 s` (with a budget: `vt 512/600 s`)."""
    pct = f"{100 * pace.fraction(done, vt):.0f}%"
    budget = f"/{pace.budget:g}" if pace.budget > 0 else ""
    return f"{unit} {done}/{pace.total} ({pct})  vt {seconds_text(vt)}{budget} s"


def is_terminal(stream: Any) -> bool:
    """Whether `stream` is an interactive terminal (False for files, pipes and closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class ProgressBar:
    """Progress over a run's rows: tqdm on a terminal, else a plain line per tenth of the run.

    Call it with every row; `close` ends it (off a terminal, with a last line for the last row
    if that was not printed yet).
    """

    def __init__(
        self, name: str, pace: Pace, unit: str = "round", stream: TextIO | None = None
    ) -> None:
        self.name, self.pace, self.unit = name, pace, unit
        self.stream = stream if stream is not None else sys.stderr
        self.acc: float | None = None
        self.last: tuple[int, float, float] | None = None  # (done, vt, wall) of the last row
        self.printed: tuple[int, float, float] | None = None
        self.next_tenth = math.floor(pace.fraction(pace.start_done, pace.start_vt) * 10) + 1
        self.bar: Any = None
        if is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=pace.total,
                initial=pace.start_done,
                desc=name,
                unit=unit,
                leave=False,
                file=self.stream,
                dynamic_ncols=True,
            )

    def __call__(self, row: dict[str, Any]) -> None:
        if "central_accuracy" in row:
            self.acc = float(row["central_accuracy"])
        done = int(row["round"])
        if done == 0:
            return
        vt, wall = float(row["virtual_time"]), float(row.get("wall_time", 0.0))
        self.last = (done, vt, wall)
        if self.bar is not None:
            self.bar.update(max(0, done - self.bar.n))
            post = {"vt": f"{seconds_text(vt)}s"}
            if self.acc is not None:
                post["acc"] = f"{self.acc:.3f}"
            self.bar.set_postfix(post, refresh=False)
            return
        tenth = math.floor(self.pace.fraction(done, vt) * 10 + 1e-9)
        if tenth >= self.next_tenth:
            self.next_tenth = tenth + 1
            self._line()

    def _line(self) -> None:
        assert self.last is not None
        done, vt, wall = self.last
        acc = f"  acc {self.acc:.4f}" if self.acc is not None else ""
        eta = format_duration(self.pace.eta(done, vt, wall))
        text = position_text(self.pace, self.unit, done, vt)
        print(
            f"{self.name}: {text}{acc}  wall {format_duration(wall)}  ETA {eta}",
            file=self.stream,
            flush=True,
        )
        self.printed = self.last

    def close(self) -> None:
        """End the bar (off a terminal: print the last row if it was not printed)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.last is not None and self.printed != self.last:
            self._line()
