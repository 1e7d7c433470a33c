"""The private Flower internals the virtual grid and its executors rely on, in one place.

Flower's grids (InMemoryGrid, GrpcGrid) write message ids straight into `Metadata.__dict__`
(the grid also copies `Array`s without re-validating them, through their `__dict__`),
build replies with `make_message`, keep the run in `flwr.supercore.run.Run` and the process's
identity in `flwr.supercore.task_identity.TaskIdentity`, and answer a pull of an unknown id
with a linkstate helper. None of that is public API, so a Flower release may change it:
`tests/test_conformance.py` exercises every function here and fails loudly if one breaks.
"""

from __future__ import annotations

import copy
from typing import Any

from flwr.app import Array, Error, Message, RecordDict
from flwr.app.message import make_message as _make_message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = [
    "Run",
    "copy_array",
    "copy_run",
    "current_task_id",
    "empty_run",
    "make_message",
    "reply_metadata",
    "set_message_id",
    "set_node_identity",
    "set_task_identity",
    "unavailable_reply",
]


def copy_array(array: Array) -> Array:
    """A new Array with the same (immutable) payload, made without re-validating it."""
    new = copy.copy(array)
    if isinstance(array.shape, list):
        new.__dict__["shape"] = list(array.shape)
    return new


def empty_run(run_id: int) -> Run:
    """A `Run` with only its id set (what a simulation without a SuperLink needs)."""
    return Run.create_empty(run_id)


def copy_run(run: Run) -> Run:
    """A copy of `run`, as Flower's grids return from their `run` property."""
    return Run(**vars(run))


def set_task_identity(run_id: int, node_id: int = SUPERLINK_NODE_ID, task_id: int = 1) -> None:
    """Set Flower's process-global identity: `Message(...)` takes its run id from here."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = task_id


def current_task_id(default: int = 1) -> int:
    """The task id of Flower's process-global identity (`default` when none is set)."""
    try:
        return int(TaskIdentity.task_id)
    except RuntimeError:
        return default


def set_node_identity(run_id: int, node_id: int) -> None:
    """Set the run and node of Flower's process-global identity, as a SuperNode's process has
    them, leaving the task id as it is (a worker process running ClientApps)."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id


def set_message_id(message: Message, message_id: str) -> None:
    """Stamp a message id, as Flower's grids do (the field has no public setter)."""
    message.metadata.__dict__["_message_id"] = message_id


def make_message(
    metadata: Any, content: RecordDict | None = None, error: Error | None = None
) -> Message:
    """Flower's internal Message factory (a Message with given metadata)."""
    return _make_message(metadata=metadata, content=content, error=error)


def reply_metadata(msg: Message, *, created_at: float) -> Any:
    """Metadata of a server-generated reply to `msg` (Flower's own error-reply layout)."""
    md = copy.copy(msg.metadata)
    md.__dict__.update(
        {
            "_src_node_id": msg.metadata.dst_node_id,
            "_dst_node_id": SUPERLINK_NODE_ID,
            "_reply_to_message_id": msg.metadata.message_id,
            "_created_at": created_at,
            "_ttl": 0.0,
            "_message_id": "",
        }
    )
    return md


def unavailable_reply(message_id: str, run_id: int, *, created_at: float) -> Message:
    """Flower's answer to pulling an id that was consumed or never existed, stamped with
    `created_at` (the grid's virtual time) instead of the wall clock."""
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_ins_message

    flower = create_message_error_unavailable_ins_message(message_id, run_id)
    md = copy.copy(flower.metadata)
    md.__dict__["_created_at"] = float(created_at)
    md.__dict__["_message_id"] = ""
    msg = make_message(metadata=md, error=flower.error)
    set_message_id(msg, msg.object_id)  # as Flower does: the id of the (restamped) reply
    return msg
