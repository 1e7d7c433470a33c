"""Real-device tables of the ``mobile`` population: AI-Benchmark phones and FLASH network links.

The numbers live in package data files beside this module (``fl/sim/data/phones.json`` and
``fl/sim/data/flash_links.json``, read with :mod:`importlib.resources`). Source: the public
repository PKU-Chengxu/FLASH at commit 55cbede (2022-06-02), files ``raw_ai_benchmark_list.json``
and ``speed_distri.json``, BSD-2-Clause licence, Copyright (c) 2018, TalwalkarLab (FLASH is a fork
of LEAF). The phone scores come from the AI-Benchmark ranking (ai-benchmark.com, ETH Zurich). The
data files carry this notice too, as BSD-2-Clause asks.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["FLASH_BANDWIDTHS_KBPS", "PHONES", "Link", "Phone", "load_links", "load_phones"]

_DATA_PACKAGE = "fl.sim"
_PHONES_FILE = "data/phones.json"
_LINKS_FILE = "data/flash_links.json"


class Phone(NamedTuple):
    """One phone of the AI-Benchmark list: chipset, RAM, release year, Android, two scores."""

    soc: str  # chipset; "SD" = Snapdragon, "Helio" = MediaTek Helio, "Kirin" = HiSilicon Kirin
    ram_gb: float
    year: int
    android: float
    cpu_f_score: float  # AI-Benchmark "CPU_F_AI_Score": float network inference on the CPU
    fp32_score: float  # AI-Benchmark "FP32_Score": the speed proxy used by the `mobile` population


class Link(NamedTuple):
    """One FLASH device's throughput: mean and sd of download and upload, KB/s (1 KB = 1024 B)."""

    down_mean: float
    down_sd: float
    up_mean: float
    up_sd: float


def _rows(name: str) -> list[dict[str, str]]:
    """The rows of a packaged table (JSON: its notice, column names, rows of strings), as dicts.

    JSON, not CSV: Flower's app packaging (`flwr run`) ships .json files and drops .csv ones."""
    text = resources.files(_DATA_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    table = json.loads(text)
    return [dict(zip(table["columns"], row, strict=True)) for row in table["rows"]]


def load_phones() -> tuple[Phone, ...]:
    """The 254 phones of ``raw_ai_benchmark_list.json`` with RAM > 2 GB, in the file's order."""
    return tuple(
        Phone(
            r["soc"],
            float(r["ram_gb"]),
            int(r["year"]),
            float(r["android"]),
            float(r["cpu_f_score"]),
            float(r["fp32_score"]),
        )
        for r in _rows(_PHONES_FILE)
    )


def load_links() -> tuple[Link, ...]:
    """The 19 real devices of FLASH's ``speed_distri.json``, in the file's order."""
    return tuple(
        Link(float(r["down_mean"]), float(r["down_sd"]), float(r["up_mean"]), float(r["up_sd"]))
        for r in _rows(_LINKS_FILE)
    )


#: Phones a ``mobile`` device is drawn from (uniformly: the list carries no market shares).
PHONES: tuple[Phone, ...] = load_phones()
MEDIAN_FP32 = float(np.median([p.fp32_score for p in PHONES]))

#: The 19 real devices of FLASH's `speed_distri.json` (down_u, down_sigma, up_u, up_sigma), rounded
#: to 0.1 KB/s. FLASH divides model sizes in bytes by 1024 before dividing by these, so the unit is
#: KiB/s: bits/s = KB/s × 1024 × 8. FLASH draws each round's speed from N(mean, sd), redrawing until
#: positive; `DeviceProfile.latency` does the same.
FLASH_BANDWIDTHS_KBPS: tuple[Link, ...] = load_links()
