"""Simulated device profiles: how long a message takes on a device, and device populations.

A :class:`DeviceProfile` turns the work of one message into virtual seconds (DESIGN.md, "What
virtual time counts"): download (model bytes ÷ a per-message downlink draw) + compute (FLOPs
reported by the client ÷ the device's throughput, times a seeded lognormal jitter) + upload (reply
bytes ÷ an uplink draw). Compute time therefore depends on the model and the work the client did,
never on a constant per client. :func:`make_population` builds a list of profiles from a
:class:`PopulationConfig`:

- ``uniform``: identical devices.
- ``tiers``: TiFL-style resource groups; speed = CPU share × ``flops_per_s``.
- ``mobile``: real phones. Each device is a phone drawn from the AI-Benchmark list (RAM > 2 GB)
  and a network drawn from the 19 FLASH devices; its speed follows the phone's benchmark score and
  its observable ``features`` (RAM, year, Android version, CPU score) relate to that speed only
  noisily, as an on-device profiler such as FLeet's I-Prof needs.

Units: FLOP/s, bits/s, bytes, seconds. ``*_mbps`` config values are megabits per second (1e6 bit/s).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from fl.sim.availability import AlwaysOn, Availability, OnOff

__all__ = [
    "AVAILABILITIES",
    "FLASH_BANDWIDTHS_KBPS",
    "PHONES",
    "POPULATIONS",
    "DeviceProfile",
    "Latency",
    "Link",
    "Phone",
    "PopulationConfig",
    "make_population",
    "tier_counts",
]

POPULATIONS: tuple[str, ...] = ("uniform", "tiers", "mobile")
AVAILABILITIES: tuple[str, ...] = ("always", "onoff")

# --------------------------------------------------------------------------------------------------
# Embedded device data. Source: the public repository PKU-Chengxu/FLASH at commit 55cbede
# (2022-06-02), files `raw_ai_benchmark_list.json` and `speed_distri.json`, BSD-2-Clause licence,
# Copyright (c) 2018, TalwalkarLab (FLASH is a fork of LEAF). The phone scores in that file come
# from the AI-Benchmark ranking (ai-benchmark.com, ETH Zurich). Redistribution of these derived
# numbers keeps this notice, as BSD-2-Clause asks.
# --------------------------------------------------------------------------------------------------


class Phone(NamedTuple):
    """One phone of the AI-Benchmark list: chipset, RAM, release year, Android, two scores."""

    soc: str  # chipset; "SD" = Snapdragon, "Helio" = MediaTek Helio, "Kirin" = HiSilicon Kirin
    ram_gb: float
    year: int
    android: float
    cpu_f_score: float  # AI-Benchmark "CPU_F_AI_Score": float network inference on the CPU
    fp32_score: float  # AI-Benchmark "FP32_Score": the speed proxy used by the `mobile` population


# The 254 phones of `raw_ai_benchmark_list.json` with RAM > 2 GB (FedScale also keeps only these),
# in the file's order: soc, RAM (GB), year, Android, CPU_F_AI_Score, FP32_Score. Chipset names were
# abbreviated and whitespace normalised; nothing else was changed. FP32 p5/p50/p95 = 48/129.5/1145.
_PHONE_ROWS = """\
Kirin 990 5G,8,2019,10,3744,716
Kirin 990 5G,8,2019,10,3890,709
Kirin 990 5G,8,2019,10,3813,703
Kirin 990,8,2019,10,3800,703
Kirin 990,8,2019,10,3750,713
Kirin 810,8,2019,9,2808,451
Kirin 810,6,2019,9,2568,459
Kirin 810,6,2019,9,2388,461
Kirin 810,8,2019,9,2657,448
SD 855,6,2019,10,3212,920
SD 855 Plus,12,2019,9,4147,1356
SD 855 Plus,12,2019,9,4243,1319
SD 855,6,2019,10,3149,913
SD 855,8,2019,10,4204,957
SD 855,12,2019,10,4310,977
SD 855,8,2019,10,3534,954
SD 855,8,2019,10,3603,969
SD 855,8,2019,10,3558,964
SD 855,6,2019,10,3183,870
SD 855 Plus,12,2019,9,3946,1364
SD 855,6,2019,9,4203,1190
SD 855,6,2019,10,3150,832
SD 855 Plus,8,2019,9,3135,1201
SD 855,8,2019,9,3287,1115
Kirin 980,6,2018,10,3657,131
SD 855,8,2019,9,3441,1153
SD 855,6,2019,9,3229,1168
Kirin 980,6,2019,10,3689,132
SD 855,6,2019,9,4046,1203
SD 855,6,2019,9,3119,1155
SD 855,8,2019,9,4062,1131
SD 855,8,2019,9,3734,1170
Kirin 980,8,2019,10,3695,129
Kirin 980,8,2018,10,3695,129
Kirin 980,4,2018,10,3644,132
SD 855 Plus,8,2019,10,3211,1107
Helio P90,8,2019,9,2038,140
SD 855,6,2019,9,3093,1140
SD 855,8,2019,9,3079,1134
Kirin 980,8,2019,10,3675,133
SD 855,6,2018,9,3019,1095
SD 855,6,2019,9,3120,1035
SD 855,6,2019,9,3031,1014
SD 855,6,2019,9,3058,1096
SD 855 Plus,8,2019,10,3207,1081
SD 855,6,2019,9,3098,1061
SD 855,8,2019,9,2717,1169
SD 855,8,2019,9,2759,1089
SD 855,8,2019,9,2740,1071
SD 855,12,2019,10,3304,992
SD 855,12,2019,9,3943,1200
SD 855,12,2019,10,3254,975
Kirin 980,6,2018,9,3471,129
Kirin 980,8,2019,9,3484,125
SD 855,8,2019,9,2751,1156
Kirin 980,6,2018,9,3485,129
Kirin 980,8,2018,9,3483,132
Exynos 9825,8,2019,9,2943,787
Kirin 980,8,2019,9,3466,134
Kirin 980,4,2018,9,3484,134
Kirin 980,8,2019,9,3489,132
Kirin 980,6,2019,9,3496,133
SD 855,12,2019,9,2997,1141
Exynos 9825,12,2019,10,2842,799
Helio P90,8,2019,9,2037,160
Exynos 9820,6,2019,10,2757,754
Exynos 9820,8,2019,10,2769,756
Exynos 9820,8,2019,10,2713,765
SD 845,4,2018,10,2324,850
SD 845,6,2018,9,2546,869
SD 845,4,2018,10,2283,847
SD 845,6,2019,10,2150,848
SD 845,8,2018,9,2154,923
SD 845,6,2018,10,1943,847
SD 845,6,2018,10,1968,845
SD 845,8,2018,9,2242,934
SD 845,6,2018,9,2214,926
SD 845,8,2018,9,2187,929
SD 845,10,2018,9,2192,937
SD 845,4,2018,9,2212,926
SD 845,6,2018,9,2174,932
SD 845,8,2018,10,2185,840
SD 845,8,2018,10,2178,839
SD 845,4,2018,9,2056,929
SD 845,6,2018,9,2007,900
SD 845,6,2018,9,2024,818
Exynos 980,8,2019,9,3047,366
SD 730,8,2019,10,2127,421
SD 730,6,2019,10,2112,422
SD 730G,6,2019,9,2282,451
SD 730,8,2019,9,2082,450
SD 730,8,2019,9,2150,410
SD 845,6,2019,9,1894,723
SD 710,8,2019,10,1517,320
Helio G90T,8,2019,9,3027,141
SD 670,4,2019,10,1569,287
SD 670,4,2019,10,1567,286
SD 675,6,2019,9,2108,215
SD 675,6,2019,9,2053,212
SD 675,8,2019,9,2029,215
SD 675,6,2019,9,2221,203
SD 675,6,2019,9,2106,197
SD 675,6,2019,9,2067,201
SD 675,6,2019,9,2141,201
SD 675,4,2019,9,2010,196
SD 675,4,2019,9,1929,198
SD 855,6,2019,10,3457,146
SD 665,4,2019,9,1698,137
SD 665,4,2019,9,1555,136
SD 665,8,2019,9,1582,138
SD 665,8,2019,9,1568,136
SD 665,4,2019,9,1549,136
Exynos 9810,6,2018,9,2223,200
SD 665,4,2019,9,1549,136
SD 665,6,2019,9,1552,137
SD 665,4,2019,10,1546,133
SD 712,8,2019,9,1445,105
Helio P70,6,2019,9,1756,130
SD 845,6,2018,9,2004,133
SD 710,4,2019,9,1402,97
SD 675,4,2019,9,2000,108
SD 845,6,2018,9,1875,109
Helio P65,6,2019,9,1774,111
Exynos 9810,6,2018,9,1673,198
Exynos 9810,4,2018,9,1723,195
SD 675,4,2019,9,2057,108
Helio P65,4,2019,9,1786,49
SD 712,6,2019,9,1518,107
SD 712,6,2019,9,1516,108
SD 710,8,2019,9,1502,110
SD 710,8,2019,9,1495,105
SD 712,6,2019,9,1513,87
SD 712,8,2019,9,1445,100
SD 710,6,2018,9,1474,101
SD 710,8,2019,9,1406,113
Helio P70,4,2019,9,1658,86
SD 710,6,2019,9,1419,108
SD 710,8,2019,9,1408,111
SD 710,6,2019,9,1491,105
Kirin 970,6,2017,9,1997,141
Kirin 970,6,2017,9,1983,147
SD 710,4,2019,9,1442,111
SD 845,6,2018,9,2135,126
SD 710,4,2018,9,1503,99
Kirin 970,6,2018,9,1980,145
SD 710,6,2018,9,1435,89
SD 845,6,2018,9,2143,121
Kirin 970,4,2018,9,1986,153
Kirin 970,4,2018,9,1977,138
Helio P70,4,2019,9,1762,77
Kirin 970,4,2018,9,1950,136
Helio P60,4,2018,9,1685,118
Helio P70,6,2019,9,1132,107
Helio P70,6,2019,9,1696,47
Exynos 9609,4,2019,9,1589,205
Exynos 9609,4,2019,9,1611,213
Helio P60,4,2019,9,1548,99
Helio P70,4,2019,9,1149,113
SD 845,4,2018,9,2015,143
SD 730G,8,2019,9,2034,124
Helio P60,4,2018,9,1643,29
SD 835,6,2017,9,1757,127
Helio P70,4,2019,9,1086,62
Exynos 9610,6,2019,9,1402,205
Helio P60,6,2018,9,1634,38
SD 820,4,2016,10,1595,76
SD 821,4,2017,9,1502,80
SD 835,6,2017,9,1680,116
SD 835,6,2017,9,1686,121
SD 835,4,2017,9,1677,121
SD 835,4,2017,9,1668,136
SD 835,4,2017,9,1652,135
SD 820,6,2016,9,1796,95
SD 821,4,2016,10,1914,69
SD 821,4,2016,9,1858,102
SD 821,4,2016,9,1897,39
SD 835,6,2017,9,1612,80
SD 835,4,2017,10,1707,61
Exynos 8895,6,2017,9,1309,104
Exynos 8895,4,2017,9,1278,109
SD 821,4,2016,9,1781,107
SD 820,4,2016,9,1690,97
Exynos 8895,4,2017,9,1319,97
SD 821,4,2016,10,1813,68
SD 835,4,2017,10,1641,57
SD 835,4,2017,10,1657,57
SD 835,8,2017,9,1638,86
Exynos 9611,6,2019,9,1400,78
SD 821,6,2016,9,1615,89
SD 632,4,2019,9,1302,88
SD 820,6,2016,10,1649,64
Exynos 9611,6,2019,9,1409,80
SD 835,4,2017,9,1680,85
SD 835,4,2017,9,1680,102
SD 636,4,2018,9,1336,97
SD 821,4,2017,9,1581,80
SD 636,4,2019,9,1329,97
SD 636,4,2018,9,1292,93
SD 632,3,2019,9,1299,104
Kirin 710,4,2018,9,1197,111
Kirin 710,3,2018,9,1194,115
Kirin 710,3,2018,9,1195,103
SD 660,4,2019,9,1426,93
SD 660,6,2018,9,1490,76
SD 660,4,2018,9,1481,75
SD 660,6,2018,9,1454,78
SD 636,4,2018,9,1552,74
SD 660,4,2018,9,1454,65
SD 636,4,2018,10,1335,41
SD 660,6,2019,9,1400,78
SD 660,4,2018,9,1306,83
SD 660,6,2018,9,1330,72
Exynos 7885,4,2018,9,1148,90
SD 636,4,2018,9,1301,61
SD 636,4,2019,9,1342,59
Exynos 7885,4,2017,9,1140,88
SD 636,4,2018,9,1251,74
Exynos 7904,4,2019,9,1081,81
SD 636,4,2018,9,1292,75
Exynos 7904,4,2019,9,1078,85
SD 636,4,2018,9,1302,80
Exynos 7904,4,2019,9,1066,85
Exynos 7904,4,2019,9,1071,83
Exynos 7884,3,2019,9,1041,71
Kirin 659,4,2018,9,861,58
SD 625,4,2017,9,791,87
SD 625,4,2018,9,786,81
SD 630,4,2018,9,755,83
SD 625,4,2018,9,785,86
SD 625,4,2017,9,801,68
SD 630,3,2017,9,754,85
SD 630,4,2018,9,766,77
Unisoc SC9863A,3,2019,9,752,84
SD 439,3,2019,9,804,76
SD 630,3,2018,9,735,83
SD 450,4,2018,9,723,70
Helio P35,4,2019,9,595,75
Helio P35,4,2019,9,612,73
SD 450,3,2018,9,726,60
Helio P35,4,2019,9,568,76
Helio P35,4,2019,9,626,68
Helio P35,6,2019,9,556,77
Helio P22,4,2019,9,596,71
Helio P35,4,2019,9,599,70
Helio P22,4,2019,9,600,64
Helio P22,4,2019,9,596,65
Helio P23,3,2018,10,666,24
Helio P23,4,2018,9,621,22
SD 430,3,2017,9,556,45
SD 430,3,2017,9,544,43
SD 430,4,2018,9,553,44
SD 435,4,2018,9,552,39
SD 400,3,2016,6.0,329,13
Intel Atom Z3580,4,2015,6.0,307,32"""


def _parse_phones(rows: str) -> tuple[Phone, ...]:
    """Parse :data:`_PHONE_ROWS` (one CSV line per phone)."""
    phones = []
    for line in rows.splitlines():
        soc, ram, year, android, cpu_f, fp32 = line.split(",")
        phones.append(Phone(soc, float(ram), int(year), float(android), float(cpu_f), float(fp32)))
    return tuple(phones)


#: Phones a ``mobile`` device is drawn from (uniformly: the list carries no market shares).
PHONES: tuple[Phone, ...] = _parse_phones(_PHONE_ROWS)
_MEDIAN_FP32 = float(np.median([p.fp32_score for p in PHONES]))


class Link(NamedTuple):
    """One FLASH device's throughput: mean and sd of download and upload, KB/s (1 KB = 1024 B)."""

    down_mean: float
    down_sd: float
    up_mean: float
    up_sd: float


