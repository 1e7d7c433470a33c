"""Run many independent experiments (a sweep) on a pool of processes, one per core.

Each run is deterministic in its config and seed, so the pool changes wall time only. Workers
are spawned (not forked) so each starts with a clean torch and Flower state.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TextIO, TypeVar

from fl.experiment.progress import format_duration
from fl.experiment.tables import write_csv

Check = tuple[str, bool, str]  # (claim, met, the numbers)

J = TypeVar("J")


def job_label(job: object, width: int = 60) -> str:
    """A short name for a job: its `name` or `label` (attribute or key), else the leading
    plain values of a tuple (the simulation scripts' ("iid", "fedavg", 0, [...], out) give
    "iid fedavg 0"), else its repr; at most `width` characters."""
    for key in ("name", "label"):
        value = job.get(key) if isinstance(job, dict) else getattr(job, key, None)
        if isinstance(value, str) and value:
            return value[:width]
    if isinstance(job, tuple | list):
        head: list[str] = []
        for item in job:
            if not isinstance(item, str | int | float) or isinstance(item, bool) or len(head) == 4:
                break
            head.append(str(item))
        if head:
            return " ".join(head)[:width]
    return repr(job)[:width]


def _timed(fn: Callable[[J], dict[str, Any]], job: J) -> tuple[dict[str, Any], float]:
    """`fn(job)` and its wall seconds (measured where it ran: in a worker, its own time)."""
    t0 = time.perf_counter()
    return fn(job), time.perf_counter() - t0


class _Tally:
    """One stderr line per finished run: `[run 7/21] <label> done in 12.3 s, ETA 4 min`."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()

    def __call__(self, label: str, seconds: float) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        left = self.total - self.done
        eta = f"ETA {format_duration(elapsed / self.done * left)}" if left else "all done"
        print(
            f"[run {self.done}/{self.total}] {label} done in {format_duration(seconds)}, {eta}",
            file=self.stream,
            flush=True,
        )


def run_jobs(
    fn: Callable[[J], dict[str, Any]],
    jobs: Sequence[J],
    workers: int,
    *,
    label: Callable[[J], str] = job_label,
    stream: TextIO | None = None,
) -> list[dict[str, Any]]:
    """`fn(job)` for every job, results in the jobs' order; on `workers` processes if more than
    one. Each finished run prints a line to `stream` (stderr) with its `label`, how long it
    took and an ETA for the rest (which one finishes first varies; the results never do)."""
    tally = _Tally(len(jobs), stream)
    labels = [label(job) for job in jobs]
    if workers > 1:
        results: list[Any] = [None] * len(jobs)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures: dict[Future[tuple[dict[str, Any], float]], int] = {
                pool.submit(_timed, fn, job): i for i, job in enumerate(jobs)
            }
            for fut in as_completed(futures):
                i = futures[fut]
                results[i], seconds = fut.result()
                tally(labels[i], seconds)
        return results
    out = []
    for job, name in zip(jobs, labels, strict=True):
        row, seconds = _timed(fn, job)
        tally(name, seconds)
        out.append(row)
    return out


def write_summary(out: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write the sweep's rows to out/summary.csv."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.csv"
    write_csv(path, rows)
    return path


def write_report(out: Path, lines: Sequence[str], checks: Sequence[Check]) -> str:
    """Write the tables (`lines`) and the target checklist to out/table.md, print the same, and
    return the text (the simulation scripts' common ending)."""
    text = "\n".join([*lines, *(f"- [{'x' if ok else ' '}] {c}: {v}" for c, ok, v in checks)])
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"\nresults: {out}")
    return text
