"""Run many independent experiments (a sweep) on a pool of processes, one per core, or as Ray
tasks across a cluster; record each finished run so that an interrupted sweep resumes.

Each run is deterministic in its config and seed, so the pool changes wall time only. Workers
are spawned (not forked) so each starts with a clean torch and Flower state.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
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


SWEEP_WORKER = "FL_SWEEP_WORKER"
"""Set to "1" in a sweep's worker processes and Ray tasks: executor "auto" then starts no
workers of its own (the sweep's other runs use the other cores)."""


def _pool_task(fn: Callable[[J], dict[str, Any]], job: J) -> tuple[dict[str, Any], float]:
    """A sweep's run in a pool worker, marked as such. Set here rather than in a pool
    initializer so the pool stays swappable for a thread pool (tests do), and only in a child
    process, so a thread pool never marks the main process."""
    if mp.parent_process() is not None:
        os.environ[SWEEP_WORKER] = "1"
    return _timed(fn, job)


def _ray_task(fn: Callable[[J], dict[str, Any]], job: J) -> tuple[dict[str, Any], float]:
    """A sweep's run as a Ray task (its own worker process), marked as a sweep worker."""
    os.environ[SWEEP_WORKER] = "1"
    import torch

    torch.set_num_threads(1)
    return _timed(fn, job)


def connect_ray(workers: int) -> Any:
    """Ray, imported only now (a plain sweep never loads it) and connected: a connection this
    process already has, else $RAY_ADDRESS's cluster, else a new local Ray with `workers`
    CPUs (all cores if 0)."""
    from fl.executors.ray import connect

    try:
        return connect(local_cpus=workers or None)
    except RuntimeError as exc:
        raise RuntimeError("--ray needs Ray: pip install -e '.[simulation]'") from exc


def job_key(job: object) -> str:
    """A stable key for a job (the same on every machine and in every session): the SHA-256 of
    its canonical JSON."""
    text = json.dumps(job, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


DONE_FILE = "sweep_done.jsonl"
"""Where a sweep records each finished run's row, one JSON line per run, as it finishes."""


class _Done:
    """The finished runs of a sweep in `folder` (read at start, appended as runs finish)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DONE_FILE
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short when the sweep was killed: that run reruns
                self.rows[entry["key"]] = entry["row"]

    def add(self, key: str, row: dict[str, Any]) -> None:
        self.rows[key] = row
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "row": row}, default=str) + "\n")


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


Finish = Callable[[int, dict[str, Any], float], None]


def _on_pool(
    fn: Callable[[J], dict[str, Any]], todo: list[tuple[int, J]], workers: int, finish: Finish
) -> None:
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures: dict[Future[tuple[dict[str, Any], float]], int] = {
            pool.submit(_pool_task, fn, job): i for i, job in todo
        }
        for fut in as_completed(futures):
            finish(futures[fut], *fut.result())


def _on_ray(
    fn: Callable[[J], dict[str, Any]], todo: list[tuple[int, J]], workers: int, finish: Finish
) -> None:
    """Each job a Ray task (one CPU each), at most `workers` at a time (0: as many as the
    cluster runs at once)."""
    ray = connect_ray(workers)
    task = ray.remote(num_cpus=1)(_ray_task)
    limit = workers if workers > 0 else len(todo)
    queue = list(todo)
    pending: dict[Any, int] = {}
    while queue or pending:
        while queue and len(pending) < limit:
            i, job = queue.pop(0)
            pending[task.remote(fn, job)] = i
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            finish(pending.pop(ref), *ray.get(ref))


def run_jobs(
    fn: Callable[[J], dict[str, Any]],
    jobs: Sequence[J],
    workers: int,
    *,
    ray: bool = False,
    done_dir: Path | None = None,
    label: Callable[[J], str] = job_label,
    stream: TextIO | None = None,
) -> list[dict[str, Any]]:
    """`fn(job)` for every job, results in the jobs' order: on `workers` spawned processes if
    more than one, or with `ray` as Ray tasks (`$RAY_ADDRESS`'s cluster, else a local Ray; at
    most `workers` at a time, 0 for no limit). Each finished run prints a line to `stream`
    (stderr) with its `label`, how long it took and an ETA for the rest (which one finishes
    first varies; the results never do).

    With `done_dir`, each finished job's row is recorded there as it finishes, and a job
    recorded by an earlier call (the same job: see `job_key`) is not run again: an interrupted
    sweep resumes where it stopped. Rows must then be JSON values."""
    out = stream if stream is not None else sys.stderr
    labels = [label(job) for job in jobs]
    keys = [job_key(job) for job in jobs] if done_dir is not None else []
    done = _Done(done_dir) if done_dir is not None else None
    results: list[Any] = [None] * len(jobs)
    todo: list[tuple[int, J]] = []
    for i, job in enumerate(jobs):
        if done is not None and keys[i] in done.rows:
            results[i] = done.rows[keys[i]]
        else:
            todo.append((i, job))
    if done is not None and len(todo) < len(jobs):
        print(
            f"[sweep] {len(jobs) - len(todo)} of {len(jobs)} runs already finished in "
            f"{done_dir}: skipped",
            file=out,
            flush=True,
        )
    tally = _Tally(len(todo), out)

    def finish(i: int, row: dict[str, Any], seconds: float) -> None:
        results[i] = row
        if done is not None:
            done.add(keys[i], row)
        tally(labels[i], seconds)

    if ray:
        _on_ray(fn, todo, workers, finish)
    elif workers > 1 and len(todo) > 1:
        _on_pool(fn, todo, workers, finish)
    else:
        for i, job in todo:
            finish(i, *_timed(fn, job))
    return results


def add_sweep_options(parser: Any, workers: int) -> None:
    """The options every simulation script's sweep takes: --workers, --ray, --resume."""
    parser.add_argument(
        "--workers",
        type=int,
        default=workers,
        help="runs at a time: processes, or with --ray Ray tasks (0: as many as fit)",
    )
    parser.add_argument(
        "--ray",
        action="store_true",
        help="run each run as a Ray task: $RAY_ADDRESS's cluster, else a local Ray",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"skip the runs an interrupted earlier call into the same --out finished "
        f"(OUT/{DONE_FILE}); without it every run reruns, e.g. after a code change",
    )


def sweep_options(args: Any, out: Path) -> dict[str, Any]:
    """`run_jobs` keywords for a script's parsed `args`: each finished run is recorded in
    `out`; only with --resume are earlier records reused (a plain rerun, e.g. after a code
    change, reruns everything)."""
    if not args.resume:
        (out / DONE_FILE).unlink(missing_ok=True)
    return {"ray": args.ray, "done_dir": out}


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
