"""Run many independent experiments (a sweep) on a pool of processes, one per core.

Each run is deterministic in its config and seed, so the pool changes wall time only. Workers
are spawned (not forked) so each starts with a clean torch and Flower state.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fl.experiment.tables import write_csv

Check = tuple[str, bool, str]  # (claim, met, the numbers)

J = TypeVar("J")


def run_jobs(
    fn: Callable[[J], dict[str, Any]], jobs: Sequence[J], workers: int
) -> list[dict[str, Any]]:
    """`fn(job)` for every job, in order; on `workers` processes if more than one."""
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            return list(pool.map(fn, jobs))
    return [fn(job) for job in jobs]


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
