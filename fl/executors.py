"""Executors for the project's ClientApp: batched training, and the choice of executor.

`BatchedExecutor` trains all the training tasks of one push (a round's clients) together
with `fl.batched_training` when they run the project's own ClientApp on a model that can be
batched; everything else (evaluation, queries, Byzantine or faulty wrappers) runs as the
sequential executor runs it. Its replies equal the sequential ones to float tolerance (the
batched arithmetic sums in another order), and are themselves deterministic.

`make_executor` turns a config's `executor` / `workers` into an executor, choosing one when
the config says "auto" (see `choose_executor`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
import warnings
from collections.abc import Sequence

from flwr.app import Message

from fl import client
from fl.batched_training import BatchTask, batchable, train_batched
from fl.config import ExperimentConfig
from fl.sim.executor import EXECUTORS, ClientTask, Executor, SequentialExecutor, error_reply
from fl.strategies.registry import ASYNC_STRATEGIES

BATCHED_MAX_TRAIN_FLOPS = 1e6
"""Per-example training cost (FLOPs) up to which "auto" batches a model: MLPs, logistic
regression and the CNN on 8×8 digits train 1.3–4× faster batched; convolutions on 28×28 images
(1.7 MFLOPs and up) gain nothing under vmap (`benchmarks/executors.py`)."""

PROCESSES_MIN_TASK_S = 0.005
PROCESSES_MIN_RUN_S = 2.0
"""Estimated client compute per task and per run from which "auto" uses the process pool:
below them, shipping tasks to workers (and forking them) costs more than it saves."""

HOST_FLOPS_PER_S = 2e9
"""A typical single-core training speed of a CPU host (measured 1.3–2.5 GFLOP/s here for the
MNIST CNN and MLP), for those estimates."""


def _is_project_train(task: ClientTask) -> bool:
    # exactly "train": ClientApp.__call__ dispatches "train.<action>" to other functions
    return task.app is client.app and task.message.metadata.message_type == "train"


class BatchedExecutor:
    """Trains a push's training tasks of the project's ClientApp together (torch.func)."""

    name = "batched"

    def __init__(self) -> None:
        self.fallback = SequentialExecutor()

    def __repr__(self) -> str:
        return "BatchedExecutor()"

    def run(self, tasks: Sequence[ClientTask]) -> list[Message]:
        batch = [i for i, t in enumerate(tasks) if _is_project_train(t)]
        if len(batch) < 2:
            return self.fallback.run(tasks)
        replies: list[Message | None] = [None] * len(tasks)
        # One batch per workspace (experiment), prepared in task order: preparing updates the
        # node's context exactly as the sequential app does.
        groups: dict[int, list[tuple[int, client.TrainTask]]] = {}
        for i in batch:
            t = tasks[i]
            try:
                task = client.prepare_train(t.message, t.context)
            except Exception as exc:  # the same error the sequential app replies with
                replies[i] = error_reply(t.message, exc, traceback.format_exc(limit=3))
                continue
            groups.setdefault(id(task.ws), []).append((i, task))
        for group in groups.values():
            for i, reply in _train_group(tasks, group):
                replies[i] = reply
        in_batch = set(batch)
        rest = [i for i in range(len(tasks)) if i not in in_batch]
        for i, reply in zip(rest, self.fallback.run([tasks[i] for i in rest]), strict=True):
            replies[i] = reply
        return [r for r in replies if r is not None]


def _train_group(
    tasks: Sequence[ClientTask], group: list[tuple[int, client.TrainTask]]
) -> list[tuple[int, Message]]:
    """Train one experiment's tasks batched; one at a time if its model cannot be batched or
    the batched step fails (each task then fails or succeeds on its own, as sequentially)."""
    ws = group[0][1].ws
    classes = client.label_classes(ws)
    if batchable(ws.model):
        t0 = time.perf_counter()
        try:
            results = train_batched(
                ws.model, [BatchTask(t.x, t.y, t.start, t.hp, t.seed, classes) for _, t in group]
            )
        except Exception as exc:  # e.g. a model that does not fit: fall back, task by task
            warnings.warn(
                f"batched training failed ({type(exc).__name__}: {exc}); training this "
                "round's clients one at a time",
                RuntimeWarning,
                stacklevel=2,
            )
            results = None
        if results is not None:
            per_task = (time.perf_counter() - t0) / len(group)
            return [
                (i, client.train_reply(tasks[i].message, t, stats, state, per_task))
                for (i, t), (state, stats) in zip(group, results, strict=True)
            ]
    out = []
    for i, t in group:
        try:
            reply = client.finish_train(tasks[i].message, t)
        except Exception as exc:
            reply = error_reply(tasks[i].message, exc, traceback.format_exc(limit=3))
        out.append((i, reply))
    return out


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def estimated_client_seconds(cfg: ExperimentConfig, ws: client.Workspace) -> tuple[float, float]:
    """Rough sequential client compute on this host: (per training task, whole run)."""
    sizes = [len(idx) for idx in ws.data.node_train]
    per_node = sum(sizes) / max(len(sizes), 1)
    t = cfg.train
    examples = (t.steps * t.batch_size) if t.steps > 0 else per_node * t.epochs
    per_task = examples * ws.train_flops / HOST_FLOPS_PER_S
    if cfg.strategy.name in ASYNC_STRATEGIES:  # `rounds` counts model updates: one task each
        return per_task, per_task * cfg.rounds
    clients = cfg.strategy.clients_per_round or cfg.num_nodes
    return per_task, per_task * cfg.rounds * min(clients, cfg.num_nodes)


def choose_executor(cfg: ExperimentConfig, ws: client.Workspace) -> str:
    """The executor "auto" means for `cfg`: "batched" for small models that can be batched;
    "processes" when tasks and the run are long enough to pay for shipping tasks to workers,
    on a host with ≥ 2 cores (and not from inside a worker process, e.g. a sweep's); else
    "sequential". Any choice gives the same results as "sequential" (batched: to float
    tolerance)."""
    if batchable(ws.model) and ws.train_flops <= BATCHED_MAX_TRAIN_FLOPS:
        return "batched"
    workers = cfg.workers or usable_cores()
    if mp.parent_process() is not None:
        return "sequential"  # a worker already (a sweep's): its siblings use the other cores
    if cfg.strategy.name in ASYNC_STRATEGIES:
        return "sequential"  # one task per push after the first: nothing to spread
    per_task, per_run = estimated_client_seconds(cfg, ws)
    if workers >= 2 and per_task >= PROCESSES_MIN_TASK_S and per_run >= PROCESSES_MIN_RUN_S:
        return "processes"
    return "sequential"


def make_executor(cfg: ExperimentConfig, ws: client.Workspace) -> Executor:
    """The executor `cfg.executor` names (resolving "auto"); raises ValueError, naming the
    problem, for a batched executor on a model that cannot be batched."""
    kind = choose_executor(cfg, ws) if cfg.executor == "auto" else cfg.executor
    if kind == "sequential":
        return SequentialExecutor()
    if kind == "batched":
        if not batchable(ws.model):
            raise ValueError(
                f"executor = 'batched': model {cfg.model.name!r} cannot be trained batched "
                "(dropout, batch norm or recurrent layers); use 'auto' or 'sequential'"
            )
        return BatchedExecutor()
    if kind == "processes":
        from fl.pool import ProcessExecutor

        return ProcessExecutor(cfg.workers or usable_cores(), torch_threads=cfg.torch_threads)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {cfg.executor!r}")
