"""Device populations: :class:`PopulationConfig` (the ``[devices]`` section) and
:func:`make_population`, which builds one :class:`~fl.sim.profile.DeviceProfile` per node:

- ``uniform``: identical devices.
- ``tiers``: TiFL-style resource groups; speed = CPU share × ``flops_per_s``.
- ``mobile``: real phones. Each device is a phone drawn from the AI-Benchmark list (RAM > 2 GB)
  and a network drawn from the 19 FLASH devices (:mod:`fl.sim.phones`); its speed follows the
  phone's benchmark score and its observable ``features`` (RAM, year, Android version, CPU score)
  relate to that speed only noisily, as an on-device profiler such as FLeet's I-Prof needs.

Invalid values raise :class:`fl.schema.ConfigError` naming ``PopulationConfig.<field>`` (``devices.
<field>`` when the config is loaded from a file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fl.schema import ConfigError
from fl.sim.availability import AlwaysOn, Availability, OnOff
from fl.sim.phones import FLASH_BANDWIDTHS_KBPS, MEDIAN_FP32, PHONES
from fl.sim.profile import (
    DeviceProfile,
    _non_negative,
    _positive,
    _positive_tuple,
    _probability,
)

__all__ = ["AVAILABILITIES", "POPULATIONS", "PopulationConfig", "make_population", "tier_counts"]

POPULATIONS: tuple[str, ...] = ("uniform", "tiers", "mobile")
AVAILABILITIES: tuple[str, ...] = ("always", "onoff")

_BITS_PER_KB = 1024 * 8
_BITS_PER_MBIT = 1e6
_MEDIAN_FP32 = MEDIAN_FP32


@dataclass(frozen=True)
class PopulationConfig:
    """How to build the devices of an experiment (see :func:`make_population`).

    - ``uniform``: every device has ``flops_per_s``, ``down_mbps``, ``up_mbps``.
    - ``tiers``: tier i has speed ``tier_shares[i] * flops_per_s`` and ``tier_down_mbps[i]`` /
      ``tier_up_mbps[i]`` (up defaults to down). The defaults are TiFL's CPU shares
      (4, 2, 1, 1/3, 1/5) with DTFL's per-profile bandwidths (100, 30, 30, 30, 10 Mbps). Tier
      "tier-1" is the first entry (the fastest by default).
    - ``mobile``: ``flops_per_s`` is the speed of the median phone of :data:`PHONES`.

    ``bandwidth_jitter`` ``None`` means the kind's default: 0 for ``uniform``/``tiers``, each FLASH
    device's measured sd/mean for ``mobile``; a number overrides it for every device (both links).
    Lists (as TOML gives them) are accepted for the tuple fields.

    ``stragglers`` lists node indices (negative ones count from the end: ``[-1]`` is the last
    node) whose compute speed is divided by ``straggler_slowdown``, on top of their kind.
    """

    kind: str = "uniform"  # "uniform", "tiers" or "mobile" (see above)
    flops_per_s: float = 1e9  # compute speed (uniform; the base speed of tiers and mobile)
    down_mbps: float = 20.0  # downlink bandwidth, Mbit/s (uniform)
    up_mbps: float = 5.0  # uplink bandwidth, Mbit/s (uniform)
    tier_shares: tuple[float, ...] = (4.0, 2.0, 1.0, 1 / 3, 1 / 5)  # tiers: speed × flops_per_s
    tier_down_mbps: tuple[float, ...] = (100.0, 30.0, 30.0, 30.0, 10.0)  # tiers: downlinks
    tier_up_mbps: tuple[float, ...] | None = None  # tiers: uplinks (None: the downlinks)
    tier_fractions: tuple[float, ...] | None = None  # tiers: share of nodes (None: equal)
    availability: str = "always"  # "always" or "onoff" (Exp online/offline periods)
    mean_online_s: float = 3600.0  # onoff: mean online period, virtual seconds
    mean_offline_s: float = 600.0  # onoff: mean offline period, virtual seconds
    failure_prob: float = 0.0  # probability that a message is lost (device dies mid-task)
    compute_jitter: float = 0.0  # σ of the lognormal factor on compute time (0: exact)
    bandwidth_jitter: float | None = None  # relative sd of link draws (None: the kind's)
    stragglers: tuple[int, ...] = ()  # node indices slowed by straggler_slowdown ([-1]: last)
    straggler_slowdown: float = 10.0  # compute-speed divisor of the stragglers

    def __post_init__(self) -> None:
        owner = "PopulationConfig"
        stragglers = tuple(self.stragglers)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in stragglers):
            raise ConfigError(f"{owner}.stragglers", self.stragglers, "a list of node indices")
        object.__setattr__(self, "stragglers", stragglers)
        object.__setattr__(
            self,
            "straggler_slowdown",
            _positive(owner, "straggler_slowdown", self.straggler_slowdown),
        )
        if not isinstance(self.kind, str) or self.kind not in POPULATIONS:
            raise ConfigError(f"{owner}.kind", self.kind, f"one of {', '.join(POPULATIONS)}")
        if not isinstance(self.availability, str) or self.availability not in AVAILABILITIES:
            raise ConfigError(
                f"{owner}.availability", self.availability, f"one of {', '.join(AVAILABILITIES)}"
            )
        for name in ("flops_per_s", "down_mbps", "up_mbps", "mean_online_s", "mean_offline_s"):
            object.__setattr__(self, name, _positive(owner, name, getattr(self, name)))
        object.__setattr__(
            self, "failure_prob", _probability(owner, "failure_prob", self.failure_prob)
        )
        object.__setattr__(
            self, "compute_jitter", _non_negative(owner, "compute_jitter", self.compute_jitter)
        )
        if self.bandwidth_jitter is not None:
            jitter = _non_negative(owner, "bandwidth_jitter", self.bandwidth_jitter)
            object.__setattr__(self, "bandwidth_jitter", jitter)
        self._check_tiers(owner)

    def _check_tiers(self, owner: str) -> None:
        """Tier tuples: positive numbers, all of the same length as ``tier_shares``."""
        shares = _positive_tuple(owner, "tier_shares", self.tier_shares)
        object.__setattr__(self, "tier_shares", shares)
        for name in ("tier_down_mbps", "tier_up_mbps", "tier_fractions"):
            values = getattr(self, name)
            if values is None:
                continue
            values = _positive_tuple(owner, name, values)
            if len(values) != len(shares):
                raise ConfigError(
                    f"{owner}.{name}",
                    values,
                    f"a list with one entry per tier ({len(shares)}, as tier_shares)",
                )
            object.__setattr__(self, name, values)
        if self.tier_down_mbps is None:
            raise ConfigError(f"{owner}.tier_down_mbps", None, "a list of numbers")


def make_population(cfg: PopulationConfig, num_nodes: int, seed: int) -> list[DeviceProfile]:
    """``num_nodes`` device profiles for ``cfg``; deterministic in (cfg, num_nodes, seed).

    Node i's random choices (its phone and network for ``mobile``) come from a stream seeded by
    (seed, i), so they do not change when ``num_nodes`` grows; its availability is
    ``OnOff(..., seed=(seed, i))``. Tier membership is a seeded shuffle (:func:`_tier_of_nodes`).
    """
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int | np.integer) or num_nodes < 0:
        raise ValueError(f"make_population num_nodes must be an int >= 0, got {num_nodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"make_population seed must be an int >= 0, got {seed!r}")
    builders = {"uniform": _uniform_device, "tiers": _tier_device, "mobile": _mobile_device}
    tiers = _tier_of_nodes(cfg, int(num_nodes), int(seed)) if cfg.kind == "tiers" else None
    build = builders[cfg.kind]
    devices = [
        build(cfg, i, int(seed), tiers, _availability(cfg, int(seed), i))
        for i in range(int(num_nodes))
    ]
    for i in cfg.stragglers:
        if not -num_nodes <= i < num_nodes:
            raise ValueError(
                f"PopulationConfig.stragglers: node {i} does not exist among {num_nodes} nodes"
            )
    for i in sorted({i % num_nodes for i in cfg.stragglers}):  # [-1, N-1]: slowed down once
        d = devices[i]
        devices[i] = dataclasses.replace(
            d, flops_per_s=d.flops_per_s / cfg.straggler_slowdown, group=f"{d.group}-straggler"
        )
    return devices


_NODE_STREAM = 0xDE71CE  # spawn-key tags: keep population streams apart from OnOff's own streams
_TIER_STREAM = 0x71E25


def _availability(cfg: PopulationConfig, seed: int, node: int) -> Availability:
    """Node ``node``'s availability: AlwaysOn, or OnOff seeded by (seed, node)."""
    if cfg.availability == "always":
        return AlwaysOn()
    return OnOff(cfg.mean_online_s, cfg.mean_offline_s, seed=(seed, node))


