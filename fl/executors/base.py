"""How the virtual grid runs the ClientApps of the messages it is pushed.

The grid hands an executor every task of one `push_messages` call at once (a round's
training messages, say), so an executor may run them in any order, together or in other
processes — as long as each reply is what the node's ClientApp returns for that message and
context. The sequential executor is the reference: the batched and process executors must
give the same replies.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

ClientAppFn = Callable[[Message, Context], Message]

EXECUTORS = ("auto", "sequential", "batched", "processes", "ray")
"""Values of a config's `executor`."""


@dataclass
class ClientTask:
    """One message for one node: the instruction (with its own metadata; its content is a
    private copy unless the app declares `reads_only`, then it is shared with other nodes and
    the server, so an executor must not modify it), the node's persistent context (the app
    may update its state) and the ClientApp the node runs."""

    message: Message
    context: Context
    app: ClientAppFn


class Executor(Protocol):
    """Runs client tasks; returns one reply per task, in task order."""

    def run(self, tasks: Sequence[ClientTask]) -> list[Message]: ...


def run_client_app(task: ClientTask) -> Message:
    """Run one task's ClientApp; a crash or a non-Message return becomes an error reply (a
    crashing client must not stop the run)."""
    try:
        reply = task.app(task.message, task.context)
    except Exception as exc:
        return error_reply(task.message, exc, traceback.format_exc(limit=3))
    if not isinstance(reply, Message):
        return Message(
            Error(
                code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                reason=f"ClientApp returned {type(reply).__name__}, not a Message",
            ),
            reply_to=task.message,
        )
    return reply


def error_reply(message: Message, exc: BaseException, tb: str = "") -> Message:
    """The error reply of a ClientApp that raised `exc` on `message`."""
    reason = f"{type(exc).__name__}: {exc}"
    return Message(
        Error(
            code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
            reason=f"{reason}\n{tb}" if tb else reason,
        ),
        reply_to=message,
    )


class SequentialExecutor:
    """Runs tasks one after another, in order, in this process (the reference executor)."""

    name = "sequential"

    def run(self, tasks: Sequence[ClientTask]) -> list[Message]:
        return [run_client_app(t) for t in tasks]


def shippable(tasks: Sequence[ClientTask]) -> list[int]:
    """The indices of the tasks a multi-worker executor may ship to its workers: those that
    run the project's ClientApp (the others, nodes wrapped by attacks or faults, keep their
    state in this process and run here). Empty when a node has two tasks in the push: the
    second depends on the first's state, so the push runs here, in order (never happens in
    the project's strategies)."""
    from fl import client

    remote = [i for i, t in enumerate(tasks) if t.app is client.app]
    nodes = {tasks[i].context.node_id for i in remote}
    return remote if len(nodes) == len(remote) else []


def chunked(indices: list[int], parts: int) -> list[list[int]]:
    """`indices` cut into at most `parts` contiguous chunks of equal size (the last shorter)."""
    size = -(-len(indices) // parts)
    return [indices[k : k + size] for k in range(0, len(indices), size)]


def run_in_worker(items: Sequence[tuple[Message, Context]]) -> list[tuple[Message, RecordDict]]:
    """In a worker process: run the project's ClientApp on each (message, context), as the
    node's SuperNode would; each reply and the node's updated state."""
    from fl import client
    from fl.protocol.flower_internals import set_node_identity

    out = []
    for message, context in items:
        set_node_identity(message.metadata.run_id, message.metadata.dst_node_id)
        reply = run_client_app(ClientTask(message, context, client.app))
        out.append((reply, context.state))
    return out
