"""A device population held as arrays: :class:`DevicePopulation`.

A million simulated devices cannot each be a Python object built up front (building and
validating one :class:`~fl.sim.profile.DeviceProfile` costs ~40 µs, so 10⁶ of them take ~40 s and
~1 GiB). The population keeps one numpy array per profile field instead — speeds, bandwidths,
jitters, failure probabilities, a tier/group code, an ``(N, F)`` feature matrix — and a vectorised
availability (:class:`~fl.sim.availability.PopulationAvailability`). ``population[i]`` builds the
:class:`DeviceProfile` of node ``i`` on first access (the grid touches only contacted nodes) and
returns the same object afterwards, equal to the one :func:`fl.sim.population.make_population`
built as a list before.

A population is a ``Sequence[DeviceProfile]``: ``len``, indexing, iteration, ``==`` against a list
of profiles all behave as for the list it replaces. :func:`as_population` wraps a plain list of
profiles (kept as they are, so ``population[i] is profiles[i]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from fl.sim.availability import PopulationAvailability
from fl.sim.profile import DeviceProfile

__all__ = ["DevicePopulation", "as_population"]


def _floats(values: Any, n: int, name: str) -> np.ndarray:
    """``values`` (a scalar or N values) as a read-only float64 array of length ``n``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return np.broadcast_to(arr, (n,))  # one value for every node: no per-node memory
    if arr.shape != (n,):
        raise ValueError(f"DevicePopulation.{name}: expected {n} values, got shape {arr.shape}")
    arr.flags.writeable = False
    return arr


