"""The Ray executor: the virtual grid (clock, events, strategy) stays in this process, the
project's ClientApp tasks run on long-lived Ray actors — on this machine or across a cluster.

- **Data once.** The experiment's partitioned data is put in Ray's object store once; every
  actor maps it from there (numpy arrays, zero-copy on a node) and builds one model. Tasks
  carry only their message and their node's context.
- **Payload once.** A push's shared arrays (the global model every selected node is sent) are
  put in the object store once per `run` and referenced from the pickled messages; an actor
  fetches them once per push, whatever number of its tasks use them.
- **Same results.** A reply depends only on its message, its node's context and the torch
  thread count (seeds derive from them), so the replies are bit-identical to the sequential
  executor's for any number of actors, on any machines with the same packages.
- **Dead workers.** An actor that dies (killed, out of memory, its machine lost) is replaced
  by a new one and its tasks rerun — they are deterministic, so the run's results do not
  change; each restart is logged and counted (`restarts`, in `summary.json`).

`ray.init()` connects to `$RAY_ADDRESS` (or `ray_address`) when set, else starts a local Ray.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Sequence
from typing import Any

from flwr.app import Message

from fl.executors.base import ClientTask, SequentialExecutor, chunked, run_in_worker, shippable

log = logging.getLogger("fl")

SHARED_MIN_BYTES = 1024
"""Payloads (array bytes) of at least this size go to the object store once per push; smaller
ones are pickled with their message."""

MAX_RESTARTS = 3
"""How many times one chunk of tasks may lose its worker before the run stops (a task that
kills every worker, e.g. out of memory, must not loop forever)."""


def _import_ray() -> Any:
    """Ray, or an error that says how to install it."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's FutureWarning
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(
            "executor = 'ray' needs Ray: pip install -e '.[simulation]' (or pip install ray)"
        ) from exc
    return ray


def connect(address: str = "", local_cpus: int | None = None) -> Any:
    """Ray, connected: to `address`, else to `$RAY_ADDRESS`, else to a new local Ray with
    `local_cpus` CPUs (None: one per core). Reuses a connection this process already has."""
    ray = _import_ray()
    if not ray.is_initialized():
        local = not (address or os.environ.get("RAY_ADDRESS"))
        ray.init(
            address=address or None,
            num_cpus=local_cpus if local else None,
            include_dashboard=False,
            configure_logging=False,
        )
    return ray


def dump_tasks(items: Sequence[tuple[Message, Any]], shared: dict[int, int]) -> bytes:
    """Pickle (message, context) pairs, writing each payload whose id is in `shared` as a
    reference to its index there (the object store holds it once)."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.persistent_id = lambda obj: shared.get(id(obj)) if type(obj) is bytes else None  # type: ignore[method-assign]
    pickler.dump(list(items))
    return buf.getvalue()


def load_tasks(blob: bytes, payloads: Sequence[bytes]) -> list[tuple[Message, Any]]:
    """The inverse of `dump_tasks`, given the shared payloads."""
    unpickler = pickle.Unpickler(io.BytesIO(blob))
    unpickler.persistent_load = lambda index: payloads[index]  # type: ignore[method-assign]
    items: list[tuple[Message, Any]] = unpickler.load()
    return items


def shared_payloads(messages: Sequence[Message]) -> list[bytes]:
    """The distinct large array payloads of `messages` (by identity: the grid sends every node
    of a push the same bytes objects), in first-seen order."""
    seen: dict[int, bytes] = {}
    for message in messages:
        if not message.has_content():
            continue
        for record in message.content.array_records.values():
            for array in record.values():
                data = array.data
                if type(data) is bytes and len(data) >= SHARED_MIN_BYTES:
                    seen.setdefault(id(data), data)
    return list(seen.values())


class _Worker:
    """A Ray actor: the experiment's workspace (data from the object store, one model) and the
    ClientApp. Built by `RayExecutor` through `ray.remote`."""

    def __init__(
        self,
        key: tuple[tuple[str, Any], ...],
        client_cfg: Any,
        data_box: list[Any],
        torch_threads: int,
        task_id: int,
    ) -> None:
        import ray
        import torch

        from fl.client.workspace import adopt_workspace
        from fl.protocol.flower_internals import set_task_identity

        torch.set_num_threads(torch_threads)
        set_task_identity(0, 0, task_id)
        adopt_workspace(key, client_cfg, ray.get(data_box[0]))
        self._payloads: tuple[str, list[bytes]] = ("", [])

    def pid(self) -> int:
        """This actor's process id (a test kills it)."""
        return os.getpid()

    def run(self, payload_box: list[Any], blob: bytes) -> list[tuple[Message, Any]]:
        """Run the ClientApp on each pickled (message, context); return each reply and the
        node's updated state."""
        import ray

        ref = payload_box[0]
        if self._payloads[0] != ref.hex():  # once per push, not once per call
            self._payloads = (ref.hex(), ray.get(ref))
        return run_in_worker(load_tasks(blob, self._payloads[1]))


