"""When a reply arrives on a simulated device, or why it never does.

A reply takes download (message bytes ÷ downlink) + compute (reported work ÷ device speed, with
seeded jitter) + upload (reply bytes ÷ uplink) from its instruction's send time; it is lost if
the device goes offline before then, fails during the task, or would arrive after the
instruction's TTL (as a SuperLink discards it). The draws are made in a fixed order from the
(node, message) generator, so outcomes do not depend on the order messages are executed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fl.sim.devices import DeviceProfile
from fl.sim.outcomes import LOST_FAILED, LOST_OFFLINE, LOST_TTL


@dataclass(frozen=True)
class ReplyTiming:
    """Seconds of each phase, the arrival time, and (status, reason) if the reply is lost."""

    download: float
    compute: float
    upload: float
    finish: float
    lost: tuple[str, str] | None


def time_reply(
    device: DeviceProfile,
    down_bytes: int,
    up_bytes: int,
    work_flops: float,
    rng: np.random.Generator,
    *,
    sent_at: float,
    ttl: float,
    is_error: bool,
    free: bool,
    can_fail: bool,
) -> ReplyTiming:
    """Time one reply on `device`. An error reply costs only its download; a `free` one (an
    evaluation marked free) costs nothing; only a task that `can_fail` may fail."""
    lat = device.latency(down_bytes, up_bytes, work_flops, rng)
    if free:
        download = compute = upload = 0.0
    elif is_error:
        download, compute, upload = lat.download, 0.0, 0.0
    else:
        download, compute, upload = lat.download, lat.compute, lat.upload
    finish = sent_at + download + compute + upload
    failed = device.fails(rng) and can_fail
    lost: tuple[str, str] | None = None
    if device.availability.next_change(sent_at) <= finish and finish > sent_at:
        lost = (LOST_OFFLINE, "device went offline before replying")
    elif failed:
        lost = (LOST_FAILED, "device failed during the task")
    elif finish > sent_at + ttl:  # as on a SuperLink: a reply after its TTL is discarded
        lost = (LOST_TTL, "reply would arrive after the message TTL")
    return ReplyTiming(download, compute, upload, finish, lost)
