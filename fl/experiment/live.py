"""A results folder kept current while its run goes, so a person (or `fl-sim watch`) can follow
it and a killed run leaves everything it completed.

    rounds.csv    rewritten or appended after every row (round, or model update): at any moment
                  it is exactly what `write_csv` makes of the rows so far — the same header
                  (the union of their keys, first-seen order) and the same bytes. A row with a
                  new key rewrites the file (through a temporary file and a rename); any other
                  row is appended with one `write`, so a reader never sees half a row.
    messages.csv  the header, then each message once its fate is settled (its reply delivered,
                  or it was dropped or expired), in the order they settle; the fixed columns of
                  `MESSAGE_COLUMNS`. A settled message's row never changes.
    status.json   pid, host, state, position, virtual time, last accuracy, wall time and ETA
                  (see `Status`), replaced atomically after a row (at most four times a
                  second: a watcher reads the rows themselves from rounds.csv) and whenever
                  the state changes.

At the end the run writes both tables once more with `write_results` (messages sorted by push
order, those still in flight included; a last row that was evaluated afterwards), so a finished
run's files are byte for byte those written at the end of the run before tables were live. A
resumed run starts its tables again from its checkpoint's rows and settled messages: rows
written after the checkpoint are dropped, never duplicated.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fl.experiment.progress import UNITS, Pace, ProgressBar
from fl.experiment.tables import columns_of, csv_text, encode, replace_text

if TYPE_CHECKING:  # the config module imports torch (through the executors)
    from fl.experiment.config import ExperimentConfig

STATUS_FILE = "status.json"
ROUNDS_FILE = "rounds.csv"
MESSAGES_FILE = "messages.csv"
STATES = ("running", "finished", "failed", "interrupted")
"""A run's states in status.json; every one but "running" is final."""


class _AppendFile:
    """A file appended to with one `write` per call (so a reader, or a run killed meanwhile,
    never sees part of a row), kept open between calls; `reopen` after the file was replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def write(self, text: str) -> None:
        data = encode(text)
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        while data:
            data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        """Close the descriptor (the next `write` opens the file again: `reopen`)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    reopen = close


class LiveRounds:
    """rounds.csv, kept equal to `write_csv` of the rows so far."""

    def __init__(self, path: Path, rows: Iterable[dict[str, Any]] = ()) -> None:
        self.path = path
        self.rows = list(rows)
        self.cols = columns_of(self.rows)
        self.known = set(self.cols)
        self.file = _AppendFile(path)
        self._rewrite()

    def _rewrite(self) -> None:
        replace_text(self.path, csv_text(self.rows, self.cols) if self.rows else "")
        self.file.reopen()

    def add(self, row: dict[str, Any]) -> None:
        """Record `row`: appended, or the file rewritten if it brings a new column."""
        self.rows.append(row)
        new = [k for k in row if k not in self.known]
        if new:
            self.cols.extend(new)
            self.known.update(new)
            self._rewrite()
        else:
            self.file.write(csv_text([row], self.cols, header=False))

    def close(self) -> None:
        """Close the file (appends are written as they come: nothing is buffered)."""
        self.file.close()


def _settled(grid: Any) -> Callable[[str], bool]:
    """Whether a message id's outcome is final on `grid`: the virtual grid's mailbox has
    consumed it (delivered, dropped past the deadline, or expired)."""
    consumed = getattr(getattr(grid, "mailbox", None), "consumed", None)
    if consumed is None:
        return lambda _mid: False
    return consumed.__contains__


