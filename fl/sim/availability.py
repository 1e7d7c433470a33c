"""When simulated devices are online, in virtual time.

The virtual grid asks two questions of a device's availability: is it online at virtual time
``t`` (seconds), and when does that next change. Answering the second lets the grid jump the clock
straight to the next event instead of polling, and lets a server wait for enough devices to come
online (:func:`next_time_online_count`).

Models:

- :class:`AlwaysOn`: online at every time.
- :class:`OnOff`: an alternating renewal process, online periods ~ Exp(mean_on) and offline periods
  ~ Exp(mean_off), drawn lazily and deterministically from a seed. Exponential periods are chosen
  because they are memoryless: started online with probability mean_on / (mean_on + mean_off) (the
  default), the process is stationary, so "the fraction of devices online" is the same at time 0 as
  after a long run. No real availability trace is obtainable offline (FedScale's and FLASH's traces
  are too large to ship), so the two means are parameters.

:class:`PopulationAvailability` answers the grid's two questions for a whole population at once
(an online mask at ``t``; the next time at least ``k`` nodes are online), from arrays of states
and next change times: O(1) numpy for always-on populations, and for on/off ones only the nodes
whose state changed since the last query are asked again.
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "DEFAULT_HORIZON_S",
    "AlwaysOn",
    "Availability",
    "OnOff",
    "OnOffNodes",
    "PopulationAvailability",
    "next_time_online_count",
]

#: How far ahead :func:`next_time_online_count` looks before giving up (one week of virtual time).
DEFAULT_HORIZON_S = 7 * 24 * 3600.0


@runtime_checkable
class Availability(Protocol):
    """A device's online/offline pattern over virtual time (seconds, starting at 0).

    ``online`` is right-continuous: at a change time ``c`` it already returns the new state, and it
    is constant on ``[t, next_change(t))``.
    """

    def online(self, t: float) -> bool:
        """Whether the device is online at virtual time ``t``."""
        ...

    def next_change(self, t: float) -> float:
        """First time strictly after ``t`` at which ``online`` flips; ``math.inf`` if never."""
        ...


@dataclass(frozen=True)
class AlwaysOn:
    """A device that is online at every time (the default)."""

    def online(self, t: float) -> bool:
        """Always ``True``."""
        return True

    def next_change(self, t: float) -> float:
        """Never changes: ``math.inf``."""
        return math.inf


def _check_time(t: float) -> float:
    """Return ``t`` as a float, or raise if it is not a finite number."""
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"virtual time t must be finite, got {t!r}")
    return t


class OnOff:
    """Seeded alternating renewal process: online ~ Exp(mean_on), offline ~ Exp(mean_off).

    The process starts at time 0 in state ``start_online`` (``None``: online with probability
    ``mean_on / (mean_on + mean_off)``, which makes it stationary). Times before 0 report the
    initial state. Change times are generated lazily in chunks whose sizes are fixed in advance
    (64, 64, 128, 256, ... doubling up to 65 536, see :meth:`chunk_size`), chunk ``j`` from its own
    child seed ``SeedSequence(seed, spawn_key=(j + 1,))``, so the answers depend only on the seed,
    never on the order or range of queries, and a query far ahead costs O(log) chunks. Queries are a
    bisect over the change times generated so far: O(log k). Memory is one ``array('d')`` of change
    times per device, so 10 000 devices over a day of virtual time cost a few MB.
    """

    __slots__ = ("_changes", "_chunks", "_entropy", "_mean_off", "_mean_on", "_start_online")

    def __init__(
        self,
        mean_on: float,
        mean_off: float,
        seed: int | Sequence[int],
        start_online: bool | None = None,
    ) -> None:
        self._mean_on = _positive_mean("mean_on", mean_on)
        self._mean_off = _positive_mean("mean_off", mean_off)
        self._entropy = _entropy("seed", seed)
        if start_online is None:
            p_on = self._mean_on / (self._mean_on + self._mean_off)
            start_online = bool(self._child_rng(0).random() < p_on)
        self._start_online = bool(start_online)
        self._changes = array("d")
        self._chunks = 0

    def __repr__(self) -> str:
        return (
            f"OnOff(mean_on={self._mean_on!r}, mean_off={self._mean_off!r}, "
            f"seed={self._entropy!r}, start_online={self._start_online!r})"
        )

    @property
    def mean_on(self) -> float:
        """Mean length of an online period (s)."""
        return self._mean_on

    @property
    def mean_off(self) -> float:
        """Mean length of an offline period (s)."""
        return self._mean_off

    @property
    def start_online(self) -> bool:
        """State at time 0."""
        return self._start_online

    def online(self, t: float) -> bool:
        """Whether the device is online at virtual time ``t``."""
        t = _check_time(t)
        self._extend_past(t)
        flips = bisect_right(self._changes, t)
        return self._start_online ^ bool(flips & 1)

    def next_change(self, t: float) -> float:
        """First time strictly after ``t`` at which the state flips (always finite)."""
        t = _check_time(t)
        self._extend_past(t)
        return self._changes[bisect_right(self._changes, t)]

    def state_and_next(self, t: float) -> tuple[bool, float]:
        """``(online(t), next_change(t))`` with a single lookup (used by event sweeps)."""
        t = _check_time(t)
        self._extend_past(t)
        flips = bisect_right(self._changes, t)
        return self._start_online ^ bool(flips & 1), self._changes[flips]

    @staticmethod
    def chunk_size(index: int) -> int:
        """Change times in chunk ``index``; even, so every chunk starts in the initial state."""
        return min(64 << max(index - 1, 0), 1 << 16)

    def _child_rng(self, key: int) -> np.random.Generator:
        """Generator for stream ``key`` (0: initial state, j + 1: chunk j of change times)."""
        return np.random.default_rng(np.random.SeedSequence(self._entropy, spawn_key=(key,)))

    def _extend_past(self, t: float) -> None:
        """Generate chunks until the last known change time is strictly after ``t``."""
        changes = self._changes
        while not changes or changes[-1] <= t:
            self._append_chunk()

    def _append_chunk(self) -> None:
        """Append the next chunk of change times (strictly increasing)."""
        changes = self._changes
        size = self.chunk_size(self._chunks)
        first, second = (
            (self._mean_on, self._mean_off)
            if self._start_online
            else (self._mean_off, self._mean_on)
        )
        scales = np.tile((first, second), size // 2)
        durations = self._child_rng(self._chunks + 1).standard_exponential(size) * scales
        last = changes[-1] if changes else 0.0
        times = last + np.cumsum(durations)
        # A zero-length period (probability ~0, or lost to rounding at large t) would make two
        # changes coincide and hide a flip; nudge them apart so change times strictly increase.
        if not (times[0] > last and np.all(np.diff(times) > 0)):
            previous = last
            for i in range(size):
                if times[i] <= previous:
                    times[i] = math.nextafter(previous, math.inf)
                previous = times[i]
        changes.frombytes(np.ascontiguousarray(times, dtype=np.float64).tobytes())
        self._chunks += 1


def _positive_mean(name: str, value: float) -> float:
    """Validate a mean period length: a positive finite number of seconds."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"OnOff.{name} must be a positive number of seconds, got {value!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"OnOff.{name} must be a positive finite number of seconds, got {value!r}")
    return value


