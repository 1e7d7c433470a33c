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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fl.schema import ConfigError
from fl.sim.availability import OnOffNodes, PopulationAvailability
from fl.sim.fleet import DevicePopulation
from fl.sim.phones import FLASH_BANDWIDTHS_KBPS, MEDIAN_FP32, PHONES
from fl.sim.profile import (
    _non_negative,
    _positive,
    _positive_tuple,
    _probability,
)

__all__ = [
    "AVAILABILITIES",
    "POPULATIONS",
    "DevicePopulation",
    "PopulationConfig",
    "make_population",
    "tier_counts",
]

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


def make_population(cfg: PopulationConfig, num_nodes: int, seed: int) -> DevicePopulation:
    """``num_nodes`` device profiles for ``cfg``; deterministic in (cfg, num_nodes, seed).

    Node i's random choices (its phone and network for ``mobile``) come from a stream seeded by
    (seed, i), so they do not change when ``num_nodes`` grows; its availability is
    ``OnOff(..., seed=(seed, i))``. Tier membership is a seeded shuffle (:func:`_tier_of_nodes`).

    The result is a :class:`~fl.sim.fleet.DevicePopulation`: the fields as arrays, computed for
    all nodes at once, and ``population[i]`` the node's :class:`DeviceProfile` (built when first
    asked for). ``uniform`` and ``tiers`` cost O(N) numpy work; ``mobile`` draws each node's
    phone and link from its own seeded stream, one small Python step per node (~20 µs).
    """
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int | np.integer) or num_nodes < 0:
        raise ValueError(f"make_population num_nodes must be an int >= 0, got {num_nodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"make_population seed must be an int >= 0, got {seed!r}")
    n, seed = int(num_nodes), int(seed)
    for i in cfg.stragglers:
        if not -n <= i < n:
            raise ValueError(
                f"PopulationConfig.stragglers: node {i} does not exist among {n} nodes"
            )
    builders = {"uniform": _uniform_fields, "tiers": _tier_fields, "mobile": _mobile_fields}
    fields = builders[cfg.kind](cfg, n, seed)
    stragglers = sorted({i % n for i in cfg.stragglers})  # [-1, N-1]: slowed down once
    if stragglers:
        flops = np.broadcast_to(np.asarray(fields["flops_per_s"], dtype=np.float64), (n,)).copy()
        flops[stragglers] = flops[stragglers] / cfg.straggler_slowdown
        groups = list(fields["groups"])
        codes = np.array(fields["group_codes"], dtype=np.int32)
        slowed = {}
        for i in stragglers:
            name = f"{groups[codes[i]]}-straggler"
            if name not in slowed:
                slowed[name] = len(groups)
                groups.append(name)
            codes[i] = slowed[name]
        fields.update(flops_per_s=flops, groups=tuple(groups), group_codes=codes)
    if cfg.availability == "always":
        availability = PopulationAvailability.always(n)
    else:
        availability = PopulationAvailability(
            n, OnOffNodes(cfg.mean_online_s, cfg.mean_offline_s, seed)
        )
    return DevicePopulation(
        availability=availability,
        failure_prob=cfg.failure_prob,
        compute_jitter=cfg.compute_jitter,
        **fields,
    )


_NODE_STREAM = 0xDE71CE  # spawn-key tags: keep population streams apart from OnOff's own streams
_TIER_STREAM = 0x71E25


def _uniform_fields(cfg: PopulationConfig, n: int, seed: int) -> dict[str, Any]:
    """Every node the same device."""
    return {
        "flops_per_s": cfg.flops_per_s,
        "down_bps": cfg.down_mbps * _BITS_PER_MBIT,
        "up_bps": cfg.up_mbps * _BITS_PER_MBIT,
        "bandwidth_jitter": cfg.bandwidth_jitter or 0.0,
        "group_codes": np.zeros(n, dtype=np.int32),
        "groups": ("uniform",),
    }


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


def _tier_of_nodes(cfg: PopulationConfig, num_nodes: int, seed: int) -> np.ndarray:
    """Tier index of each node: exact counts from ``tier_counts``, positions shuffled by ``seed``.

    A seeded shuffle rather than contiguous blocks, so tiers do not line up with whatever order the
    data partitioner gave the nodes (unless an experiment wants that and sorts by ``group``).
    """
    fractions = cfg.tier_fractions or (1.0,) * len(cfg.tier_shares)
    labels = np.repeat(np.arange(len(fractions)), tier_counts(fractions, num_nodes))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TIER_STREAM, num_nodes)))
    return rng.permutation(labels)


