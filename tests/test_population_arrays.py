"""Device populations as arrays (fl.sim.fleet.DevicePopulation) against the list of profiles
they replace: the digests below were taken from the list-building make_population before the
change (the code before issue 16 part 4), for uniform, tiers and mobile populations with
stragglers, on/off availability, failures and jitters."""

from __future__ import annotations

import hashlib
import math
import pickle

import numpy as np
import pytest
from flwr.app import Context, Message

from fl.sim.availability import AlwaysOn, OnOff, PopulationAvailability, next_time_online_count
from fl.sim.devices import DevicePopulation, DeviceProfile, PopulationConfig, make_population
from fl.sim.grid import FIRST_NODE_ID, VirtualGrid


def _digest(cfg: PopulationConfig, n: int, seed: int) -> str:
    out = []
    for d in make_population(cfg, n, seed):
        a = d.availability
        av = (
            (type(a).__name__, a.start_online, a.next_change(0.0), a.next_change(5000.0))
            if isinstance(a, OnOff)
            else type(a).__name__
        )
        out.append(
            (
                d.flops_per_s,
                d.down_bps,
                d.up_bps,
                d.failure_prob,
                d.compute_jitter,
                d.bandwidth_jitter,
                d.up_bandwidth_jitter,
                d.group,
                list(d.features.items()),
                av,
            )
        )
    return hashlib.sha256(repr(out).encode()).hexdigest()[:16]


_STRAGGLERS = {"stragglers": (0, -1, 3, -1)}
_NOISY = {
    "availability": "onoff",
    "failure_prob": 0.1,
    "compute_jitter": 0.3,
    "bandwidth_jitter": 0.2,
}
_TIERS = {"tier_fractions": (1, 2, 3, 4, 5), "tier_up_mbps": (1, 2, 3, 4, 5)}
_SLOW = {"flops_per_s": 3e7}

# (kind, options, nodes, seed) -> digest, computed with the code before the change.
BEFORE = [
    ("uniform", {}, 37, 3, "7f61789ba95fabb5"),
    ("uniform", _STRAGGLERS, 4, 0, "ae32976d19e9f2ac"),
    ("uniform", _STRAGGLERS, 500, 11, "ac2e79a255da59f7"),
    ("uniform", _NOISY, 37, 3, "a29668c3870cd786"),
    ("uniform", _SLOW, 500, 11, "0a524ac004d3358e"),
    ("tiers", {}, 4, 0, "f4a5b3e2966fd57d"),
    ("tiers", {}, 500, 11, "4aa24f4ff6cb3539"),
    ("tiers", _STRAGGLERS, 37, 3, "20afbcfc95a979e5"),
    ("tiers", _NOISY, 500, 11, "04377025a0ed9a47"),
    ("tiers", _TIERS, 37, 3, "eca51bc225335115"),
    ("mobile", {}, 37, 3, "46345fa181e2df78"),
    ("mobile", {}, 500, 11, "acbb62bbd438a7e9"),
    ("mobile", _STRAGGLERS, 4, 0, "f25d6a1fc14d9280"),
    ("mobile", _STRAGGLERS, 500, 11, "5648c151d57afed1"),
    ("mobile", _NOISY, 37, 3, "ff152435f81b8390"),
    ("mobile", _SLOW, 37, 3, "bca19481f4f3e919"),
]


@pytest.mark.parametrize(("kind", "options", "n", "seed", "digest"), BEFORE)
def test_profiles_are_bit_identical_to_the_list_population(
    kind: str, options: dict, n: int, seed: int, digest: str
) -> None:
    assert _digest(PopulationConfig(kind=kind, **options), n, seed) == digest


@pytest.mark.parametrize("kind", ["uniform", "tiers", "mobile"])
def test_a_node_is_built_once_and_only_when_asked(kind: str) -> None:
    pop = make_population(PopulationConfig(kind=kind, availability="onoff"), 50, 1)
    assert isinstance(pop, DevicePopulation) and len(pop) == 50 and not pop._built
    d = pop[7]
    assert isinstance(d, DeviceProfile) and pop[7] is d and pop[-43] is d
    assert list(pop._built) == [7]
    assert pop.availability.node(7) is d.availability  # one availability object per device
    assert pop.feature_dict(7) == d.features and pop.group(7) == d.group
    assert pop[2:5] == [pop[2], pop[3], pop[4]]
    with pytest.raises(IndexError):
        pop[50]


def test_the_population_equals_its_list_and_a_wrapped_list() -> None:
    cfg = PopulationConfig(kind="tiers", stragglers=(1,))
    pop = make_population(cfg, 30, 2)
    as_list = list(pop)
    assert pop == as_list and as_list == pop and pop == make_population(cfg, 30, 2)
    wrapped = DevicePopulation.from_profiles(as_list)
    assert wrapped == pop and all(wrapped[i] is as_list[i] for i in range(30))
    assert np.array_equal(wrapped.flops_per_s, pop.flops_per_s)
    assert wrapped.feature_dict(4) == pop.feature_dict(4)


