"""A pool of long-lived worker processes that run the project's ClientApp.

Each worker loads the experiment's data and one model once (the ClientApp's per-process
workspace) and then trains whatever tasks it is sent, so a round of C clients runs on all
cores. A task's reply depends only on its message and its node's context (seeds are derived
from them), and the workers use the run's torch thread count, so the replies are bit-identical
to the sequential executor's, for any number of workers.

On Linux workers are forked when the experiment's first push needs them (they start at once,
with the experiment's data already loaded); elsewhere they are spawned. They stop at the end
of the experiment, or on their own if the parent process dies.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from flwr.app import Context, Message, RecordDict

from fl.executors.base import ClientTask, SequentialExecutor, chunked, run_in_worker, shippable


def _new_pool(workers: int, torch_threads: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes. Forked on Linux (they start at once, sharing the
    parent's loaded data; scripts need no `if __name__ == "__main__"` guard), unless the run
    uses several torch threads (a forked child of a process whose OpenMP pool ran can hang);
    spawned elsewhere."""
    fork = sys.platform.startswith("linux") and torch_threads == 1
    ctx = mp.get_context("fork" if fork else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_watch_parent)


def _watch_parent() -> None:
    """In a worker: exit as soon as the parent dies (even by SIGKILL), instead of waiting
    forever on a task queue whose other end it inherited."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        mp.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_chunk(
    chunk: list[tuple[Message, Context]], torch_threads: int
) -> list[tuple[Message, RecordDict]]:
    """In a worker: run the project's ClientApp on each (message, context); return each reply
    and the node's updated state."""
    import torch

    torch.set_num_threads(torch_threads)
    return run_in_worker(chunk)


class ProcessExecutor:
    """Runs the project's ClientApp tasks of a push on `workers` processes; other tasks
    (Byzantine or faulty wrappers, whose state lives in this process) run here, in order.
    The workers live until `close()` (the end of the experiment)."""

    name = "processes"

    def __init__(self, workers: int, torch_threads: int = 1, chunks_per_worker: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self.torch_threads = torch_threads
        self.chunks_per_worker = chunks_per_worker
        self.local = SequentialExecutor()
        self.remote_tasks = 0  # tasks run in the workers (the rest ran in this process)
        self._pool: ProcessPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self.workers})"

    def close(self) -> None:
        """Stop the workers (a later push starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, tasks: Sequence[ClientTask]) -> list[Message]:
        remote = shippable(tasks)
        if self.workers < 2 or len(remote) < 2:
            return self.local.run(tasks)
        replies: list[Message | None] = [None] * len(tasks)
        parts = chunked(remote, self.workers * self.chunks_per_worker)
        if self._pool is None:
            self._pool = _new_pool(self.workers, self.torch_threads)
        self.remote_tasks += len(remote)
        try:
            futures = [
                self._pool.submit(
                    _run_chunk,
                    [(tasks[i].message, tasks[i].context) for i in part],
                    self.torch_threads,
                )
                for part in parts
            ]
            in_pool = set(remote)
            here = [i for i in range(len(tasks)) if i not in in_pool]
            for i, reply in zip(here, self.local.run([tasks[i] for i in here]), strict=True):
                replies[i] = reply
            for part, future in zip(parts, futures, strict=True):
                for i, (reply, state) in zip(part, future.result(), strict=True):
                    replies[i] = reply
                    tasks[i].context.state = state
        except BrokenProcessPool as exc:
            self._pool = None
            raise RuntimeError(
                "a worker process of the process executor died (out of memory, or killed); "
                "rerun with executor = 'sequential' to see the client's own error"
            ) from exc
        return [r for r in replies if r is not None]