class LiveMessages:
    """messages.csv: the header, then every message whose outcome is settled, once."""

    def __init__(self, path: Path, grid: Any, columns: list[str]) -> None:
        self.path, self.grid, self.cols = path, grid, columns
        outcomes: dict[str, Any] = getattr(grid, "outcomes", None) or {}
        settled = _settled(grid)
        done = sorted((o for mid, o in outcomes.items() if settled(mid)), key=lambda o: o.seq)
        self.pending = [mid for mid in outcomes if not settled(mid)]
        self.known = len(outcomes)
        replace_text(path, csv_text([vars(o) for o in done], columns))
        self.file = _AppendFile(path)

    def flush(self) -> int:
        """Append the messages settled since the last flush (in push order); how many."""
        outcomes: dict[str, Any] | None = getattr(self.grid, "outcomes", None)
        if not outcomes:
            return 0
        if len(outcomes) > self.known:  # the newest ids, without walking the whole dict
            new = list(islice(reversed(outcomes), len(outcomes) - self.known))
            self.pending.extend(reversed(new))
            self.known = len(outcomes)
        settled = _settled(self.grid)
        done = [mid for mid in self.pending if settled(mid)]
        if not done:
            return 0
        self.pending = [mid for mid in self.pending if not settled(mid)]
        rows = sorted((outcomes[mid] for mid in done), key=lambda o: o.seq)
        self.file.write(csv_text([vars(o) for o in rows], self.cols, header=False))
        return len(rows)

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: None instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Status:
    """status.json: what a watcher needs to follow a run without reading its tables.

    Keys: format (1), pid, host, state (running | finished | failed | interrupted), name,
    strategy, unit (round | update), round (done), rounds (asked for), time_budget_s,
    fraction, virtual_time, last_accuracy (and last_accuracy_round), wall_time_s, eta_s,
    session (round, virtual_time, wall_time_s where this process started: ETAs extrapolate
    from it), checkpoint_every, last_checkpoint, started_at, updated_at; when over,
    stop_reason or error.
    """

    MIN_INTERVAL_S = 0.25
    """Rows closer together than this (wall seconds) update the file once: a watcher polls
    every second or two, and a fast asynchronous run makes hundreds of rows a second."""

    def __init__(self, path: Path, cfg: ExperimentConfig, unit: str, pace: Pace) -> None:
        self.path, self.pace = path, pace
        self.written = -math.inf  # time.monotonic() of the last write
        self.data: dict[str, Any] = {
            "format": 1,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": "running",
            "name": cfg.name,
            "strategy": cfg.strategy.name,
            "unit": unit,
            "round": pace.start_done,
            "rounds": cfg.rounds,
            "time_budget_s": cfg.time_budget_s,
            "fraction": pace.fraction(pace.start_done, pace.start_vt),
            "virtual_time": pace.start_vt,
            "last_accuracy": None,
            "last_accuracy_round": None,
            "wall_time_s": pace.start_wall,
            "eta_s": None,
            "session": {
                "round": pace.start_done,
                "virtual_time": pace.start_vt,
                "wall_time_s": pace.start_wall,
            },
            "checkpoint_every": cfg.checkpoint_every,
            "last_checkpoint": None,
            "started_at": _now(),
            "updated_at": _now(),
            "stop_reason": None,
            "error": None,
        }

    def update(self, *, force: bool = True, **fields: Any) -> None:
        """Set `fields` and replace the file (unless not `force` and it was just written)."""
        self.data.update(fields)
        now = time.monotonic()
        if not force and now - self.written < self.MIN_INTERVAL_S:
            return
        self.written = now
        self.data["updated_at"] = _now()
        text = json.dumps({k: _finite(v) for k, v in self.data.items()}, indent=2)
        replace_text(self.path, text + "\n")

    def row(self, row: dict[str, Any]) -> None:
        """A new row: the position, virtual time, accuracy, wall time and ETA."""
        done, vt = int(row["round"]), float(row["virtual_time"])
        wall = float(row.get("wall_time", self.data["wall_time_s"]))
        fields: dict[str, Any] = {
            "round": done,
            "virtual_time": vt,
            "wall_time_s": wall,
            "fraction": self.pace.fraction(done, vt),
            "eta_s": self.pace.eta(done, vt, wall),
        }
        if "central_accuracy" in row:
            fields["last_accuracy"] = float(row["central_accuracy"])
            fields["last_accuracy_round"] = done
        self.update(force=False, **fields)


