"""The batched executor: a push's training tasks of the project's ClientApp, trained together.

`BatchedExecutor` trains all the training tasks of one push (a round's clients) together
with `fl.executors.vmap` when they run the project's own ClientApp on a model that can be
batched; everything else (evaluation, queries, Byzantine or faulty wrappers) runs as the
sequential executor runs it. Its replies equal the sequential ones to float tolerance (the
batched arithmetic sums in another order), and are themselves deterministic.
"""

from __future__ import annotations

import time
import traceback
import warnings
from collections.abc import Sequence

from flwr.app import Message

from fl import client
from fl.executors.base import ClientTask, SequentialExecutor, error_reply
from fl.executors.vmap import BatchTask, batchable, train_batched


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
