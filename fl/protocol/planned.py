"""The work a ClientApp declares before it runs: what lets the virtual grid defer training.

The time a reply arrives depends only on the bytes sent, the work the client does and the bytes
it sends back. A ClientApp that knows the last two before it runs (the project's does:
examples × training FLOPs, and the size of its model) offers `planned_work(message, context)`.
The virtual grid then schedules the reply's arrival at push time and runs the task only when its
reply is needed — pulled, or observed by an omniscient attacker — together with every other
deferred task, so an asynchronous run's tasks reach the batched executor or the process pool in
batches instead of one at a time. A ClientApp without the method, or one that answers None for a
message, runs at push time as before.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedWork:
    """What a task will report once it has run.

    Parameters
    ----------
    work_flops : float
        The `work-flops` its reply will carry (what the time model divides by device speed).
    up_bytes : int
        The bytes of the arrays its reply will carry (what the time model sends upstream).
    """

    work_flops: float
    up_bytes: int
