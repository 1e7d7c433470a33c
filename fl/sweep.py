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

from fl.results import write_csv

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