def _uniform_device(
    cfg: PopulationConfig, node: int, seed: int, tiers: list[int] | None, avail: Availability
) -> DeviceProfile:
    """Every node the same device."""
    return DeviceProfile(
        flops_per_s=cfg.flops_per_s,
        down_bps=cfg.down_mbps * _BITS_PER_MBIT,
        up_bps=cfg.up_mbps * _BITS_PER_MBIT,
        availability=avail,
        bandwidth_jitter=cfg.bandwidth_jitter or 0.0,
        group="uniform",
        failure_prob=cfg.failure_prob,
        compute_jitter=cfg.compute_jitter,
    )


def tier_counts(fractions: Sequence[float], num_nodes: int) -> list[int]:
    """Devices per tier: ``num_nodes`` split by ``fractions`` (largest remainder; ties: lower tier).

    The counts sum to ``num_nodes`` and each is within 1 of ``fraction * num_nodes``.
    """
    weights = np.asarray(fractions, dtype=float) / float(np.sum(fractions))
    exact = weights * num_nodes
    counts = np.floor(exact).astype(int)
    leftover = num_nodes - int(counts.sum())
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:leftover]:
        counts[i] += 1
    return [int(c) for c in counts]


def _tier_of_nodes(cfg: PopulationConfig, num_nodes: int, seed: int) -> list[int]:
    """Tier index of each node: exact counts from ``tier_counts``, positions shuffled by ``seed``.

    A seeded shuffle rather than contiguous blocks, so tiers do not line up with whatever order the
    data partitioner gave the nodes (unless an experiment wants that and sorts by ``group``).
    """
    fractions = cfg.tier_fractions or (1.0,) * len(cfg.tier_shares)
    labels = np.repeat(np.arange(len(fractions)), tier_counts(fractions, num_nodes))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TIER_STREAM, num_nodes)))
    return [int(t) for t in rng.permutation(labels)]


