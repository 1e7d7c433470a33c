"""Follow a run from another terminal (`fl-sim watch RESULTS_DIR`): a line per new round.

A running run keeps its results folder current (`fl.experiment.live`): rounds.csv gains a row
per round (asynchronous runs: per model update) and status.json says whether it is still going.
`watch_run` polls both, prints a progress line for each new round — position, virtual time,
accuracy, ETA (the same `Pace` the run's own progress bar uses) — and returns when the run is
over, with an exit code a script can test: 0 finished, 1 failed / interrupted / gone (its
process died without saying so, e.g. SIGKILL), 2 not a results folder.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from fl.experiment.live import ROUNDS_FILE, read_status
from fl.experiment.progress import Pace, format_duration, position_text, seconds_text
from fl.experiment.tables import read_complete_rows

FINISHED, FAILED, NOT_RESULTS = 0, 1, 2
"""watch_run's return codes."""


def watch_run(
    results: Path, *, interval_s: float = 2.0, once: bool = False, out: TextIO | None = None
) -> int:
    """Print the progress of the run writing results folder `results` until it is over.

    A line per new round (asynchronous runs: per evaluated model update, and the latest), then
    one saying how it ended. Returns 0 when it finished, 1 if it failed, was interrupted or its
    process is gone without finishing, 2 if `results` is not a results folder. With `once`,
    print where it stands and return at once (0 also while it is running). Whether the process
    is alive is only checked on the host that runs it (status.json names it).
    """
    stream = out if out is not None else sys.stdout
    results = Path(results)

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    if not results.is_dir() or not any(
        (results / f).is_file() for f in ("status.json", "config.toml", ROUNDS_FILE)
    ):
        say(f"{results} is not a results folder (no status.json, config.toml or {ROUNDS_FILE})")
        return NOT_RESULTS
    status = read_status(results)
    if status is None:  # a folder written before status files, or by a run not yet begun
        return _without_status(results, say)
    say(
        f"watching {results}: {status.get('name')} ({status.get('strategy')}), "
        f"pid {status.get('pid')}, {status.get('state')}"
    )
    lines = _Lines(status)
    rows = read_complete_rows(results / ROUNDS_FILE)
    lines.skip_to(rows, say)  # attached late: the latest row, not the whole history
    while True:
        state = str(status.get("state"))
        if state != "running":
            lines.show(read_complete_rows(results / ROUNDS_FILE), say)
            say(_ending(results, status))
            return FINISHED if state == "finished" else FAILED
        if not _alive(status):
            status = read_status(results) or status  # it may have ended just now
            if status.get("state") == "running":
                lines.show(read_complete_rows(results / ROUNDS_FILE), say)
                say(_gone(results, {**status, "round": lines.done or status.get("round")}))
                return FAILED
            continue
        if once:
            return FINISHED
        time.sleep(interval_s)
        status = read_status(results) or status
        lines.show(read_complete_rows(results / ROUNDS_FILE), say)


class _Lines:
    """The progress lines of a run's rows: which were shown, the last accuracy seen."""

    def __init__(self, status: dict[str, Any]) -> None:
        session = status.get("session") or {}
        self.pace = Pace(
            int(status.get("rounds") or 0),
            float(status.get("time_budget_s") or 0.0),
            int(session.get("round", 0)),
            float(session.get("virtual_time", 0.0)),
            float(session.get("wall_time_s", 0.0)),
        )
        self.unit = str(status.get("unit", "round"))
        self.seen = 0  # rows already looked at
        self.done: int | None = None  # the last row's round (status.json may lag behind)
        self.acc: float | None = None

    def _text(self, row: dict[str, Any]) -> str:
        done, vt = int(row["round"]), float(row["virtual_time"])
        wall = float(row.get("wall_time") or 0.0)
        acc = f"  acc {self.acc:.4f}" if self.acc is not None else ""
        eta = format_duration(self.pace.eta(done, vt, wall))
        return f"{position_text(self.pace, self.unit, done, vt)}{acc}  ETA {eta}"

    def _note(self, row: dict[str, Any]) -> bool:
        """Remember the row's round and accuracy; whether it was evaluated."""
        self.done = int(row["round"])
        value = row.get("central_accuracy", "")
        if value == "" or value is None:
            return False
        self.acc = float(value)
        return True

    def skip_to(self, rows: list[dict[str, Any]], say: Any) -> None:
        """Note every row, show only the latest."""
        for row in rows:
            self._note(row)
        self.seen = len(rows)
        if rows and int(rows[-1]["round"]) > 0:
            say(self._text(rows[-1]))

    def show(self, rows: list[dict[str, Any]], say: Any) -> None:
        """Show the rows not seen yet (a table a resumed run cut back to its checkpoint goes
        on from there)."""
        self.seen = min(self.seen, len(rows))
        new = rows[self.seen :]
        self.seen = len(rows)
        for i, row in enumerate(new):
            evaluated = self._note(row)
            if int(row["round"]) == 0:
                continue
            if self.unit == "round" or evaluated or i == len(new) - 1:
                say(self._text(row))


def _alive(status: dict[str, Any]) -> bool:
    """Whether the run's process still exists (True when it runs on another host)."""
    if status.get("host") not in (None, socket.gethostname()):
        return True
    try:
        pid = int(status["pid"])
        os.kill(pid, 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: not running
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _resume_hint(results: Path, status: dict[str, Any]) -> str:
    """How to go on from where an unfinished run stopped."""
    from fl.loops.checkpoint import CHECKPOINT_FILE  # imports torch: only for a stopped run

    unit = status.get("unit", "round")
    if (results / CHECKPOINT_FILE).is_file():
        at = status.get("last_checkpoint")
        where = f" (the last checkpoint is at {unit} {at})" if at is not None else ""
        return f"continue with `fl-sim resume {results}`{where}"
    return f"no checkpoint (checkpoint_every = {status.get('checkpoint_every', 0)}): rerun it"


def _ending(results: Path, status: dict[str, Any]) -> str:
    """The last line: how the run ended."""
    state, unit = status.get("state"), status.get("unit", "round")
    at = f"{unit} {status.get('round')}/{status.get('rounds')}"
    if state == "finished":
        acc = status.get("last_accuracy")
        acc_text = f", accuracy {acc:.4f}" if isinstance(acc, float) else ""
        return (
            f"finished: {at}{acc_text}, virtual time "
            f"{seconds_text(float(status.get('virtual_time') or 0))} s, "
            f"wall {format_duration(status.get('wall_time_s'))} "
            f"(stop: {status.get('stop_reason')})"
        )
    if state == "interrupted":
        return f"interrupted at {at}: {_resume_hint(results, status)}"
    return f"{state} at {at}: {status.get('error')}"


def _gone(results: Path, status: dict[str, Any]) -> str:
    """The last line when the process died without updating its status (e.g. SIGKILL)."""
    at = f"{status.get('unit', 'round')} {status.get('round')}/{status.get('rounds')}"
    return (
        f"the run (pid {status.get('pid')}) is gone without finishing, at {at}: "
        f"{_resume_hint(results, status)}"
    )


def _without_status(results: Path, say: Any) -> int:
    """A results folder without status.json: finished if it has its summary."""
    if (results / "failure.txt").is_file():
        say(f"failed: {(results / 'failure.txt').read_text().strip()}")
        return FAILED
    if (results / "summary.json").is_file():
        say(f"finished (no status.json: {results} was written by an older fl)")
        return FINISHED
    say(f"{results} has no status.json: its run is not running (or not an fl run of this version)")
    return FAILED
