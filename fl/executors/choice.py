"""Which executor a run uses: a config's `executor` / `workers`, and what "auto" means.

The choice needs only the run's shape (a `RunPlan`: an experiment config has every field), so
this package knows nothing of strategies: the experiment says whether its strategy is
asynchronous.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Protocol

from fl import client
from fl.executors.base import EXECUTORS, Executor, SequentialExecutor
from fl.executors.batched import BatchedExecutor
from fl.executors.processes import ProcessExecutor
from fl.executors.vmap import batchable


class RunPlan(Protocol):
    """What the executor choice reads of a run (an `ExperimentConfig` is one)."""

    @property
    def executor(self) -> str: ...
    @property
    def workers(self) -> int: ...
    @property
    def torch_threads(self) -> int: ...
    @property
    def num_nodes(self) -> int: ...
    @property
    def rounds(self) -> int: ...
    @property
    def train(self) -> Any: ...  # steps, batch_size, epochs
    @property
    def strategy(self) -> Any: ...  # clients_per_round
    @property
    def model(self) -> Any: ...  # name
    @property
    def asynchronous(self) -> bool:
        """Whether `rounds` counts model updates of an asynchronous strategy."""
        ...


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


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def inside_worker() -> bool:
    """Whether this process is a worker of a sweep (a process pool's, or a Ray task, which
    sets FL_SWEEP_WORKER): "auto" then never starts workers of its own."""
    return mp.parent_process() is not None or os.environ.get("FL_SWEEP_WORKER") == "1"


def estimated_client_seconds(cfg: RunPlan, ws: client.Workspace) -> tuple[float, float]:
    """Rough sequential client compute on this host: (per training task, whole run)."""
    sizes = [len(idx) for idx in ws.data.node_train]
    per_node = sum(sizes) / max(len(sizes), 1)
    t = cfg.train
    examples = (t.steps * t.batch_size) if t.steps > 0 else per_node * t.epochs
    per_task = examples * ws.train_flops / HOST_FLOPS_PER_S
    if cfg.asynchronous:  # `rounds` counts model updates: one task each
        return per_task, per_task * cfg.rounds
    clients = cfg.strategy.clients_per_round or cfg.num_nodes
    return per_task, per_task * cfg.rounds * min(clients, cfg.num_nodes)


def choose_executor(cfg: RunPlan, ws: client.Workspace) -> str:
    """The executor "auto" means for `cfg`: "batched" for small models that can be batched;
    "processes" when tasks and the run are long enough to pay for shipping tasks to workers,
    on a host with ≥ 2 cores (and not from inside a worker process, e.g. a sweep's); else
    "sequential" (never "ray": a cluster is asked for by name). An asynchronous run pushes
    one task at a time: only with lazy execution do its tasks reach the pool together. Any
    choice gives the same results as "sequential"
    (batched: to float tolerance)."""
    if batchable(ws.model) and ws.train_flops <= BATCHED_MAX_TRAIN_FLOPS:
        return "batched"
    workers = cfg.workers or usable_cores()
    if inside_worker():
        return "sequential"  # a worker already (a sweep's): its siblings use the other cores
    if cfg.asynchronous and not getattr(cfg, "lazy", False):
        return "sequential"  # one task per push after the first: nothing to spread
    per_task, per_run = estimated_client_seconds(cfg, ws)
    if workers >= 2 and per_task >= PROCESSES_MIN_TASK_S and per_run >= PROCESSES_MIN_RUN_S:
        return "processes"
    return "sequential"


def make_executor(cfg: RunPlan, ws: client.Workspace) -> Executor:
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
        return ProcessExecutor(cfg.workers or usable_cores(), torch_threads=cfg.torch_threads)
    if kind == "ray":
        from fl.executors.ray import RayExecutor

        return RayExecutor(
            ws,
            workers=cfg.workers,
            torch_threads=cfg.torch_threads,
            cpus=getattr(cfg, "ray_worker_cpus", 1.0),
            gpus=getattr(cfg, "ray_worker_gpus", 0.0),
            address=getattr(cfg, "ray_address", ""),
        )
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {cfg.executor!r}")