def _tier_device(
    cfg: PopulationConfig, node: int, seed: int, tiers: list[int] | None, avail: Availability
) -> DeviceProfile:
    """A TiFL resource group: speed ∝ CPU share, the tier's bandwidths."""
    assert tiers is not None
    tier = tiers[node]
    share = cfg.tier_shares[tier]
    down = cfg.tier_down_mbps[tier]
    up = (cfg.tier_up_mbps or cfg.tier_down_mbps)[tier]
    return DeviceProfile(
        flops_per_s=share * cfg.flops_per_s,
        down_bps=down * _BITS_PER_MBIT,
        up_bps=up * _BITS_PER_MBIT,
        availability=avail,
        bandwidth_jitter=cfg.bandwidth_jitter or 0.0,
        group=f"tier-{tier + 1}",
        features={"cpu_share": share, "down_mbps": down, "up_mbps": up},
        failure_prob=cfg.failure_prob,
        compute_jitter=cfg.compute_jitter,
    )


def _mobile_device(
    cfg: PopulationConfig, node: int, seed: int, tiers: list[int] | None, avail: Availability
) -> DeviceProfile:
    """A phone from :data:`PHONES` with a network from :data:`FLASH_BANDWIDTHS_KBPS`.

    Speed = ``flops_per_s`` × FP32 score / median FP32 score. Features are the phone's RAM, year,
    Android version and CPU score, which a device can report; the FP32 speed stays hidden.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_NODE_STREAM, node)))
    phone = PHONES[int(rng.integers(len(PHONES)))]
    link = FLASH_BANDWIDTHS_KBPS[int(rng.integers(len(FLASH_BANDWIDTHS_KBPS)))]
    if cfg.bandwidth_jitter is None:
        down_jitter, up_jitter = link.down_sd / link.down_mean, link.up_sd / link.up_mean
    else:
        down_jitter, up_jitter = cfg.bandwidth_jitter, None
    return DeviceProfile(
        flops_per_s=cfg.flops_per_s * phone.fp32_score / _MEDIAN_FP32,
        down_bps=link.down_mean * _BITS_PER_KB,
        up_bps=link.up_mean * _BITS_PER_KB,
        availability=avail,
        bandwidth_jitter=down_jitter,
        up_bandwidth_jitter=up_jitter,
        group=phone.soc,
        features={
            "ram_gb": phone.ram_gb,
            "year": float(phone.year),
            "android": phone.android,
            "cpu_score": phone.cpu_f_score,
        },
        failure_prob=cfg.failure_prob,
        compute_jitter=cfg.compute_jitter,
    )