def _entropy(name: str, seed: int | Sequence[int]) -> tuple[int, ...]:
    """Validate a seed (a non-negative int or a sequence of them) and return it as a tuple."""
    parts = (seed,) if isinstance(seed, int | np.integer) else tuple(seed)
    if not parts or not all(isinstance(p, int | np.integer) and p >= 0 for p in parts):
        raise ValueError(f"OnOff.{name} must be a non-negative int or ints, got {seed!r}")
    return tuple(int(p) for p in parts)


def _state_and_next(avail: Availability, t: float) -> tuple[bool, float]:
    """``(online(t), next_change(t))``, in one lookup when the model offers it."""
    if isinstance(avail, OnOff):
        return avail.state_and_next(t)
    return bool(avail.online(t)), avail.next_change(t)


def next_time_online_count(
    avails: Sequence[Availability],
    t: float,
    k: int,
    *,
    horizon: float = DEFAULT_HORIZON_S,
) -> float:
    """Earliest time ``>= t`` at which at least ``k`` of the devices are online.

    Why: a server that needs ``k`` clients waits in virtual time instead of polling. This sweeps the
    devices' change events in time order (a heap of ``next_change`` times), so it costs
    O(events · log n) and is exact. Returns ``math.inf`` if ``k`` exceeds the number of devices or
    the count is not reached within ``horizon`` seconds after ``t``. ``k <= 0`` returns ``t``.
    """
    t = _check_time(t)
    if k <= 0:
        return t
    if k > len(avails):
        return math.inf
    states: list[bool] = []
    heap: list[tuple[float, int]] = []
    for i, avail in enumerate(avails):
        state, change = _state_and_next(avail, t)
        states.append(state)
        if change < math.inf:
            heap.append((change, i))
    count = sum(states)
    if count >= k:
        return t
    heapq.heapify(heap)
    return _sweep(heap, states, count, k, t + horizon, avails.__getitem__)


