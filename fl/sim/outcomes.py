"""What happened to each message the virtual grid carried, and to each synchronous exchange.

The grid writes one `MessageOutcome` per pushed message and one `Exchange` per
`send_and_receive` call. The experiment runner turns them into the per-round and per-event
tables, so a user can see who was selected, who replied, who was dropped and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Outcome statuses of one message.
PENDING = "pending"  # reply not yet pulled
REPLIED = "replied"  # a reply with content was delivered
CLIENT_ERROR = "client-error"  # the ClientApp raised; an error reply was delivered
LOST_OFFLINE = "lost-offline"  # device was offline at dispatch or went offline before replying
LOST_FAILED = "lost-failed"  # device failed mid-task (failure_prob); no reply
LOST_TTL = "lost-ttl"  # the reply would arrive after the instruction's TTL ran out
DEADLINE = "deadline"  # reply would have arrived after the server's deadline
EXPIRED = "expired"  # lost reply surfaced as an expired-TTL error
LOST_STATUSES = (LOST_OFFLINE, LOST_FAILED, LOST_TTL)


@dataclass
class MessageOutcome:
    """Timeline and fate of one message sent to one simulated node."""

    message_id: str
    node_id: int
    message_type: str
    group_id: str
    sent_at: float
    arrives_at: float  # virtual time the reply (or the expiry error) becomes pullable
    status: str
    seq: int  # global push order, breaks ties deterministically
    download_s: float = 0.0
    compute_s: float = 0.0
    upload_s: float = 0.0
    down_bytes: int = 0
    up_bytes: int = 0
    work_flops: float = 0.0
    error: str = ""

    @property
    def duration(self) -> float:
        """Download + compute + upload of this message, in virtual seconds."""
        return self.download_s + self.compute_s + self.upload_s


@dataclass
class Exchange:
    """One `send_and_receive` call: a synchronous phase of a round."""

    message_type: str
    started_at: float
    ended_at: float
    sent: list[int] = field(default_factory=list)
    replied: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # node -> error/lost reason
    dropped: list[int] = field(default_factory=list)  # late: past the deadline

    @property
    def duration(self) -> float:
        """Virtual seconds this exchange took."""
        return self.ended_at - self.started_at
