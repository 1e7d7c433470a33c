"""A pool of long-lived worker processes that run the project's ClientApp.

Each worker loads the experiment's data and one model once (the ClientApp's per-process
workspace) and then trains whatever tasks it is sent, so a round of C clients runs on all
cores. A task's reply depends only on its message and its node's context (seeds are derived
from them), and the workers use the run's torch thread count, so the replies are bit-identical
to the sequential executor's, for any number of workers.

On Linux workers are forked (they start at once, sharing the parent's loaded data); elsewhere
they are spawned. The pool is kept for the life of the process, so a sweep of many experiments
pays the start-up once.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fl.sim.executor import ClientTask, SequentialExecutor, run_client_app

_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """The process-wide pool of `workers` workers (started on first use)."""
    pool = _POOLS.get(workers)
    if pool is None:
        # Fork (Linux): workers start at once with the parent's imports and loaded data, and
        # scripts need no `if __name__ == "__main__"` guard (as torch's DataLoader workers).
        # Elsewhere: spawn, which re-imports the main module.
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        ctx = mp.get_context(method)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        _POOLS[workers] = pool
    return pool


@atexit.register
def shutdown_pools() -> None:
    """Stop every worker (also called at interpreter exit)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


def _run_chunk(
    chunk: list[tuple[Message, Context]], torch_threads: int
) -> list[tuple[Message, RecordDict]]:
    """In a worker: run the project's ClientApp on each (message, context); return each reply
    and the node's updated state."""
    import torch

    from fl import client

    torch.set_num_threads(torch_threads)
    out = []
    for message, context in chunk:
        TaskIdentity.run_id = message.metadata.run_id
        TaskIdentity.node_id = message.metadata.dst_node_id
        reply = run_client_app(ClientTask(message, context, client.app))
        out.append((reply, context.state))
    return out


class ProcessExecutor:
    """Runs the project's ClientApp tasks of a push on `workers` processes; other tasks
    (Byzantine or faulty wrappers, whose state lives in this process) run here, in order."""

    name = "processes"

    def __init__(self, workers: int, torch_threads: int = 1, chunks_per_worker: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self.torch_threads = torch_threads
        self.chunks_per_worker = chunks_per_worker
        self.local = SequentialExecutor()
        self.remote_tasks = 0  # tasks run in the workers (the rest ran in this process)

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self.workers})"

    def run(self, tasks: Sequence[ClientTask]) -> list[Message]:
        from fl import client

        remote = [i for i, t in enumerate(tasks) if t.app is client.app]
        nodes = [tasks[i].context.node_id for i in remote]
        # A node sent two tasks in one push: the second depends on the first's state, so the
        # push runs here, in order (never happens in the project's strategies).
        if self.workers < 2 or len(remote) < 2 or len(set(nodes)) < len(nodes):
            return self.local.run(tasks)
        replies: list[Message | None] = [None] * len(tasks)
        size = -(-len(remote) // (self.workers * self.chunks_per_worker))
        parts = [remote[k : k + size] for k in range(0, len(remote), size)]
        pool = _pool(self.workers)
        self.remote_tasks += len(remote)
        futures = [
            pool.submit(
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
        try:
            for part, future in zip(parts, futures, strict=True):
                for i, (reply, state) in zip(part, future.result(), strict=True):
                    replies[i] = reply
                    tasks[i].context.state = state
        except BrokenProcessPool as exc:
            _POOLS.pop(self.workers, None)
            raise RuntimeError(
                "a worker process of the process executor died (out of memory, or killed); "
                "rerun with executor = 'sequential' to see the client's own error"
            ) from exc
        return [r for r in replies if r is not None]
