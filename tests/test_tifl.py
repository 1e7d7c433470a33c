"""TiFL: tiering, credits, probabilities, profiling on the virtual grid, the cost model."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl import client
from fl.experiment import run_experiment
from fl.experiment.config import ExperimentConfig, load_dict
from fl.models import train_flops_per_example
from fl.profiling.latency import LatencyProfile
from fl.schema import ConfigError
from fl.sim.devices import make_population
from fl.strategies import TiFL
from fl.strategies.tiers import (
    change_probs,
    credits_from_fractions,
    dirichlet_credits,
    equal_credits,
    restrict,
    split_tiers,
    static_probabilities,
)


def test_quantile_tiering_splits_sorted_latencies_into_equal_counts() -> None:
    lat = {10 + i: float(v) for i, v in enumerate([5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 0.5])}
    tiers = split_tiers(lat, 3, "quantile")
    assert [len(t) for t in tiers] == [4, 4, 3]
    flat = [n for t in tiers for n in t]
    assert sorted(flat) == sorted(lat)
    assert [lat[n] for n in flat] == sorted(lat.values())  # fastest tier first, in order
    assert max(lat[n] for n in tiers[0]) < min(lat[n] for n in tiers[1])


def test_histogram_tiering_uses_equal_width_bins() -> None:
    lat = {1: 0.0, 2: 1.0, 3: 2.0, 4: 9.0, 5: 10.0}
    tiers = split_tiers(lat, 5, "histogram")  # bins of width 2: [0,2) [2,4) ... [8,10]
    assert tiers == [[1, 2], [3], [], [], [4, 5]]


def test_latency_profile_charges_timeouts_and_marks_dropouts() -> None:
    prof = LatencyProfile(t_max=10.0)
    for _ in range(3):
        prof.record_round([1, 2, 3], {1: 2.0, 2: 50.0})  # 2 is capped, 3 never answers
    assert prof.mean(1) == 2.0 and prof.mean(2) == 10.0
    assert prof.dropouts() == {3}
    assert set(prof.means()) == {1, 2}


@settings(max_examples=200, deadline=None)
@given(
    acc=st.lists(st.floats(0, 1), min_size=1, max_size=8),
    credit_bits=st.lists(st.integers(0, 3), min_size=8, max_size=8),
    formula=st.sampled_from(["paper", "fltk"]),
)
def test_change_probs_sum_to_one_zero_without_credits_lowest_accuracy_first(
    acc: list[float], credit_bits: list[int], formula: str
) -> None:
    credits = credit_bits[: len(acc)]
    p = change_probs(acc, credits, formula)
    eligible = [t for t in range(len(acc)) if credits[t] > 0]
    assert np.all(p >= 0)
    assert all(p[t] == 0 for t in range(len(acc)) if credits[t] == 0)
    if not eligible:
        assert p.sum() == 0
        return
    assert p.sum() == pytest.approx(1.0)
    lowest = min(eligible, key=lambda t: (acc[t], t))
    assert p[lowest] == p.max()
    if formula == "fltk":
        assert all(p[t] > 0 for t in eligible)


def test_change_probs_exact_values() -> None:
    acc = [0.9, 0.5, 0.7, 0.6]
    np.testing.assert_allclose(change_probs(acc, [1, 1, 1, 1], "paper"), [0, 3 / 6, 1 / 6, 2 / 6])
    np.testing.assert_allclose(
        change_probs(acc, [1, 1, 1, 1], "fltk"), [1 / 10, 4 / 10, 2 / 10, 3 / 10]
    )
    np.testing.assert_allclose(change_probs(acc, [1, 0, 1, 1], "paper"), [0, 0, 1 / 3, 2 / 3])


def test_credits() -> None:
    assert equal_credits(100, 3) == [34, 34, 34]
    assert credits_from_fractions([0.4, 0.25, 0.15, 0.12, 0.08], 100) == [40, 25, 15, 12, 8]
    assert sum(credits_from_fractions([1, 1, 1], 100)) == 100
    c = dirichlet_credits(200, 5, 0.9, np.random.default_rng(0))
    assert sum(c) == 200 and c == sorted(c, reverse=True) and c[0] > 2 * c[-1]
    flat = dirichlet_credits(200, 5, 0.0, np.random.default_rng(0))
    assert max(flat) - min(flat) <= 2


def test_static_policies_and_restrict() -> None:
    np.testing.assert_allclose(static_probabilities("fast", 4), [1, 0, 0, 0])
    np.testing.assert_allclose(static_probabilities("slow", 4), [0, 0, 0, 1])
    np.testing.assert_allclose(static_probabilities("random", 5), [0.7, 0.1, 0.1, 0.05, 0.05])
    np.testing.assert_allclose(static_probabilities("uniform", 2, [3, 1]), [0.75, 0.25])
    with pytest.raises(ValueError, match="probabilities"):
        static_probabilities("uniform", 3, [1, 1])
    np.testing.assert_allclose(restrict(np.array([1.0, 0, 0]), [False, True, True]), [0, 0.5, 0.5])
    assert restrict(np.array([0.5, 0.5]), [False, False]) is None


def tifl_config(policy: str, rounds: int = 20, **options: object) -> ExperimentConfig:
    return load_dict(
        {
            "name": f"tifl-{policy}",
            "num_nodes": 25,
            "rounds": rounds,
            "round_timeout_s": 1e6,
            "data": {"name": "digits", "partition": "iid"},
            "model": {"name": "logreg"},
            "devices": {"kind": "tiers", "flops_per_s": 1e5},
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.1},
            "strategy": {
                "name": "tifl",
                "clients_per_round": 3,
                "options": {"policy": policy, "t_max": 1e4, **options},
            },
        }
    )


def expected_task_time(cfg: ExperimentConfig, node_index: int, nbytes: int) -> float:
    """Independent restatement of the cost model for one training task (no jitter)."""
    ws = client.workspace(cfg.to_run_config())
    dev = make_population(cfg.devices, cfg.num_nodes, cfg.seed)[node_index]
    n_train = len(ws.data.node_train[node_index])
    flops = n_train * cfg.train.epochs * train_flops_per_example(ws.model, ws.data.input_shape)
    return nbytes * 8 / dev.down_bps + flops / dev.flops_per_s + nbytes * 8 / dev.up_bps


def test_tiers_match_device_groups_and_dropouts_are_excluded() -> None:
    cfg = tifl_config("fast", rounds=1)
    from fl.experiment import build_grid, seed_everything
    from fl.sim.devices import DeviceProfile

    seed_everything(0)
    devices = list(make_population(cfg.devices, cfg.num_nodes, cfg.seed))
    dead = DeviceProfile(flops_per_s=1e9, down_bps=1e9, up_bps=1e9, failure_prob=1.0)
    devices[7] = dead
    grid = build_grid(cfg, devices)
    strategy = TiFL(policy="fast", clients_per_round=3, t_max=1e4, num_tiers=5, seed=0)
    from flwr.app import ArrayRecord, ConfigRecord

    ws = client.workspace(cfg.to_run_config())
    arrays = ArrayRecord(ws.model.state_dict())
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord({"lr": 0.1}), grid))
    tiered = {n for t in strategy.tiers for n in t}
    assert grid.node_id(7) not in tiered and len(tiered) == 24
    assert strategy.profile.dropouts() == {grid.node_id(7)}
    # the fastest tier consists of the fastest devices
    speeds = {grid.node_id(i): d.flops_per_s for i, d in enumerate(devices) if i != 7}
    fastest = {
        n for n, _ in sorted(speeds.items(), key=lambda kv: -kv[1])[: len(strategy.tiers[0])]
    }
    assert set(strategy.tiers[0]) == fastest
    assert all(m.metadata.dst_node_id in strategy.tiers[0] for m in msgs)


def test_total_time_is_sum_of_slowest_selected_per_round() -> None:
    cfg = tifl_config("uniform", rounds=8)
    result = run_experiment(cfg)
    grid = result.grid
    nbytes = next(iter(grid.outcomes.values())).down_bytes
    total = 0.0
    for row in result.rows[1:]:
        sel = [int(x) for x in row["selected"].split()]
        slowest = max(expected_task_time(cfg, grid.node_index(n), nbytes) for n in sel)
        assert row["train_duration"] == pytest.approx(slowest, rel=1e-9)
        total += slowest
    profiling = result.rows[1]["profiling_time"]
    assert profiling > 0  # 3 profiling rounds over all 25 nodes before round 1
    assert len(grid.outcomes) == 3 * 25 + 8 * 3
    assert result.rows[-1]["virtual_time"] == pytest.approx(profiling + total, rel=1e-9)


def test_selected_nodes_come_from_one_tier() -> None:
    cfg = tifl_config("random", rounds=10)
    result = run_experiment(cfg)
    devices = result.grid.devices
    for row in result.rows[1:]:
        groups = {devices[result.grid.node_index(int(n))].group for n in row["selected"].split()}
        assert len(groups) == 1  # no jitter: latency tiers coincide with device groups


def test_equal_credits_use_each_tier_floor_or_ceil_times() -> None:
    rounds = 23
    cfg = tifl_config("adaptive", rounds=rounds, interval=3)
    result = run_experiment(cfg)
    use = Counter(r["tier"] for r in result.rows[1:])
    assert sum(use.values()) == rounds
    assert all(v in (rounds // 5, -(-rounds // 5)) for v in use.values()), use
    assert all(k in range(5) for k in use)
    probs = [np.array(r["tier_probs"].split(), dtype=float) for r in result.rows[1:]]
    assert all(p.sum() == pytest.approx(1.0, abs=1e-3) for p in probs)
    assert "tier_accuracy" in result.rows[-1]


def test_adaptive_update_gives_lowest_accuracy_tier_highest_probability() -> None:
    strategy = TiFL(policy="adaptive", num_tiers=4, num_rounds=40, interval=2, seed=0)
    strategy.current_tier = 1
    strategy.accuracy = np.array([0.8, 0.5, 0.3, 0.9])
    strategy.accuracy_prev = np.array([0.8, 0.6, 0.3, 0.9])  # tier 1 got worse
    strategy.credits = np.array([3.0, 3.0, 0.0, 3.0])  # tier 2 has no credits left
    strategy._maybe_update_probs(server_round=5)  # 4 rounds done, interval 2
    assert strategy.probs[2] == 0
    assert int(np.argmax(strategy.probs)) == 1
    assert strategy.probs.sum() == pytest.approx(1.0)
    before = strategy.probs.copy()
    strategy.accuracy = np.array([0.8, 0.7, 0.3, 0.9])  # tier 1 improved: no update
    strategy._maybe_update_probs(server_round=7)
    np.testing.assert_array_equal(strategy.probs, before)


def test_tifl_with_plugged_in_aggregator_and_config_errors() -> None:
    cfg = tifl_config("uniform", rounds=3, aggregator="fedmedian")
    result = run_experiment(cfg)
    assert result.rows[-1]["central_accuracy"] > result.rows[0]["central_accuracy"]
    with pytest.raises(ConfigError, match="aggregator"):
        tifl_config("uniform", aggregator="nope")
    with pytest.raises(ConfigError, match="aggregator"):
        tifl_config("uniform", aggregator="fedadam")  # needs its own configure_train state
    with pytest.raises(ConfigError, match="policy"):
        tifl_config("fastest")


@pytest.mark.slow
def test_quick_experiment_meets_the_papers_targets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """simulations/tifl --quick on IID and non-IID MNIST: the time ratios and accuracy gaps."""
    from conftest import load_simulation

    results = load_simulation("tifl").main(
        ["--quick", "--workers", "1", "--settings", "iid", "noniid", "--out", str(tmp_path)]
    )
    assert len(results) == 7
    failed = [(claim, nums) for claim, ok, nums in results if not ok]
    assert not failed, failed
    assert (tmp_path / "iid" / "accuracy_vs_time.png").is_file()


def test_reprofiling_folds_in_training_latencies() -> None:
    from fl.experiment import build_experiment_strategy

    cfg = tifl_config("uniform", rounds=6, reprofile_every=2)
    strategy = build_experiment_strategy(cfg)
    assert isinstance(strategy, TiFL)
    result = run_experiment(cfg, strategy=strategy)
    trained = {int(n) for r in result.rows[1:] for n in r["selected"].split()}
    assert all(strategy.profile.count[n] > 3 for n in trained)  # 3 profiling + training rounds
    untouched = set(strategy.profile.count) - trained
    assert all(strategy.profile.count[n] == 3 for n in untouched)
    groups = {o.group_id for o in result.grid.outcomes.values()}
    assert {"profiling-1", "profiling-2", "profiling-3"} <= groups


def test_tifl_selection_with_bgmd_aggregation() -> None:
    cfg = tifl_config("uniform", rounds=4, aggregator="bgmd", aggregator_options={"beta": 0.5})
    result = run_experiment(cfg)
    assert all(r["aggregated"] for r in result.rows[1:])
    assert result.rows[-1]["central_accuracy"] > result.rows[0]["central_accuracy"] + 0.1


def _run_with_noisy_tier(policy: str, seed: int) -> tuple[list[dict], int, TiFL]:
    """25 nodes, 5 device groups; the nodes of one group hold randomly relabelled data
    (train and local test split), so their tier's accuracy lags whatever the model."""
    from fl.client.workspace import clear_workspaces

    cfg = load_dict(
        {
            "name": "tifl-noisy-tier",
            "seed": seed,
            "num_nodes": 25,
            "rounds": 30,
            "round_timeout_s": 1e6,
            "executor": "sequential",  # the relabelled data lives in this process's workspace
            "data": {"name": "digits", "partition": "iid"},
            "model": {"name": "logreg"},
            "devices": {"kind": "tiers", "flops_per_s": 1e5},
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.1},
            "evaluation": {"free": True},
            "strategy": {"name": "tifl", "clients_per_round": 3},
        }
    )
    clear_workspaces()
    try:
        ws = client.workspace(cfg.to_run_config())
        devices = make_population(cfg.devices, cfg.num_nodes, cfg.seed)
        group = min(d.group for d in devices)
        noisy = [i for i, d in enumerate(devices) if d.group == group]
        # Relabel a private copy: the source's tensors are shared with the process's cached
        # dataset pool, which other tests (in this worker) load again.
        ws.data.train = dataclasses.replace(ws.data.train, y=ws.data.train.y.clone())
        labels = ws.data.train.labels
        rng = np.random.default_rng(seed)
        for i in noisy:
            idx = np.concatenate([ws.data.node_train[i], ws.data.node_test[i]])
            labels[idx] = rng.integers(0, ws.data.num_classes, len(idx))
        # Unlimited credits and an update every round, without the paper's "no improvement"
        # gate: the test isolates the ranking (the lowest-accuracy tier gets 4/10 of the
        # draws for 5 tiers), which the gate would make depend on accuracy noise.
        strategy = TiFL(
            policy=policy,
            clients_per_round=3,
            num_tiers=5,
            t_max=1e4,
            interval=1,
            require_no_improvement=False,
            seed=seed,
        )
        result = run_experiment(cfg, strategy=strategy)
    finally:
        clear_workspaces()  # no other test may see the relabelled data
    tier_of = strategy.node_tier()
    (lagging,) = {tier_of[result.grid.node_id(i)] for i in noisy}  # one tier: no jitter
    return result.rows[1:], lagging, strategy


