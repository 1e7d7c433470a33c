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

from flwr.app import Context, Error, Message
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