def read_status(results: Path) -> dict[str, Any] | None:
    """The status.json of results folder `results` (None if it has none or it is unreadable,
    e.g. a folder written before status files existed)."""
    try:
        data = json.loads((Path(results) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Monitor:
    """Everything that reports a run while it goes: the live tables and the status file of its
    results folder (if it has one), and the progress bar (if asked for).

    `open` starts the folder's live files, `on_row` takes every row, `checkpointed` each saved
    checkpoint; the run ends with `close` (the last messages) and then `end`, or `interrupted`.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: str | Path | None,
        *,
        unit: str,
        progress: bool,
        start_rows: list[dict[str, Any]] | None = None,
        start_wall: float = 0.0,
        stream: TextIO | None = None,
    ) -> None:
        rows = start_rows or []
        last = rows[-1] if rows else {}
        self.cfg, self.unit = cfg, unit
        self.out = Path(out_dir) if out_dir is not None else None
        self.stream = stream if stream is not None else sys.stderr
        self.pace = Pace(
            cfg.rounds,
            cfg.time_budget_s,
            int(last.get("round", 0)),
            float(last.get("virtual_time", 0.0)),
            start_wall,
        )
        self.done = self.pace.start_done
        self.start_rows = rows
        self.checkpoints = False  # whether this run saves checkpoints (set by `open`)
        self.last_checkpoint: int | None = self.done if start_rows is not None else None
        self.rounds: LiveRounds | None = None
        self.messages: LiveMessages | None = None
        self.status: Status | None = None
        if start_rows is not None:
            print(f"resuming from {unit} {self.done} of {cfg.rounds}", file=self.stream, flush=True)
        self.progress = progress
        self.closed = False
        self.bar: ProgressBar | None = None
        if self.out is not None and self.out.is_dir():  # a stale status is not this run's
            self._status().update()

    def _status(self) -> Status:
        assert self.out is not None
        if self.status is None:
            self.status = Status(self.out / STATUS_FILE, self.cfg, self.unit, self.pace)
            self.status.data["last_checkpoint"] = self.last_checkpoint
        return self.status

    def open(self, grid: Any, message_columns: list[str], *, checkpoints: bool) -> None:
        """Start the live files in the (existing) results folder: the status, rounds.csv
        with the rows so far (a resumed run's checkpoint rows), messages.csv with the settled
        messages of `grid`; the progress bar."""
        self.checkpoints = checkpoints
        evaluated = [r for r in self.start_rows if "central_accuracy" in r]
        if self.progress and self.bar is None:
            self.bar = ProgressBar(self.cfg.name, self.pace, self.unit, self.stream)
            if evaluated:  # a resumed run shows its last accuracy from the start
                self.bar.acc = float(evaluated[-1]["central_accuracy"])
        if self.out is None:
            return
        status = self._status()
        if evaluated:
            status.data["last_accuracy"] = float(evaluated[-1]["central_accuracy"])
            status.data["last_accuracy_round"] = int(evaluated[-1]["round"])
        status.update(state="running")
        self.rounds = LiveRounds(self.out / ROUNDS_FILE, self.start_rows)
        self.messages = LiveMessages(self.out / MESSAGES_FILE, grid, message_columns)

    def on_row(self, row: dict[str, Any]) -> None:
        """A row was recorded: write it and the messages settled by now; update status, bar."""
        if int(row["round"]) > 0:
            self.done = int(row["round"])
        if self.rounds is not None:
            self.rounds.add(row)
        if self.messages is not None:
            self.messages.flush()
        if self.status is not None:
            self.status.row(row)
        if self.bar is not None:
            self.bar(row)

    def checkpointed(self, done: int) -> None:
        """A checkpoint at `done` rounds (updates) was saved."""
        self.last_checkpoint = done
        if self.status is not None:
            self.status.update(last_checkpoint=done)

    def close(self) -> None:
        """The loop is over: the last settled messages, files closed; the bar ends (once)."""
        if self.closed:
            return
        self.closed = True
        if self.messages is not None:
            self.messages.flush()
            self.messages.close()
        if self.rounds is not None:
            self.rounds.close()
        if self.status is not None:
            self.status.update()  # the last row's, if it came right after another
        if self.bar is not None:
            self.bar.close()

    def end(self, state: str, **fields: Any) -> None:
        """Record the run's final `state` (with e.g. stop_reason, error, wall_time_s)."""
        if self.out is not None and self.out.is_dir():
            done = {"eta_s": 0.0} if state == "finished" else {"eta_s": None}
            self._status().update(state=state, **done, **fields)

    def interrupted(self) -> None:
        """Ctrl-C: flush the tables, mark the status interrupted, say how to go on."""
        self.close()
        self.end("interrupted", error="KeyboardInterrupt")
        print(self.interrupt_message(), file=self.stream, flush=True)

    def interrupt_message(self) -> str:
        """What was kept of an interrupted run, and how to continue it."""
        unit, plural = self.unit, UNITS.get(self.unit, self.unit + "s")
        at = f"interrupted at {unit} {self.done} of {self.cfg.rounds}"
        if self.out is None:
            return f"{at} (no results folder: nothing was kept)"
        if self.checkpoints and self.last_checkpoint is not None:
            return (
                f"{at}; the last checkpoint is at {unit} {self.last_checkpoint}: "
                f"continue with `fl-sim resume {self.out}`"
            )
        kept = (
            f"{plural} 1..{self.done} are kept in {self.out / ROUNDS_FILE}"
            if self.done
            else f"no {unit} was completed"
        )
        if self.checkpoints:
            why = f"before its first checkpoint (checkpoint_every = {self.cfg.checkpoint_every})"
        elif self.cfg.checkpoint_every > 0:
            why = "without checkpoints (they are saved on the virtual grid only)"
        else:
            why = "without checkpoints (checkpoint_every was 0)"
        return f"{at}, {why}: it cannot be resumed; {kept}"
