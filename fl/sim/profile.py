"""One simulated device: how long a message takes on it (:class:`DeviceProfile`, :class:`Latency`).

A :class:`DeviceProfile` turns the work of one message into virtual seconds: download (model bytes
÷ a per-message downlink draw) + compute (FLOPs reported by the client ÷ the device's throughput,
times a seeded lognormal jitter) + upload (reply bytes ÷ an uplink draw). Compute time therefore
depends on the model and the work the client did, never on a constant per client. Import these from
:mod:`fl.sim.devices`.

Units: FLOP/s, bits/s, bytes, seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fl.schema import ConfigError
from fl.sim.availability import AlwaysOn, Availability, OnOff

__all__ = ["DeviceProfile", "Latency"]

_ALWAYS_ON = AlwaysOn()  # shared default: AlwaysOn is frozen and stateless
# The shipped models, accepted without the (slow, ~10 µs) runtime-protocol isinstance check.
_KNOWN_AVAILABILITIES = (AlwaysOn, OnOff)


# --------------------------------------------------------------------------------------------------
# Validation helpers: errors name the class, the field and the offending value.
# --------------------------------------------------------------------------------------------------


def _as_float(owner: str, name: str, value: object) -> float:
    """``value`` as a float, or a ConfigError (a ValueError) naming ``owner.name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{owner}.{name}", value, "a number")
    return float(value)


def _positive(owner: str, name: str, value: object) -> float:
    """A positive finite number (speeds, bandwidths, means)."""
    number = _as_float(owner, name, value)
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{owner}.{name}", value, "a positive finite number")
    return number


def _non_negative(owner: str, name: str, value: object) -> float:
    """A non-negative finite number (jitters, sizes, work)."""
    number = _as_float(owner, name, value)
    if not (math.isfinite(number) and number >= 0):
        raise ConfigError(f"{owner}.{name}", value, "a non-negative finite number")
    return number


def _probability(owner: str, name: str, value: object) -> float:
    """A probability in [0, 1]."""
    number = _as_float(owner, name, value)
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{owner}.{name}", value, "a probability in [0, 1]")
    return number


def _positive_tuple(owner: str, name: str, values: object) -> tuple[float, ...]:
    """A non-empty tuple of positive numbers (lists from TOML are accepted)."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{owner}.{name}", values, "a non-empty list of numbers")
    return tuple(_positive(owner, f"{name}[{i}]", v) for i, v in enumerate(values))


# --------------------------------------------------------------------------------------------------
# One device.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Virtual seconds one message spends in each phase on a device."""

    download: float
    compute: float
    upload: float

    @property
    def total(self) -> float:
        """download + compute + upload, in that order of summation."""
        return self.download + self.compute + self.upload


def _truncated_normal(mean: float, rel_sd: float, rng: np.random.Generator) -> float:
    """A draw of N(mean, (rel_sd·mean)²) conditioned on > 0 (FLASH's redraw-until-positive).

    With ``rel_sd == 0`` this is ``mean`` and consumes no randomness. Each attempt succeeds with
    probability Φ(1/rel_sd) > 1/2, so the loop ends after fewer than two attempts on average.
    """
    if rel_sd == 0.0:
        return mean
    while True:
        value = float(rng.normal(mean, rel_sd * mean))
        if value > 0.0:
            return value


@dataclass(frozen=True)
class DeviceProfile:
    """A simulated device: compute throughput, link speeds, availability, failures and jitter.

    ``bandwidth_jitter`` is the relative sd of the per-message downlink draw and, unless
    ``up_bandwidth_jitter`` is given, of the uplink draw too (FLASH measured them separately).
    ``features`` are what the device would report about itself (for profilers such as I-Prof); the
    speed is hidden and relates to them only noisily.
    """

    flops_per_s: float
    down_bps: float
    up_bps: float
    availability: Availability = _ALWAYS_ON
    failure_prob: float = 0.0
    compute_jitter: float = 0.0
    bandwidth_jitter: float = 0.0
    group: str = ""
    features: Mapping[str, float] = field(default_factory=dict)
    up_bandwidth_jitter: float | None = None

    def __post_init__(self) -> None:
        owner = "DeviceProfile"
        for name in ("flops_per_s", "down_bps", "up_bps"):
            object.__setattr__(self, name, _positive(owner, name, getattr(self, name)))
        object.__setattr__(
            self, "failure_prob", _probability(owner, "failure_prob", self.failure_prob)
        )
        for name in ("compute_jitter", "bandwidth_jitter"):
            object.__setattr__(self, name, _non_negative(owner, name, getattr(self, name)))
        if self.up_bandwidth_jitter is not None:
            up = _non_negative(owner, "up_bandwidth_jitter", self.up_bandwidth_jitter)
            object.__setattr__(self, "up_bandwidth_jitter", up)
        if type(self.availability) not in _KNOWN_AVAILABILITIES and not isinstance(
            self.availability, Availability
        ):
            raise ValueError(
                f"{owner}.availability must have online() and next_change(), "
                f"got {self.availability!r}"
            )
        if not isinstance(self.group, str):
            raise ValueError(f"{owner}.group must be a string, got {self.group!r}")
        if not isinstance(self.features, Mapping):
            raise ValueError(f"{owner}.features must be a mapping, got {self.features!r}")
        features = {
            str(k): _as_float(owner, f"features[{k!r}]", v) for k, v in self.features.items()
        }
        object.__setattr__(self, "features", features)  # a private copy: callers cannot alter it

    def latency(
        self, down_bytes: int, up_bytes: int, work_flops: float, rng: np.random.Generator
    ) -> Latency:
        """Virtual seconds to download ``down_bytes``, do ``work_flops``, upload ``up_bytes``.

        Randomness is drawn from ``rng`` in a fixed order (downlink, compute, uplink) and only for
        non-zero jitters, so with all jitters zero the result is exactly
        ``down_bytes*8/down_bps``, ``work_flops/flops_per_s``, ``up_bytes*8/up_bps``.
        The compute factor is lognormal(0, compute_jitter): median 1, mean exp(σ²/2).
        """
        owner = "DeviceProfile.latency"
        down_bits = _non_negative(owner, "down_bytes", down_bytes) * 8
        up_bits = _non_negative(owner, "up_bytes", up_bytes) * 8
        work = _non_negative(owner, "work_flops", work_flops)
        down_bps = _truncated_normal(self.down_bps, self.bandwidth_jitter, rng)
        compute = work / self.flops_per_s
        if self.compute_jitter > 0.0:
            compute *= float(rng.lognormal(0.0, self.compute_jitter))
        up_jitter = (
            self.bandwidth_jitter if self.up_bandwidth_jitter is None else self.up_bandwidth_jitter
        )
        up_bps = _truncated_normal(self.up_bps, up_jitter, rng)
        return Latency(down_bits / down_bps, compute, up_bits / up_bps)

    def fails(self, rng: np.random.Generator) -> bool:
        """Whether this message is lost (the device dies mid-task); draws only if 0 < p < 1."""
        if self.failure_prob <= 0.0:
            return False
        if self.failure_prob >= 1.0:
            return True
        return bool(rng.random() < self.failure_prob)
