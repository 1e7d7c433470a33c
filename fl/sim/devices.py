"""Simulated devices: profiles (how long a message takes on a device) and device populations.

The public names of three modules, in one place:

- :mod:`fl.sim.profile`: :class:`DeviceProfile` turns the work of one message into virtual
  seconds: download (model bytes ÷ a per-message downlink
  draw) + compute (FLOPs reported by the client ÷ the device's throughput, times a seeded lognormal
  jitter) + upload (reply bytes ÷ an uplink draw), as a :class:`Latency`.
- :mod:`fl.sim.population`: :func:`make_population` builds the profiles of a population from a
  :class:`PopulationConfig`: ``uniform`` (identical devices), ``tiers`` (TiFL-style resource
  groups) or ``mobile`` (real phones with real networks), as a :class:`DevicePopulation`
  (:mod:`fl.sim.fleet`: the fields as arrays, a profile built per contacted node, vectorised
  availability; a ``Sequence[DeviceProfile]``).
- :mod:`fl.sim.phones`: the tables ``mobile`` draws from, :data:`PHONES` (AI-Benchmark) and
  :data:`FLASH_BANDWIDTHS_KBPS` (FLASH), read from package data files in ``fl/sim/data/``.

Units: FLOP/s, bits/s, bytes, seconds. ``*_mbps`` config values are megabits per second (1e6 bit/s).
"""

from __future__ import annotations

from fl.sim.fleet import DevicePopulation, as_population
from fl.sim.phones import FLASH_BANDWIDTHS_KBPS, PHONES, Link, Phone
from fl.sim.population import (
    AVAILABILITIES,
    POPULATIONS,
    PopulationConfig,
    make_population,
    tier_counts,
)
from fl.sim.profile import DeviceProfile, Latency

__all__ = [
    "AVAILABILITIES",
    "FLASH_BANDWIDTHS_KBPS",
    "PHONES",
    "POPULATIONS",
    "DevicePopulation",
    "DeviceProfile",
    "Latency",
    "Link",
    "Phone",
    "PopulationConfig",
    "as_population",
    "make_population",
    "tier_counts",
]