def test_adaptive_policy_selects_the_lagging_tier_more_often_end_to_end() -> None:
    chosen = {"uniform": 0, "adaptive": 0}
    top = 0
    for seed in (0, 1):
        for policy in chosen:
            rows, lagging, _ = _run_with_noisy_tier(policy, seed)
            chosen[policy] += sum(r["tier"] == lagging for r in rows)
            if policy == "adaptive":
                acc = np.array(rows[-1]["tier_accuracy"].split(), dtype=float)
                assert int(np.argmin(acc)) == lagging  # its accuracy does lag
                probs = [np.array(r["tier_probs"].split(), dtype=float) for r in rows[1:]]
                top += sum(int(np.argmax(p)) == lagging for p in probs)
    # Observed (seeds 0 and 1, 2 × 30 rounds): uniform chose the lagging tier 9 times,
    # adaptive 21, and the lagging tier had the highest probability in 57 of the 58 rounds
    # after the first update. Uniform draws it ~Binomial(60, 1/5): mean 12, sd 3.1; adaptive,
    # ranking it lowest, gives it 4/10: mean 24, sd 3.8. The bar, 18, is uniform's mean + 2 sd
    # (and adaptive's mean − 1.6 sd); a policy that did not favour the lagging tier (or ranked
    # tiers the wrong way round) would draw it like uniform and fail, as would `top`.
    assert chosen["adaptive"] >= 18, chosen
    assert chosen["adaptive"] >= chosen["uniform"] + 6, chosen
    assert top >= 52, top  # ≥ 90 % of the 58 rows