def _tier_fields(cfg: PopulationConfig, n: int, seed: int) -> dict[str, Any]:
    """A TiFL resource group per node: speed ∝ CPU share, the tier's bandwidths."""
    tiers = _tier_of_nodes(cfg, n, seed)
    shares = np.asarray(cfg.tier_shares, dtype=np.float64)
    down = np.asarray(cfg.tier_down_mbps, dtype=np.float64)
    up = np.asarray(cfg.tier_up_mbps or cfg.tier_down_mbps, dtype=np.float64)
    return {
        "flops_per_s": shares[tiers] * cfg.flops_per_s,
        "down_bps": down[tiers] * _BITS_PER_MBIT,
        "up_bps": up[tiers] * _BITS_PER_MBIT,
        "bandwidth_jitter": cfg.bandwidth_jitter or 0.0,
        "group_codes": tiers.astype(np.int32),
        "groups": tuple(f"tier-{t + 1}" for t in range(len(shares))),
        "feature_names": ("cpu_share", "down_mbps", "up_mbps"),
        "features": np.stack([shares[tiers], down[tiers], up[tiers]], axis=1),
    }


def _mobile_fields(cfg: PopulationConfig, n: int, seed: int) -> dict[str, Any]:
    """A phone from :data:`PHONES` with a network from :data:`FLASH_BANDWIDTHS_KBPS` per node.

    Speed = ``flops_per_s`` × FP32 score / median FP32 score. Features are the phone's RAM, year,
    Android version and CPU score, which a device can report; the FP32 speed stays hidden.
    Node i's phone and link are two draws from ``SeedSequence(seed, spawn_key=(_NODE_STREAM,
    i))`` (the per-node loop); everything else is gathered from the tables at once.
    """
    phone_of = np.empty(n, dtype=np.int64)
    link_of = np.empty(n, dtype=np.int64)
    num_phones, num_links = len(PHONES), len(FLASH_BANDWIDTHS_KBPS)
    for node in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_NODE_STREAM, node)))
        phone_of[node] = rng.integers(num_phones)
        link_of[node] = rng.integers(num_links)
    phones = np.array(
        [(p.ram_gb, float(p.year), p.android, p.cpu_f_score, p.fp32_score) for p in PHONES]
    )
    links = np.array([tuple(link) for link in FLASH_BANDWIDTHS_KBPS], dtype=np.float64)
    down_mean, up_mean = links[:, 0][link_of], links[:, 2][link_of]
    if cfg.bandwidth_jitter is None:
        down_jitter = links[:, 1][link_of] / down_mean
        up_jitter = links[:, 3][link_of] / up_mean
    else:
        down_jitter, up_jitter = np.full(n, cfg.bandwidth_jitter), np.full(n, math.nan)
    socs = sorted({p.soc for p in PHONES})
    soc_code = np.array([socs.index(p.soc) for p in PHONES], dtype=np.int32)
    return {
        "flops_per_s": cfg.flops_per_s * phones[:, 4][phone_of] / _MEDIAN_FP32,
        "down_bps": down_mean * _BITS_PER_KB,
        "up_bps": up_mean * _BITS_PER_KB,
        "bandwidth_jitter": down_jitter,
        "up_bandwidth_jitter": up_jitter,
        "group_codes": soc_code[phone_of],
        "groups": tuple(socs),
        "feature_names": ("ram_gb", "year", "android", "cpu_score"),
        "features": phones[phone_of, :4],
    }