def _avails(n: int, seed: int) -> list:
    return [OnOff(40.0, 25.0, seed=(seed, i)) for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_availability_matches_each_device(seed: int) -> None:
    n = 60
    pop = make_population(
        PopulationConfig(availability="onoff", mean_online_s=40.0, mean_offline_s=25.0), n, seed
    )
    ref = _avails(n, seed)
    for t in [0.0, 3.5, 17.0, 200.0, 90.0, 90.0, 1000.0, 0.0]:  # not monotone on purpose
        mask = pop.online_mask(t)
        assert mask.tolist() == [a.online(t) for a in ref]
        assert pop.online_indices(t).tolist() == [i for i in range(n) if ref[i].online(t)]
        for k in [0, 1, 10, 30, 45, 61]:
            assert pop.next_time_online_count(t, k) == next_time_online_count(ref, t, k)
    for k, horizon in [(52, 3000.0), (58, 500.0), (60, 50.0)]:  # rarely or never reached
        assert pop.next_time_online_count(5.0, k, horizon=horizon) == next_time_online_count(
            ref, 5.0, k, horizon=horizon
        )


def test_wrapped_lists_answer_as_their_devices() -> None:
    avails = [AlwaysOn(), OnOff(10.0, 10.0, seed=3), OnOff(5.0, 50.0, seed=4)]
    pa = PopulationAvailability.of(avails)
    assert not pa.always_on and pa.node(1) is avails[1]
    for t in [0.0, 7.0, 33.0]:
        assert pa.online_mask(t).tolist() == [a.online(t) for a in avails]
        for k in range(5):
            assert pa.next_time_online_count(t, k) == next_time_online_count(avails, t, k)
    assert PopulationAvailability.of([AlwaysOn()] * 3).always_on
    with pytest.raises(ValueError):
        pa.online_mask(math.nan)


def test_populations_pickle() -> None:
    pop = make_population(PopulationConfig(kind="mobile", availability="onoff"), 20, 5)
    pop[3]
    pop.online_mask(100.0)
    again = pickle.loads(pickle.dumps(pop))
    assert repr(list(again)) == repr(list(pop))  # OnOff compares by identity: compare reprs
    assert again.online_mask(300.0).tolist() == pop.online_mask(300.0).tolist()
    wrapped = pickle.loads(pickle.dumps(DevicePopulation.from_profiles(list(pop))))
    assert wrapped.online_mask(300.0).tolist() == pop.online_mask(300.0).tolist()


def _app(msg: Message, ctx: Context) -> Message:  # pragma: no cover - never pushed
    raise AssertionError


def test_grid_uses_the_arrays_and_accepts_lists() -> None:
    cfg = PopulationConfig(availability="onoff", mean_online_s=30.0, mean_offline_s=30.0)
    pop = make_population(cfg, 40, 0)
    grid = VirtualGrid(_app, pop)
    listed = VirtualGrid(_app, [make_population(cfg, 40, 0)[i] for i in range(40)])
    ref = [OnOff(30.0, 30.0, seed=(0, i)) for i in range(40)]
    for g in (grid, listed):
        assert g.num_nodes == 40 and g.all_node_ids() == list(range(1001, 1041))
        assert g.get_node_ids() == [FIRST_NODE_ID + i for i in range(40) if ref[i].online(0.0)]
        assert g.wait_for_nodes(27)
        assert g.now == next_time_online_count(ref, 0.0, 27) > 0
        assert len(g.get_node_ids()) >= 27
        assert not g.wait_for_nodes(41)
        assert isinstance(g.devices[5], DeviceProfile)
    assert list(pop._built) == [5]  # only the node asked for was built
    ctx = grid.context(FIRST_NODE_ID + 2)
    assert ctx.node_config["partition-id"] == 2


def test_a_million_always_on_nodes_are_arrays() -> None:
    pop = make_population(PopulationConfig(), 1_000_000, 0)
    grid = VirtualGrid(_app, pop)
    ids = grid.get_node_ids()
    assert len(ids) == 1_000_000 and ids[0] == FIRST_NODE_ID and ids[-1] == FIRST_NODE_ID + 999_999
    ids.clear()  # a copy: the grid's answer is not affected
    assert len(grid.get_node_ids()) == 1_000_000
    assert grid.wait_for_nodes(100) and grid.now == 0.0
    assert pop.flops_per_s.strides == (0,)  # one value broadcast: no per-node memory
    assert grid.devices[999_999] == make_population(PopulationConfig(), 1, 0)[0]
    assert list(pop._built) == [999_999]