class DevicePopulation(Sequence[DeviceProfile]):
    """``N`` devices as arrays; ``population[i]`` is node ``i``'s :class:`DeviceProfile`.

    ``up_bandwidth_jitter`` holds NaN where a profile has ``None`` (the downlink's jitter applies).
    ``group_codes[i]`` indexes ``groups``; ``features[i, j]`` is feature ``feature_names[j]`` of
    node ``i`` (every node reports the same feature names). ``availability`` answers "which nodes
    are online at t" and "when are ≥ k online" for all nodes at once.
    """

    def __init__(
        self,
        *,
        flops_per_s: Any,
        down_bps: Any,
        up_bps: Any,
        availability: PopulationAvailability,
        failure_prob: Any = 0.0,
        compute_jitter: Any = 0.0,
        bandwidth_jitter: Any = 0.0,
        up_bandwidth_jitter: Any = math.nan,
        group_codes: Any = 0,
        groups: Sequence[str] = ("",),
        feature_names: Sequence[str] = (),
        features: np.ndarray | None = None,
        profiles: Sequence[DeviceProfile] | None = None,
    ) -> None:
        n = len(availability)
        self._n = n
        self.flops_per_s = _floats(flops_per_s, n, "flops_per_s")
        self.down_bps = _floats(down_bps, n, "down_bps")
        self.up_bps = _floats(up_bps, n, "up_bps")
        self.failure_prob = _floats(failure_prob, n, "failure_prob")
        self.compute_jitter = _floats(compute_jitter, n, "compute_jitter")
        self.bandwidth_jitter = _floats(bandwidth_jitter, n, "bandwidth_jitter")
        self.up_bandwidth_jitter = _floats(up_bandwidth_jitter, n, "up_bandwidth_jitter")
        codes = np.asarray(group_codes, dtype=np.int32)
        self.group_codes = np.broadcast_to(codes, (n,)) if codes.ndim == 0 else codes
        self.groups = tuple(str(g) for g in groups)
        self.feature_names = tuple(str(f) for f in feature_names)
        if features is None:
            features = np.zeros((n, len(self.feature_names)))
        self.features = np.asarray(features, dtype=np.float64)
        if self.features.shape != (n, len(self.feature_names)):
            raise ValueError(
                f"DevicePopulation.features: expected shape {(n, len(self.feature_names))}, "
                f"got {self.features.shape}"
            )
        self.availability = availability
        self._profiles = list(profiles) if profiles is not None else None
        self._built: dict[int, DeviceProfile] = {}
        self._all_ids: tuple[int, list[int]] | None = None

    @classmethod
    def from_profiles(cls, profiles: Sequence[DeviceProfile]) -> DevicePopulation:
        """The population of a list of profiles; ``population[i]`` returns ``profiles[i]``."""
        profiles = list(profiles)
        names = sorted({k for p in profiles for k in p.features})
        groups = sorted({p.group for p in profiles})
        code = {g: c for c, g in enumerate(groups)}
        features = np.array(
            [[p.features.get(k, math.nan) for k in names] for p in profiles], dtype=np.float64
        ).reshape(len(profiles), len(names))
        return cls(
            flops_per_s=[p.flops_per_s for p in profiles],
            down_bps=[p.down_bps for p in profiles],
            up_bps=[p.up_bps for p in profiles],
            failure_prob=[p.failure_prob for p in profiles],
            compute_jitter=[p.compute_jitter for p in profiles],
            bandwidth_jitter=[p.bandwidth_jitter for p in profiles],
            up_bandwidth_jitter=[
                math.nan if p.up_bandwidth_jitter is None else p.up_bandwidth_jitter
                for p in profiles
            ],
            group_codes=[code[p.group] for p in profiles],
            groups=groups or ("",),
            feature_names=names,
            features=features,
            availability=PopulationAvailability.of([p.availability for p in profiles]),
            profiles=profiles,
        )

    # ------------------------------------------------------------------ sequence
    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> DeviceProfile: ...

    @overload
    def __getitem__(self, index: slice) -> list[DeviceProfile]: ...

    def __getitem__(self, index: int | slice) -> DeviceProfile | list[DeviceProfile]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        i = self._index(index)
        if self._profiles is not None:
            return self._profiles[i]
        profile = self._built.get(i)
        if profile is None:
            profile = self._build(i)
            self._built[i] = profile
        return profile

    def __iter__(self) -> Iterator[DeviceProfile]:
        for i in range(self._n):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(other) == self._n and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-cache container, compared by value

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_all_ids"] = None  # a cache: rebuilt on demand
        return state

    def __repr__(self) -> str:
        return f"DevicePopulation({self._n} devices, groups={self.groups!r})"

    def _index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"device index must be an int, got {index!r}")
        i = int(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"device index {index} out of range for {self._n} devices")
        return i

    # ------------------------------------------------------------------ per node
    def feature_dict(self, index: int) -> dict[str, float]:
        """Node ``index``'s observable features, ``{name: value}`` (what its profile reports)."""
        i = self._index(index)
        if self._profiles is not None:
            return dict(self._profiles[i].features)
        row = self.features[i]
        return {name: float(row[j]) for j, name in enumerate(self.feature_names)}

    def group(self, index: int) -> str:
        """Node ``index``'s group name."""
        return self.groups[int(self.group_codes[self._index(index)])]

    def _build(self, i: int) -> DeviceProfile:
        up_jitter = float(self.up_bandwidth_jitter[i])
        return DeviceProfile(
            flops_per_s=float(self.flops_per_s[i]),
            down_bps=float(self.down_bps[i]),
            up_bps=float(self.up_bps[i]),
            availability=self.availability.node(i),
            bandwidth_jitter=float(self.bandwidth_jitter[i]),
            up_bandwidth_jitter=None if math.isnan(up_jitter) else up_jitter,
            group=self.groups[int(self.group_codes[i])],
            features=self.feature_dict(i),
            failure_prob=float(self.failure_prob[i]),
            compute_jitter=float(self.compute_jitter[i]),
        )

    # ------------------------------------------------------------------ all nodes
    def online_mask(self, t: float) -> np.ndarray:
        """Boolean array: which nodes are online at virtual time ``t``."""
        return self.availability.online_mask(t)

    def online_indices(self, t: float) -> np.ndarray:
        """Indices (ascending, int64) of the nodes online at virtual time ``t``."""
        return self.availability.online_indices(t)

    def online_ids(self, t: float, first_id: int) -> list[int]:
        """``first_id + i`` for every node ``i`` online at ``t``, ascending (a new list).

        An always-on population keeps the full list and hands out copies (a list copy is ~50x
        cheaper than building a million ints again)."""
        if not self.availability.always_on:
            return (self.availability.online_indices(t) + int(first_id)).tolist()
        if not math.isfinite(float(t)):
            raise ValueError(f"virtual time t must be finite, got {t!r}")
        cached = self._all_ids
        if cached is None or cached[0] != first_id:
            cached = self._all_ids = (int(first_id), list(range(first_id, first_id + self._n)))
        return list(cached[1])

    def next_time_online_count(self, t: float, k: int, **kwargs: float) -> float:
        """Earliest time ``>= t`` at which at least ``k`` nodes are online (``math.inf``: never
        within the horizon); the answer of :func:`fl.sim.availability.next_time_online_count`."""
        return self.availability.next_time_online_count(t, k, **kwargs)

    def feature_mapping(self) -> Mapping[str, np.ndarray]:
        """Each feature's column over all nodes (views of the feature matrix)."""
        return {name: self.features[:, j] for j, name in enumerate(self.feature_names)}


def as_population(devices: Sequence[DeviceProfile]) -> DevicePopulation:
    """``devices`` as a :class:`DevicePopulation` (a population itself, or a wrapped list)."""
    if isinstance(devices, DevicePopulation):
        return devices
    return DevicePopulation.from_profiles(list(devices))