#: The 19 real devices of FLASH's `speed_distri.json` (down_u, down_sigma, up_u, up_sigma), rounded
#: to 0.1 KB/s. FLASH divides model sizes in bytes by 1024 before dividing by these, so the unit is
#: KiB/s: bits/s = KB/s × 1024 × 8. FLASH draws each round's speed from N(mean, sd), redrawing until
#: positive; `DeviceProfile.latency` does the same.
FLASH_BANDWIDTHS_KBPS: tuple[Link, ...] = (
    Link(7491.4, 3369.3, 4935.2, 2767.3),
    Link(4054.8, 1819.5, 3006.2, 890.1),
    Link(2370.2, 1388.2, 2774.2, 1096.9),
    Link(9913.0, 1551.0, 6635.4, 1459.5),
    Link(4208.7, 1481.6, 2974.5, 833.2),
    Link(3778.5, 2843.4, 2631.6, 1576.4),
    Link(3472.7, 1276.7, 5140.6, 2277.4),
    Link(4668.4, 612.6, 3205.5, 419.4),
    Link(3297.7, 771.3, 2336.6, 1609.9),
    Link(4283.6, 1561.0, 3641.6, 1495.0),
    Link(3658.1, 1315.9, 2546.9, 1089.0),
    Link(7214.1, 3363.2, 4039.7, 2189.0),
    Link(8885.5, 1999.1, 6278.6, 489.1),
    Link(5125.0, 2087.6, 3729.8, 461.5),
    Link(7271.3, 1914.0, 5742.5, 1964.1),
    Link(4317.6, 1265.0, 3285.7, 1018.3),
    Link(6708.1, 6738.5, 664.6, 312.0),
    Link(17332.7, 11181.6, 5641.5, 2549.8),
    Link(3176.8, 1838.0, 431.0, 157.7),
)
_BITS_PER_KB = 1024 * 8
_BITS_PER_MBIT = 1e6
_ALWAYS_ON = AlwaysOn()  # shared default: AlwaysOn is frozen and stateless