class RayExecutor:
    """Runs the project's ClientApp tasks of a push on `workers` Ray actors; other tasks
    (Byzantine or faulty wrappers, whose state lives in this process) run here, in order.

    Parameters
    ----------
    workspace : fl.client.Workspace
        The experiment's workspace in this process: its data is what the actors share.
    workers : int
        Actors to start (0: as many as the cluster's CPUs allow at `cpus` each).
    torch_threads : int
        Torch intra-op threads in each actor (as in the sequential run: same results).
    cpus : float
        CPUs Ray reserves per actor.
    gpus : float
        GPUs Ray reserves per actor (places actors on GPU nodes; training stays on the CPU,
        where the results are bit-identical).
    address : str
        Ray cluster to connect to ("": `$RAY_ADDRESS`, else a local Ray).
    chunks_per_worker : int
        Calls each actor gets per push (two: one runs while the next is shipped).
    """

    name = "ray"

    def __init__(
        self,
        workspace: Any,
        workers: int = 0,
        torch_threads: int = 1,
        cpus: float = 1.0,
        gpus: float = 0.0,
        address: str = "",
        chunks_per_worker: int = 2,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be ≥ 0, got {workers}")
        self.requested = workers
        self.torch_threads = torch_threads
        self.cpus, self.gpus, self.address = cpus, gpus, address
        self.chunks_per_worker = chunks_per_worker
        self.local = SequentialExecutor()
        self.remote_tasks = 0  # tasks run on the actors (the rest ran in this process)
        self.restarts = 0  # actors that died and were replaced
        self._ws = workspace
        self._actors: list[Any] = []
        self._data_ref: Any = None
        self._ray: Any = None

    def __repr__(self) -> str:
        return f"RayExecutor(workers={len(self._actors) or self.requested})"

    @property
    def workers(self) -> int:
        """Actors running (or to start)."""
        return len(self._actors) or self.requested

    def _start(self) -> None:
        """Connect to Ray, put the data in the object store and start the actors."""
        from fl.protocol.flower_internals import current_task_id

        ray = self._ray = connect(self.address)
        n = self.requested
        if n == 0:
            n = max(1, int(ray.cluster_resources().get("CPU", 1) // max(self.cpus, 1e-9)))
        self._data_ref = ray.put(self._ws.data)
        self._task_id = current_task_id()
        self._cls = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)(_Worker)
        self._actors = [self._new_actor() for _ in range(n)]

    def _new_actor(self) -> Any:
        return self._cls.remote(
            self._ws.key,
            self._ws.config,
            [self._data_ref],
            self.torch_threads,
            self._task_id,
        )

    def pids(self) -> list[int]:
        """The actors' process ids (starting them if needed)."""
        if not self._actors:
            self._start()
        return self._ray.get([a.pid.remote() for a in self._actors])  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the actors (Ray itself stays connected, for the next run in this process)."""
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        self._data_ref = None

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a RayExecutor cannot be pickled (checkpoints keep no executor)")

    def run(self, tasks: Sequence[ClientTask]) -> list[Message]:
        remote = shippable(tasks)
        if not remote:
            return self.local.run(tasks)
        if not self._actors:
            self._start()
        ray = self._ray
        payloads = shared_payloads([tasks[i].message for i in remote])
        payload_box = [ray.put(payloads)]
        shared = {id(p): k for k, p in enumerate(payloads)}
        parts = chunked(remote, len(self._actors) * self.chunks_per_worker)
        blobs = [
            dump_tasks([(tasks[i].message, tasks[i].context) for i in p], shared) for p in parts
        ]
        owner = [k % len(self._actors) for k in range(len(parts))]
        futures = [
            self._actors[owner[k]].run.remote(payload_box, blobs[k]) for k in range(len(parts))
        ]
        self.remote_tasks += len(remote)
        replies: list[Message | None] = [None] * len(tasks)
        in_pool = set(remote)
        here = [i for i in range(len(tasks)) if i not in in_pool]
        for i, reply in zip(here, self.local.run([tasks[i] for i in here]), strict=True):
            replies[i] = reply
        for k, part in enumerate(parts):
            results = self._result(k, futures, owner, payload_box, blobs)
            for i, (reply, state) in zip(part, results, strict=True):
                replies[i] = reply
                tasks[i].context.state = state
        return [r for r in replies if r is not None]

    def _result(
        self,
        k: int,
        futures: list[Any],
        owner: list[int],
        payload_box: list[Any],
        blobs: list[bytes],
    ) -> list[tuple[Message, Any]]:
        """Chunk `k`'s results; if its actor died, replace the actor and rerun the chunk (and
        every other chunk that actor still had) on the new one."""
        ray = self._ray
        for attempt in range(MAX_RESTARTS + 1):
            try:
                return ray.get(futures[k])  # type: ignore[no-any-return]
            except ray.exceptions.RayActorError as exc:
                if attempt == MAX_RESTARTS:
                    raise RuntimeError(
                        f"a Ray worker of the ray executor died {MAX_RESTARTS + 1} times on the "
                        "same tasks (out of memory?); rerun with executor = 'sequential' to see "
                        "the client's own error"
                    ) from exc
                w = owner[k]
                self.restarts += 1
                log.warning(
                    "Ray worker %d died (%s); restarted it and reran its tasks (same results)",
                    w,
                    type(exc).__name__,
                )
                self._actors[w] = self._new_actor()
                for j in range(k, len(futures)):
                    if owner[j] == w:
                        futures[j] = self._actors[w].run.remote(payload_box, blobs[j])
        raise AssertionError("unreachable")
