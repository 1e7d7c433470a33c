"""The grid's mailbox: every message's outcome, and each reply until the server takes it.

Replies wait in a heap ordered by (virtual arrival time, dispatch order); the grid's clock decides
when they may be pulled. A reply is delivered once; an id delivered or dropped is consumed, and
pulling it again gets Flower's "unavailable" error reply (the grid builds that).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Message

from fl.sim.outcomes import (
    CLIENT_ERROR,
    DEADLINE,
    EXPIRED,
    LOST_FAILED,
    LOST_STATUSES,
    PENDING,
    REPLIED,
    MessageOutcome,
)


@dataclass
class Mailbox:
    """Outcomes by message id, instructions and replies in flight, the arrival heap."""

    outcomes: dict[str, MessageOutcome] = field(default_factory=dict)
    instructions: dict[str, Message] = field(default_factory=dict)
    replies: dict[str, Message] = field(default_factory=dict)
    pending: list[tuple[float, int, str]] = field(default_factory=list)  # (arrives, seq, id)
    consumed: set[str] = field(default_factory=set)

    def record(self, outcome: MessageOutcome, instruction: Message) -> None:
        """A message was dispatched."""
        self.outcomes[outcome.message_id] = outcome
        self.instructions[outcome.message_id] = instruction

    def schedule(self, outcome: MessageOutcome, reply: Message, at: float) -> None:
        """`reply` (a real one, or the error of a lost message) arrives at virtual time `at`."""
        outcome.arrives_at = at
        self.replies[outcome.message_id] = reply
        heapq.heappush(self.pending, (at, outcome.seq, outcome.message_id))

    def next_arrival(self) -> float:
        """Virtual time of the earliest reply still pending (inf if none)."""
        while self.pending and self.pending[0][2] in self.consumed:
            heapq.heappop(self.pending)
        return self.pending[0][0] if self.pending else math.inf

    def deliver(self, outcome: MessageOutcome) -> Message:
        """Hand over the reply of `outcome` (it has arrived) and settle its status."""
        mid = outcome.message_id
        self.consumed.add(mid)
        self.instructions.pop(mid, None)
        reply = self.replies.pop(mid)
        if outcome.status == PENDING:
            outcome.status = CLIENT_ERROR if reply.has_error() else REPLIED
        elif outcome.status in LOST_STATUSES:
            outcome.error = f"{outcome.status}: {outcome.error}"
            outcome.status = EXPIRED if outcome.status != LOST_FAILED else LOST_FAILED
        return reply

    def drop(self, message_ids: Iterable[str]) -> None:
        """Forget replies the server no longer waits for (past its deadline)."""
        for mid in message_ids:
            if mid in self.consumed or mid not in self.outcomes:
                continue
            self.consumed.add(mid)
            self.replies.pop(mid, None)
            self.instructions.pop(mid, None)
            outcome = self.outcomes[mid]
            if outcome.status == PENDING:
                outcome.status = DEADLINE
            elif outcome.status in LOST_STATUSES:
                outcome.error = f"{outcome.status}: {outcome.error}"