def _sweep(
    heap: list[tuple[float, int]],
    states: Any,
    count: int,
    k: int,
    end: float,
    model_of: Callable[[int], Availability],
) -> float:
    """The first change time ≤ `end` at which `count` online nodes reach `k` (inf if none):
    pops the (next change, node) heap in time order, applying every change of an instant
    before counting; `states` (node → online) is updated in place."""
    while heap and heap[0][0] <= end:
        now = heap[0][0]
        while heap and heap[0][0] == now:  # apply every change at this instant before counting
            i = heap[0][1]
            state, following = _state_and_next(model_of(i), now)
            count += int(state) - int(states[i])
            states[i] = state
            if following <= now:
                raise RuntimeError(
                    f"availability of device {i} broke its contract: next_change({now!r}) "
                    f"returned {following!r}, not a later time"
                )
            if following < math.inf:
                heapq.heapreplace(heap, (following, i))
            else:
                heapq.heappop(heap)
        if count >= k:
            return now
    return math.inf


# --------------------------------------------------------------------------------------------------
# All nodes at once.
# --------------------------------------------------------------------------------------------------


class OnOffNodes:
    """Node ``i`` ↦ ``OnOff(mean_on, mean_off, seed=(seed, i))`` (a picklable factory)."""

    __slots__ = ("mean_off", "mean_on", "seed")

    def __init__(self, mean_on: float, mean_off: float, seed: int) -> None:
        self.mean_on, self.mean_off, self.seed = mean_on, mean_off, int(seed)

    def __call__(self, node: int) -> OnOff:
        return OnOff(self.mean_on, self.mean_off, seed=(self.seed, int(node)))

    def __getstate__(self) -> tuple[float, float, int]:
        return (self.mean_on, self.mean_off, self.seed)

    def __setstate__(self, state: tuple[float, float, int]) -> None:
        self.mean_on, self.mean_off, self.seed = state


