"""The ``fast_lane`` lie: malicious nodes sit on the population's fastest devices.

A node that lies about its speed (or is placed on purpose on a fast machine) answers first:
asynchronous strategies apply its updates more often and fresher, deadline-based rounds never
drop it, tier-based selection (TiFL) puts it in the fastest tier. In the virtual grid that is
a permutation of the device profiles, applied once when the population is built
(`fl.experiment.build.build_grid`); it draws no randomness.

On Flower's own engines the devices are real machines, so ``fast_lane`` does not apply there
(and attack configs are refused there anyway: the wrappers live in the virtual grid).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from fl.sim.profile import DeviceProfile

__all__ = ["fast_lane", "speed_order"]


def speed_order(devices: Sequence[DeviceProfile]) -> list[int]:
    """Indices of `devices`, fastest first: by ``flops_per_s`` descending, then by
    ``up_bps + down_bps`` descending, then by index (ascending)."""
    return sorted(
        range(len(devices)),
        key=lambda i: (-devices[i].flops_per_s, -(devices[i].up_bps + devices[i].down_bps), i),
    )


def fast_lane(devices: Sequence[DeviceProfile], malicious: Collection[int]) -> list[DeviceProfile]:
    """`devices` permuted so the malicious nodes hold the k fastest profiles (`speed_order`).

    The malicious partition indices, in sorted order, receive the k fastest profiles in speed
    order (the lowest malicious index the fastest); the honest nodes receive the remaining
    profiles in their original relative order. A profile moves whole: speed, links,
    availability, failure probability, jitters, group and features. Deterministic, no RNG;
    the input list is not modified.
    """
    n = len(devices)
    bad = sorted({int(i) for i in malicious})
    if any(not 0 <= i < n for i in bad):
        raise ValueError(f"fast_lane: malicious node indices {bad} outside [0, {n})")
    order = speed_order(devices)
    fastest = order[: len(bad)]
    taken = set(fastest)
    rest = [i for i in range(n) if i not in taken]  # original relative order
    bad_set = set(bad)
    honest = [i for i in range(n) if i not in bad_set]
    out: list[DeviceProfile | None] = [None] * n
    for node, src in zip(bad, fastest, strict=True):
        out[node] = devices[src]
    for node, src in zip(honest, rest, strict=True):
        out[node] = devices[src]
    return [d for d in out if d is not None]
