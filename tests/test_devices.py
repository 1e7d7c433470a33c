"""Tests for device profiles, populations and availability (fl.sim.devices, fl.sim.availability)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl.sim.availability import AlwaysOn, Availability, OnOff, next_time_online_count
from fl.sim.devices import (
    FLASH_BANDWIDTHS_KBPS,
    PHONES,
    POPULATIONS,
    DeviceProfile,
    Latency,
    PopulationConfig,
    make_population,
    tier_counts,
)

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intervals:
    """Hand-made availability: online exactly on the given half-open [start, end) intervals."""

    spans: tuple[tuple[float, float], ...]

    def online(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.spans)

    def next_change(self, t: float) -> float:
        edges = sorted({x for span in self.spans for x in span})
        return next((x for x in edges if x > t), math.inf)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):  # average the ranks of tied values
            mask = v == value
            r[mask] = r[mask].mean()
        return r

    return float(np.corrcoef(ranks(np.asarray(x)), ranks(np.asarray(y)))[0, 1])


def online_fraction(avail: OnOff, horizon: float) -> float:
    """Fraction of [0, horizon) the device is online, by walking its change times."""
    t, on_time = 0.0, 0.0
    while t < horizon:
        end = min(avail.next_change(t), horizon)
        if avail.online(t):
            on_time += end - t
        t = end
    return on_time / horizon


# ----------------------------------------------------------------------------------------------
# DeviceProfile.latency and fails
# ----------------------------------------------------------------------------------------------


def test_latency_is_exact_without_jitter() -> None:
    device = DeviceProfile(flops_per_s=2.5e9, down_bps=20e6, up_bps=5e6)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    lat = device.latency(down_bytes=1_000_000, up_bytes=400_000, work_flops=7.5e9, rng=rng)
    assert lat == Latency(download=8e6 / 20e6, compute=7.5e9 / 2.5e9, upload=3.2e6 / 5e6)
    assert lat.total == 0.4 + 3.0 + 0.64
    assert rng.bit_generator.state == before  # no jitter: no randomness consumed


def test_compute_time_scales_with_work_not_per_client_constant() -> None:
    device = DeviceProfile(flops_per_s=1e9, down_bps=1e6, up_bps=1e6)
    rng = np.random.default_rng(0)
    small = device.latency(0, 0, 1e9, rng).compute
    large = device.latency(0, 0, 3e9, rng).compute
    assert (small, large) == (1.0, 3.0)


def test_compute_jitter_is_seeded_and_has_lognormal_mean() -> None:
    sigma = 0.5
    device = DeviceProfile(flops_per_s=1e9, down_bps=1e6, up_bps=1e6, compute_jitter=sigma)

    def draw(seed: int) -> float:
        return device.latency(0, 0, 1e9, np.random.default_rng(seed)).compute

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    rng = np.random.default_rng(3)
    factors = np.array([device.latency(0, 0, 1e9, rng).compute for _ in range(20_000)])
    # lognormal(0, σ): median 1, mean exp(σ²/2) = 1.133; sd of the mean over 20k draws ≈ 0.004.
    assert np.mean(factors) == pytest.approx(math.exp(sigma**2 / 2), rel=0.02)
    assert np.median(factors) == pytest.approx(1.0, rel=0.03)


def test_bandwidth_jitter_is_seeded_positive_and_centred() -> None:
    device = DeviceProfile(flops_per_s=1e9, down_bps=8e6, up_bps=8e6, bandwidth_jitter=0.2)
    first = device.latency(1_000_000, 1_000_000, 0.0, np.random.default_rng(5))
    assert first == device.latency(1_000_000, 1_000_000, 0.0, np.random.default_rng(5))
    assert first != device.latency(1_000_000, 1_000_000, 0.0, np.random.default_rng(6))
    rng = np.random.default_rng(7)
    # Download of 1 MB at bandwidth B takes 8e6 / B s, so B = 8e6 / time.
    bandwidths = np.array(
        [8e6 / device.latency(1_000_000, 0, 0.0, rng).download for _ in range(20_000)]
    )
    assert np.mean(bandwidths) == pytest.approx(8e6, rel=0.01)  # truncation negligible at 5 sd
    assert np.std(bandwidths) / 8e6 == pytest.approx(0.2, rel=0.05)
    wild = DeviceProfile(flops_per_s=1e9, down_bps=1e6, up_bps=1e6, bandwidth_jitter=3.0)
    times = [wild.latency(1000, 1000, 0.0, rng) for _ in range(2000)]
    assert all(0 < t.download < math.inf and 0 < t.upload < math.inf for t in times)


def test_up_bandwidth_jitter_overrides_uplink_only() -> None:
    device = DeviceProfile(
        flops_per_s=1e9, down_bps=1e6, up_bps=1e6, bandwidth_jitter=0.0, up_bandwidth_jitter=0.5
    )
    rng = np.random.default_rng(0)
    lats = [device.latency(1000, 1000, 0.0, rng) for _ in range(50)]
    assert {lat.download for lat in lats} == {8000 / 1e6}
    assert len({lat.upload for lat in lats}) == 50


def test_fails_matches_probability() -> None:
    rng = np.random.default_rng(0)
    never = DeviceProfile(flops_per_s=1, down_bps=1, up_bps=1, failure_prob=0.0)
    always = DeviceProfile(flops_per_s=1, down_bps=1, up_bps=1, failure_prob=1.0)
    sometimes = DeviceProfile(flops_per_s=1, down_bps=1, up_bps=1, failure_prob=0.3)
    assert not any(never.fails(rng) for _ in range(1000))
    assert all(always.fails(rng) for _ in range(1000))
    rate = np.mean([sometimes.fails(rng) for _ in range(20_000)])
    assert rate == pytest.approx(0.3, abs=0.015)  # sd ≈ 0.0032


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"flops_per_s": -1.0}, "flops_per_s", "-1.0"),
        ({"down_bps": 0.0}, "down_bps", "0.0"),
        ({"up_bps": math.nan}, "up_bps", "nan"),
        ({"failure_prob": 2}, "failure_prob", "2"),
        ({"compute_jitter": -0.1}, "compute_jitter", "-0.1"),
        ({"bandwidth_jitter": "x"}, "bandwidth_jitter", "'x'"),
    ],
)
def test_device_profile_errors_name_field_and_value(kwargs: dict, field: str, value: str) -> None:
    args = {"flops_per_s": 1e9, "down_bps": 1e6, "up_bps": 1e6, **kwargs}
    with pytest.raises(ValueError, match=rf"DeviceProfile\.{field}.*{value}"):
        DeviceProfile(**args)


def test_latency_rejects_negative_sizes() -> None:
    device = DeviceProfile(flops_per_s=1e9, down_bps=1e6, up_bps=1e6)
    with pytest.raises(ValueError, match=r"work_flops.*-5"):
        device.latency(0, 0, -5, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"kind": "phones"}, "kind", "'phones'"),
        ({"availability": "sometimes"}, "availability", "'sometimes'"),
        ({"flops_per_s": -3}, "flops_per_s", "-3"),
        ({"failure_prob": 2.0}, "failure_prob", "2.0"),
        ({"mean_offline_s": 0}, "mean_offline_s", "0"),
        ({"tier_down_mbps": (1.0, 2.0)}, "tier_down_mbps", r"\(1.0, 2.0\)"),
        ({"tier_fractions": (1, 1, 1, 1, -1)}, r"tier_fractions\[4\]", "-1"),
    ],
)
def test_population_config_errors_name_field_and_value(
    kwargs: dict, field: str, value: str
) -> None:
    with pytest.raises(ValueError, match=rf"PopulationConfig\.{field}.*{value}"):
        PopulationConfig(**kwargs)


def test_population_config_accepts_lists_from_toml() -> None:
    cfg = PopulationConfig(kind="tiers", tier_shares=[2, 1], tier_down_mbps=[10, 5])  # type: ignore[arg-type]
    assert cfg.tier_shares == (2.0, 1.0)
    assert cfg.tier_down_mbps == (10.0, 5.0)


def test_onoff_errors_name_field_and_value() -> None:
    with pytest.raises(ValueError, match=r"mean_on.*-5"):
        OnOff(mean_on=-5, mean_off=1, seed=0)
    with pytest.raises(ValueError, match=r"seed.*-1"):
        OnOff(mean_on=1, mean_off=1, seed=-1)


# ----------------------------------------------------------------------------------------------
# Populations
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", POPULATIONS)
def test_population_is_deterministic(kind: str) -> None:
    cfg = PopulationConfig(kind=kind, availability="onoff")

    def summary(seed: int) -> list[tuple]:
        return [
            (p.flops_per_s, p.down_bps, p.up_bps, p.group, p.availability.next_change(0.0))
            for p in make_population(cfg, 40, seed)
        ]

    assert summary(1) == summary(1)
    assert summary(1) != summary(2)


def test_uniform_population_matches_config() -> None:
    cfg = PopulationConfig(flops_per_s=2e9, down_mbps=10, up_mbps=2, failure_prob=0.1)
    devices = make_population(cfg, 5, seed=0)
    assert {(d.flops_per_s, d.down_bps, d.up_bps, d.failure_prob) for d in devices} == {
        (2e9, 10e6, 2e6, 0.1)
    }
    assert all(isinstance(d.availability, AlwaysOn) for d in devices)


def test_tiers_speed_follows_share_and_counts_follow_fractions() -> None:
    cfg = PopulationConfig(kind="tiers", flops_per_s=1e9, tier_fractions=(0.4, 0.3, 0.1, 0.1, 0.1))
    devices = make_population(cfg, 100, seed=0)
    assert Counter(d.group for d in devices) == {
        "tier-1": 40,
        "tier-2": 30,
        "tier-3": 10,
        "tier-4": 10,
        "tier-5": 10,
    }
    speed = {d.group: d.flops_per_s for d in devices}
    assert speed == pytest.approx(
        {"tier-1": 4e9, "tier-2": 2e9, "tier-3": 1e9, "tier-4": 1e9 / 3, "tier-5": 0.2e9}
    )
    assert [speed[f"tier-{i}"] for i in range(1, 6)] == sorted(speed.values(), reverse=True)
    down = {d.group: d.down_bps for d in devices}
    assert down == {"tier-1": 100e6, "tier-2": 30e6, "tier-3": 30e6, "tier-4": 30e6, "tier-5": 10e6}
    assert all(d.up_bps == d.down_bps for d in devices)
    assert all(d.features["cpu_share"] * 1e9 == pytest.approx(d.flops_per_s) for d in devices)
    # Seeded shuffle, not contiguous blocks: the first 40 nodes are not all tier-1.
    assert len({d.group for d in devices[:40]}) > 1


def test_tiers_default_to_equal_split() -> None:
    devices = make_population(PopulationConfig(kind="tiers"), 50, seed=3)
    assert set(Counter(d.group for d in devices).values()) == {10}
    assert tier_counts((1, 1, 1), 10) == [4, 3, 3]
    assert tier_counts((0.5, 0.25, 0.25), 7) == [3, 2, 2]  # 3.5, 1.75, 1.75


def test_mobile_population_is_heterogeneous_like_the_data() -> None:
    cfg = PopulationConfig(kind="mobile", flops_per_s=1e9)
    devices = make_population(cfg, 2000, seed=0)
    speed = np.array([d.flops_per_s for d in devices])
    # The embedded table (254 phones, RAM > 2 GB) has FP32 p95/p5 = 1145/48 ≈ 24 and its median is
    # the reference speed; a 2000-draw sample lands close to both.
    p5, p50, p95 = np.percentile(speed, [5, 50, 95])
    assert p95 / p5 > 15
    assert p50 == pytest.approx(1e9, rel=0.25)
    # Features relate to the hidden speed, noisily. Over the 254 phones, Spearman(speed, ·) is 0.80
    # for the CPU score, 0.65 for RAM and 0.40 for the year (0.81 / 0.62 / 0.35 in this sample);
    # the thresholds leave ~0.1 of sampling slack. A log-linear fit on the features explains
    # R² ≈ 0.6 of log speed: useful for a profiler, far from a lookup.
    features = {k: np.array([d.features[k] for d in devices]) for k in devices[0].features}
    assert set(features) == {"ram_gb", "year", "android", "cpu_score"}
    assert spearman(features["cpu_score"], speed) > 0.7
    assert spearman(features["ram_gb"], speed) > 0.5
    assert spearman(features["year"], speed) > 0.2
    columns = [np.log(features["cpu_score"]), np.log(features["ram_gb"]), features["year"]]
    design = np.column_stack([np.ones(len(speed)), *columns, features["android"]])
    coef, *_ = np.linalg.lstsq(design, np.log(speed), rcond=None)
    r2 = 1 - np.var(np.log(speed) - design @ coef) / np.var(np.log(speed))
    assert 0.4 < r2 < 0.85


def test_mobile_links_come_from_flash_with_their_sd() -> None:
    devices = make_population(PopulationConfig(kind="mobile"), 300, seed=1)
    links = {(link.down_mean * 8192, link.up_mean * 8192): link for link in FLASH_BANDWIDTHS_KBPS}
    for d in devices:
        link = links[(d.down_bps, d.up_bps)]  # KB/s × 1024 B × 8 bit
        assert d.bandwidth_jitter == link.down_sd / link.down_mean
        assert d.up_bandwidth_jitter == link.up_sd / link.up_mean
    assert len({(d.down_bps, d.up_bps) for d in devices}) == len(FLASH_BANDWIDTHS_KBPS)
    fixed = make_population(PopulationConfig(kind="mobile", bandwidth_jitter=0.0), 20, seed=1)
    assert all(d.bandwidth_jitter == 0.0 and d.up_bandwidth_jitter is None for d in fixed)


def test_mobile_node_does_not_depend_on_population_size() -> None:
    cfg = PopulationConfig(kind="mobile", availability="onoff")
    small, large = make_population(cfg, 10, seed=4), make_population(cfg, 30, seed=4)
    for a, b in zip(small, large, strict=False):
        assert (a.flops_per_s, a.down_bps, a.features) == (b.flops_per_s, b.down_bps, b.features)
        assert a.availability.next_change(0.0) == b.availability.next_change(0.0)


def test_embedded_phone_table() -> None:
    assert len(PHONES) == 254
    assert all(p.ram_gb > 2 for p in PHONES)
    fp32 = [p.fp32_score for p in PHONES]
    assert (min(fp32), float(np.median(fp32)), max(fp32)) == (13.0, 129.5, 1364.0)
    assert len(FLASH_BANDWIDTHS_KBPS) == 19


# ----------------------------------------------------------------------------------------------
# Availability
# ----------------------------------------------------------------------------------------------


def test_always_on() -> None:
    avail = AlwaysOn()
    assert isinstance(avail, Availability)
    assert avail.online(123.0) and avail.next_change(123.0) == math.inf


def test_onoff_is_deterministic_and_query_order_free() -> None:
    a, b = OnOff(100, 50, seed=(7, 1)), OnOff(100, 50, seed=(7, 1))
    times = np.linspace(0, 20_000, 400)
    b.online(50_000.0)  # query far ahead first: the change times must not depend on this
    assert [a.online(t) for t in times] == [b.online(t) for t in times[::-1]][::-1]
    assert [a.next_change(t) for t in times] == [b.next_change(t) for t in times]
    other = OnOff(100, 50, seed=(7, 2))
    assert [a.next_change(t) for t in times] != [other.next_change(t) for t in times]


def test_onoff_long_run_online_fraction() -> None:
    # 3000 on/off cycles: the estimate's sd is ≈ √2·600·3600 / (√3000·4200²) ≈ 0.003.
    avail = OnOff(mean_on=3600, mean_off=600, seed=11)
    assert online_fraction(avail, 3000 * 4200) == pytest.approx(3600 / 4200, abs=0.015)


def test_onoff_starts_stationary() -> None:
    # start_online=None: online at t=0 with probability 6/7, and (memoryless periods) at any t.
    devices = [OnOff(3600, 600, seed=(0, i)) for i in range(4000)]
    for t in (0.0, 5000.0, 50_000.0):
        share = np.mean([d.online(t) for d in devices])
        assert share == pytest.approx(6 / 7, abs=0.025)  # sd ≈ 0.0055
    assert OnOff(1, 1, seed=0, start_online=False).online(0.0) is False
    assert OnOff(1, 1, seed=0, start_online=True).online(-5.0) is True


def test_onoff_next_change_agrees_with_online_on_a_grid() -> None:
    avail = OnOff(mean_on=30, mean_off=10, seed=5)
    t = 0.0
    for _ in range(500):
        change = avail.next_change(t)
        assert change > t
        assert avail.online(math.nextafter(change, -math.inf)) == avail.online(t)
        assert avail.online(change) != avail.online(t)
        t = change


@settings(max_examples=200, deadline=None)
@given(
    mean_on=st.floats(1.0, 1e5),
    mean_off=st.floats(1.0, 1e5),
    seed=st.integers(0, 2**32),
    t=st.floats(-10.0, 1e6),
)
def test_onoff_online_and_next_change_agree(
    mean_on: float, mean_off: float, seed: int, t: float
) -> None:
    avail = OnOff(mean_on, mean_off, seed=seed)
    change = avail.next_change(t)
    assert t < change < math.inf
    state = avail.online(t)
    assert avail.online(change) != state
    assert avail.online(t + (change - t) / 2) == state
    assert avail.online(math.nextafter(change, -math.inf)) == state


# ----------------------------------------------------------------------------------------------
# next_time_online_count
# ----------------------------------------------------------------------------------------------


def test_next_time_online_count_hand_made() -> None:
    a = Intervals(((0, 10), (20, 30)))
    b = Intervals(((5, 25),))
    c = Intervals(((15, 40),))
    avails = [a, b, c]
    assert next_time_online_count(avails, 0.0, 1) == 0.0
    assert next_time_online_count(avails, 0.0, 2) == 5.0
    assert next_time_online_count(avails, 0.0, 3) == 20.0
    assert next_time_online_count(avails, 11.0, 2) == 15.0
    assert next_time_online_count(avails, 31.0, 2) == math.inf  # only c is ever online again
    assert next_time_online_count(avails, 0.0, 4) == math.inf
    assert next_time_online_count(avails, 7.0, 0) == 7.0
    assert next_time_online_count(avails, 0.0, 3, horizon=19.0) == math.inf


def test_next_time_online_count_applies_simultaneous_changes_together() -> None:
    # At t=10, g goes off and h comes on: the count stays 2 (never 3) until j joins at 12.
    g, h = Intervals(((0, 10),)), Intervals(((10, 30),))
    i, j = Intervals(((5, 30),)), Intervals(((12, 30),))
    assert next_time_online_count([g, h, i, j], 0.0, 3) == 12.0
    assert next_time_online_count([AlwaysOn(), g], 3.0, 2) == 3.0


def test_next_time_online_count_matches_brute_force_on_onoff() -> None:
    avails = [OnOff(50, 100, seed=(2, i)) for i in range(8)]
    # Brute force: the count only changes at change times, so check t and every change after it.
    events = sorted({a.next_change(0.0) for a in avails} | _all_changes(avails, 2000.0))
    for k in range(1, 9):
        expected = next(
            (e for e in [0.0, *events] if sum(a.online(e) for a in avails) >= k), math.inf
        )
        got = next_time_online_count(avails, 0.0, k, horizon=2000.0)
        assert got == expected or (expected > 2000.0 and got == math.inf)


def _all_changes(avails: list[OnOff], horizon: float) -> set[float]:
    """Every change time of ``avails`` up to ``horizon``."""
    out: set[float] = set()
    for a in avails:
        t = a.next_change(0.0)
        while t <= horizon:
            out.add(t)
            t = a.next_change(t)
    return out


# ----------------------------------------------------------------------------------------------
# Packaged device tables (fl/sim/data) and population fingerprints
# ----------------------------------------------------------------------------------------------


def test_device_tables_are_package_data_with_their_notice() -> None:
    import tomllib
    from importlib import resources
    from pathlib import Path

    data = resources.files("fl.sim").joinpath("data")
    for name in ("phones.json", "flash_links.json"):
        text = data.joinpath(name).read_text(encoding="utf-8")
        assert "BSD-2-Clause" in text and "PKU-Chengxu/FLASH" in text
    assert len(PHONES) == 254 and len(FLASH_BANDWIDTHS_KBPS) == 19
    assert PHONES[0].soc == "Kirin 990 5G" and PHONES[-1].soc == "Intel Atom Z3580"
    assert FLASH_BANDWIDTHS_KBPS[0] == (7491.4, 3369.3, 4935.2, 2767.3)
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "data/*.json" in pyproject["tool"]["setuptools"]["package-data"]["fl.sim"]


@pytest.mark.parametrize(
    ("kind", "digest"),
    [
        ("uniform", "d68b8c265a4fd87d"),
        ("tiers", "c15f48be2e744968"),
        ("mobile", "fa5aaa4cdd2e9a4a"),
    ],
)
def test_populations_are_bit_identical_to_the_embedded_tables(kind: str, digest: str) -> None:
    """The digests were taken from fl.sim.devices before its tables moved to fl/sim/data."""
    import hashlib

    devices = make_population(PopulationConfig(kind=kind), 40, 3)
    text = repr(
        [
            (
                d.flops_per_s,
                d.down_bps,
                d.up_bps,
                d.bandwidth_jitter,
                d.up_bandwidth_jitter,
                d.group,
                sorted(d.features.items()),
            )
            for d in devices
        ]
    )
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == digest


def test_population_errors_are_config_errors_naming_field_and_value() -> None:
    from fl.schema import ConfigError

    with pytest.raises(ConfigError) as err:
        PopulationConfig(kind="phones")
    assert (err.value.key, err.value.value) == ("PopulationConfig.kind", "phones")