class PopulationAvailability:
    """The availability of ``N`` nodes, queried for all of them at once.

    Either every node is :class:`AlwaysOn` (``node_of=None``: online masks and counts are O(1)
    numpy calls, no per-node object exists), or node ``i``'s model is ``node_of(i)`` (a list's
    ``__getitem__``, or :class:`OnOffNodes`). Then the state of every node at the last queried
    time and its next change are kept in two arrays; a later query re-asks only the nodes whose
    next change has passed (an earlier one recomputes all). Models built by a factory are not
    kept (a fresh ``OnOff`` gives the same answers: they depend on the seed only), except those
    handed out by :meth:`node` — a contacted device keeps one availability object.
    """

    def __init__(
        self, n: int, node_of: Callable[[int], Availability] | None = None, *, keep: bool = False
    ) -> None:
        self._n = int(n)
        self._node_of = node_of
        self._keep = keep  # node_of returns stored objects (a list): no need to cache them
        self._objects: dict[int, Availability] = {}
        self._t = -math.inf
        self._state: np.ndarray | None = None
        self._next: np.ndarray | None = None

    @classmethod
    def always(cls, n: int) -> PopulationAvailability:
        """``n`` always-on nodes."""
        return cls(n)

    @classmethod
    def of(cls, avails: Sequence[Availability]) -> PopulationAvailability:
        """The nodes of a list of models (all-AlwaysOn lists take the array fast path)."""
        avails = list(avails)
        if all(type(a) is AlwaysOn for a in avails):
            return cls(len(avails))
        return cls(len(avails), avails.__getitem__, keep=True)

    def __len__(self) -> int:
        return self._n

    @property
    def always_on(self) -> bool:
        """Whether every node is always online."""
        return self._node_of is None

    def node(self, i: int) -> Availability:
        """Node ``i``'s model (the same object on every call)."""
        if self._node_of is None:
            return _ALWAYS
        if self._keep:
            return self._node_of(i)
        model = self._objects.get(i)
        if model is None:
            model = self._objects[i] = self._node_of(i)
        return model

    def _model(self, i: int) -> Availability:
        assert self._node_of is not None
        return self._objects.get(i) or self._node_of(i)

    def _refresh(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """States at ``t`` and next change times of every node (kept for the next query)."""
        if self._state is None or self._next is None or t < self._t:
            state = np.empty(self._n, dtype=bool)
            nxt = np.empty(self._n, dtype=np.float64)
            stale: Iterable[int] = range(self._n)
        else:
            state, nxt = self._state, self._next
            stale = np.flatnonzero(nxt <= t).tolist()
        for i in stale:
            state[i], nxt[i] = _state_and_next(self._model(i), t)
        self._t, self._state, self._next = t, state, nxt
        return state, nxt

    def online_mask(self, t: float) -> np.ndarray:
        """Which nodes are online at ``t`` (a new boolean array)."""
        t = _check_time(t)
        if self._node_of is None:
            return np.ones(self._n, dtype=bool)
        return self._refresh(t)[0].copy()

    def online_indices(self, t: float) -> np.ndarray:
        """Indices of the nodes online at ``t``, ascending (int64)."""
        t = _check_time(t)
        if self._node_of is None:
            return np.arange(self._n, dtype=np.int64)
        return np.flatnonzero(self._refresh(t)[0]).astype(np.int64)

    def next_time_online_count(
        self, t: float, k: int, *, horizon: float = DEFAULT_HORIZON_S
    ) -> float:
        """What :func:`next_time_online_count` returns for these nodes (same sweep, same
        answer), starting from the state arrays instead of asking every node again."""
        t = _check_time(t)
        if k <= 0:
            return t
        if k > self._n:
            return math.inf
        if self._node_of is None:
            return t
        states, nxt = self._refresh(t)
        count = int(states.sum())
        if count >= k:
            return t
        states = states.copy()
        models: dict[int, Availability] = {}  # the sweep's models, built once per node

        def model_of(i: int) -> Availability:
            model = models.get(i)
            if model is None:
                model = models[i] = self._model(i)
            return model

        finite = np.flatnonzero(np.isfinite(nxt))
        heap = list(zip(nxt[finite].tolist(), finite.tolist(), strict=True))
        heapq.heapify(heap)
        return _sweep(heap, states, count, k, t + horizon, model_of)


_ALWAYS = AlwaysOn()