# --------------------------------------------------------------------------------------------------
# Validation helpers: errors name the class, the field and the offending value.
# --------------------------------------------------------------------------------------------------


def _as_float(owner: str, name: str, value: object) -> float:
    """``value`` as a float, or a ValueError naming ``owner.name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
    return float(value)


def _positive(owner: str, name: str, value: object) -> float:
    """A positive finite number (speeds, bandwidths, means)."""
    number = _as_float(owner, name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{owner}.{name} must be a positive finite number, got {value!r}")
    return number


def _non_negative(owner: str, name: str, value: object) -> float:
    """A non-negative finite number (jitters, sizes, work)."""
    number = _as_float(owner, name, value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{owner}.{name} must be a non-negative finite number, got {value!r}")
    return number


def _probability(owner: str, name: str, value: object) -> float:
    """A probability in [0, 1]."""
    number = _as_float(owner, name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{owner}.{name} must be a probability in [0, 1], got {value!r}")
    return number


def _positive_tuple(owner: str, name: str, values: object) -> tuple[float, ...]:
    """A non-empty tuple of positive numbers (lists from TOML are accepted)."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{owner}.{name} must be a non-empty sequence of numbers, got {values!r}")
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
        if not isinstance(self.availability, Availability):
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


# --------------------------------------------------------------------------------------------------
# Populations.
# --------------------------------------------------------------------------------------------------


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

    kind: str = "uniform"
    flops_per_s: float = 1e9
    down_mbps: float = 20.0
    up_mbps: float = 5.0
    tier_shares: tuple[float, ...] = (4.0, 2.0, 1.0, 1 / 3, 1 / 5)
    tier_down_mbps: tuple[float, ...] = (100.0, 30.0, 30.0, 30.0, 10.0)
    tier_up_mbps: tuple[float, ...] | None = None
    tier_fractions: tuple[float, ...] | None = None
    availability: str = "always"
    mean_online_s: float = 3600.0
    mean_offline_s: float = 600.0
    failure_prob: float = 0.0
    compute_jitter: float = 0.0
    bandwidth_jitter: float | None = None
    stragglers: tuple[int, ...] = ()
    straggler_slowdown: float = 10.0

    def __post_init__(self) -> None:
        owner = "PopulationConfig"
        stragglers = tuple(self.stragglers)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in stragglers):
            raise ValueError(f"{owner}.stragglers must be node indices, got {self.stragglers!r}")
        object.__setattr__(self, "stragglers", stragglers)
        object.__setattr__(
            self,
            "straggler_slowdown",
            _positive(owner, "straggler_slowdown", self.straggler_slowdown),
        )
        if self.kind not in POPULATIONS:
            raise ValueError(f"{owner}.kind must be one of {POPULATIONS}, got {self.kind!r}")
        if self.availability not in AVAILABILITIES:
            raise ValueError(
                f"{owner}.availability must be one of {AVAILABILITIES}, got {self.availability!r}"
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
                raise ValueError(
                    f"{owner}.{name} must have one entry per tier ({len(shares)}, as "
                    f"tier_shares), got {values!r}"
                )
            object.__setattr__(self, name, values)
        if self.tier_down_mbps is None:
            raise ValueError(f"{owner}.tier_down_mbps must be a sequence of numbers, got None")


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
