"""Asynchronous strategies: staleness formulas, the push/pull loop, equivalence with FedAvg."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fl import client
from fl.experiment import build_grid, run_experiment, seed_everything, train_config_record
from fl.experiment.config import ExperimentConfig, load_dict
from fl.loops.asynchronous import AsyncSettings, run_async
from fl.loops.synchronous import LoopSettings, run_rounds
from fl.schema import ConfigError
from fl.sim.devices import DeviceProfile
from fl.sim.grid import VirtualGrid
from fl.strategies import AdaSGD, AsyncSGD, DynSGD, FedAsync, FedBuff
from fl.strategies.adasgd import percentile_higher
from fl.strategies.staleness import (
    adasgd_beta,
    bhattacharyya,
    dynsgd_weight,
    exp_dampening,
    fedasync_weight,
    fedbuff_weight,
    similarity_boost,
)

# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("tau", [0, 1, 2, 5, 17, 100])
def test_dynsgd_is_inverse_staleness(tau: int) -> None:
    assert dynsgd_weight(tau) == pytest.approx(1.0 / (tau + 1))


@pytest.mark.parametrize("thres", [1, 2, 4, 12, 50])
def test_adasgd_dampening_meets_dynsgd_at_the_threshold(thres: int) -> None:
    beta = adasgd_beta(thres)
    assert exp_dampening(thres, beta) == pytest.approx(1.0 / (thres + 1), rel=1e-12)
    # gentler than DynSGD below the threshold, harsher above it
    assert exp_dampening(thres / 2, beta) > dynsgd_weight(thres / 2)
    assert exp_dampening(2 * thres, beta) < dynsgd_weight(2 * thres)


def test_bhattacharyya_identical_is_one_disjoint_is_zero() -> None:
    p = [3, 1, 0, 6]
    assert bhattacharyya(p, p) == pytest.approx(1.0)
    assert bhattacharyya(p, [6, 2, 0, 12]) == pytest.approx(1.0)  # same distribution
    assert bhattacharyya([1, 0, 0], [0, 4, 5]) == 0.0
    assert 0 < bhattacharyya([1, 1, 0], [0, 1, 1]) < 1
    with pytest.raises(ValueError, match="differ in length"):
        bhattacharyya([1, 2], [1, 2, 3])


def test_similarity_boost_is_capped() -> None:
    assert similarity_boost(0.0) == pytest.approx(10.0)
    assert similarity_boost(0.01, floor=0.1) == pytest.approx(10.0)
    assert similarity_boost(0.5) == pytest.approx(2.0)
    assert similarity_boost(1.0) == 1.0
    assert similarity_boost(0.0, floor=0.25) == pytest.approx(4.0)


def test_fedasync_and_fedbuff_weights() -> None:
    assert fedasync_weight(3, "constant") == 1.0
    assert fedasync_weight(3, "polynomial", a=0.5) == pytest.approx(0.5)
    assert fedasync_weight(4, "hinge", a=10, b=4) == 1.0
    assert fedasync_weight(6, "hinge", a=10, b=4) == pytest.approx(1 / 21)
    assert fedbuff_weight(3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown"):
        fedasync_weight(1, "cubic")
    with pytest.raises(ValueError, match="≥ 0"):
        dynsgd_weight(-1)


def test_percentile_is_an_observed_value() -> None:
    counts = {0: 1, 1: 1, 2: 1, 3: 1, 9: 1}
    sample = np.repeat(list(counts), list(counts.values()))
    for q in (0, 50, 80, 95, 100):
        assert percentile_higher(counts, q) == np.percentile(sample, q, method="higher")


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        DynSGD(concurrency=0)
    with pytest.raises(ValueError, match="boost_floor"):
        AdaSGD(boost_floor=0)
    with pytest.raises(ValueError, match="mixing"):
        FedAsync(mixing=1.5)
    with pytest.raises(ValueError, match="weighting"):
        FedBuff(weighting="median")


# ------------------------------------------------------------------- a toy grid for units


def _echo_app(shift: float, labels: list[int] | None = None):  # type: ignore[no-untyped-def]
    """A ClientApp that returns the sent model + `shift` and fixed label counts."""

    def app(msg: Message, context: object) -> Message:
        rec = next(iter(msg.content.array_records.values()))
        w = rec["w"].numpy() + shift
        metrics = MetricRecord({"num-examples": 10, "work-flops": 1e6})
        if labels is not None:
            metrics["label-counts"] = labels
        return Message(
            RecordDict({"arrays": ArrayRecord({"w": Array(w)}), "metrics": metrics}),
            reply_to=msg,
        )

    return app


def _toy_grid(speeds: list[float], app=None) -> VirtualGrid:  # type: ignore[no-untyped-def]
    devices = [DeviceProfile(flops_per_s=s, down_bps=1e12, up_bps=1e12) for s in speeds]
    return VirtualGrid(app or _echo_app(1.0), devices, seed=0)


def _w0() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})


def test_staleness_counts_model_versions_not_seconds() -> None:
    # One fast node (1 s per task) and one 10.5x slower: while the slow node computes, the fast
    # one makes 10 updates, so the slow node's staleness is 10 whatever the time scale.
    for scale in (1.0, 1000.0):
        grid = _toy_grid([1e6 * scale, 1e6 / 10.5 * scale])
        strat = DynSGD(concurrency=2, seed=0)
        res = run_async(strat, grid, _w0(), AsyncSettings(max_updates=22))
        slow = [r for r in res.rows if r["nodes"] == "1002"]
        assert slow, "the slow node contributed"
        assert [r["staleness"] for r in slow] == [10.0, 10.0]
        # the fast node's task in flight while the slow update landed is one version stale
        assert [r["staleness"] for r in res.rows if r["nodes"] == "1001"].count(1.0) == 1


def test_async_sgd_applies_every_delta_and_dynsgd_dampens() -> None:
    grid = _toy_grid([1e6, 1e6 / 10.5])
    res = run_async(AsyncSGD(concurrency=2), grid, _w0(), AsyncSettings(max_updates=22))
    assert res.arrays["w"].numpy() == pytest.approx(np.full(3, 22.0))  # each update adds +1
    grid = _toy_grid([1e6, 1e6 / 10.5])
    res = run_async(DynSGD(concurrency=2), grid, _w0(), AsyncSettings(max_updates=22))
    # 19 fresh updates (+1), one fast at τ = 1 (+1/2) and two slow ones at τ = 10 (+1/11)
    assert res.arrays["w"].numpy() == pytest.approx(np.full(3, 19 + 1 / 2 + 2 / 11), rel=1e-6)


def test_fedasync_mixes_against_the_current_model() -> None:
    grid = _toy_grid([1e6])
    strat = FedAsync(concurrency=1, mixing=0.5, staleness_function="constant")
    res = run_async(strat, grid, _w0(), AsyncSettings(max_updates=3))
    # w ← w + 0.5 (w + 1 − w): +0.5 per update
    assert res.arrays["w"].numpy() == pytest.approx(np.full(3, 1.5))


def test_fedbuff_waits_for_its_buffer() -> None:
    grid = _toy_grid([1e6] * 4)
    strat = FedBuff(concurrency=4, buffer_size=4, server_lr=0.5)
    res = run_async(strat, grid, _w0(), AsyncSettings(max_updates=2))
    assert [r["window"] for r in res.rows] == [4, 4]
    assert res.arrays["w"].numpy() == pytest.approx(np.full(3, 1.0))  # 2 × 0.5 × mean(+1)
    assert sum(1 for o in grid.outcomes.values() if o.status == "replied") == 8


def test_nan_and_malformed_replies_are_rejected_and_counted() -> None:
    def bad_app(msg: Message, context: object) -> Message:
        rec = next(iter(msg.content.array_records.values()))
        w = rec["w"].numpy() + np.nan
        metrics = MetricRecord({"num-examples": 10, "work-flops": 1e6})
        return Message(
            RecordDict({"arrays": ArrayRecord({"w": Array(w)}), "metrics": metrics}),
            reply_to=msg,
        )

    devices = [DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12)] * 2
    grid = VirtualGrid(
        _echo_app(1.0), devices, client_app_for=lambda n: bad_app if n == 1002 else None
    )
    res = run_async(AsyncSGD(concurrency=2), grid, _w0(), AsyncSettings(max_updates=5))
    assert np.isfinite(res.arrays["w"].numpy()).all()
    assert res.arrays["w"].numpy() == pytest.approx(np.full(3, 5.0))
    assert sum(r["num_rejected"] for r in res.rows) >= 4
    assert "NaN" in next(r["rejected"] for r in res.rows if r["num_rejected"])


def test_crashing_node_is_recorded_and_the_run_continues() -> None:
    def crash(msg: Message, context: object) -> Message:
        raise RuntimeError("out of memory")

    devices = [DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12)] * 3
    grid = VirtualGrid(
        _echo_app(1.0), devices, client_app_for=lambda n: crash if n == 1003 else None
    )
    res = run_async(DynSGD(concurrency=3), grid, _w0(), AsyncSettings(max_updates=6))
    assert len(res.rows) == 6
    assert any("out of memory" in r["failed"] for r in res.rows)


# --------------------------------------------------------------- AdaSGD's threshold/boost


def test_adasgd_boosts_only_rare_labels_staler_than_the_threshold() -> None:
    # Nine fast nodes hold class 1; one 20x slower node holds class 0 (the straggler).
    def app_for(node: int):  # type: ignore[no-untyped-def]
        return _echo_app(1.0, [5, 0] if node == 1010 else [0, 5])

    devices = [DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12)] * 9 + [
        DeviceProfile(flops_per_s=5e4, down_bps=1e12, up_bps=1e12)
    ]
    grid = VirtualGrid(_echo_app(1.0), devices, client_app_for=app_for)
    strat = AdaSGD(concurrency=10, seed=0)
    res = run_async(strat, grid, _w0(), AsyncSettings(max_updates=400))
    straggler = [r for r in res.rows if r["nodes"] == "1010"]
    others = [r for r in res.rows if r["nodes"] != "1010"]
    assert straggler and all(r["staleness"] > 1.5 * r["tau_thres"] for r in straggler)
    assert all(r["boost"] == pytest.approx(10.0) for r in straggler)  # BC ≈ 0 → capped
    # λ(τ_thres) = 1/(τ_thres+1), boosted 10×, capped at a fresh update's weight 1
    assert all(r["weight"] == pytest.approx(min(1.0, 10 / (r["tau_thres"] + 1))) for r in straggler)
    assert all(r["boost"] == 1.0 for r in others)
    assert strat.boosts_fired == len(straggler)


def test_adasgd_boost_never_fires_under_iid_without_stragglers() -> None:
    devices = [DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12)] * 8
    grid = VirtualGrid(_echo_app(1.0, [3, 3, 3]), devices)
    strat = AdaSGD(concurrency=8, seed=0)
    res = run_async(strat, grid, _w0(), AsyncSettings(max_updates=300))
    assert strat.boosts_fired == 0
    assert sum(r["boosted"] for r in res.rows) == 0
    assert {r["staleness"] for r in res.rows[20:]} <= set(range(8))


# ------------------------------------------------------------- the loop on the real client


def _digits(**over: object) -> ExperimentConfig:
    tree: dict = {
        "name": "async",
        "seed": 3,
        "num_nodes": 6,
        "rounds": 3,
        "data": {"name": "digits", "partition": "iid"},
        "model": {"name": "mlp", "hidden": [32]},
        "devices": {"kind": "uniform", "flops_per_s": 1e7},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.1},
        "strategy": {"name": "fedavg"},
    }
    tree.update(over)
    return load_dict(tree)


def test_async_loop_with_full_buffer_reproduces_sync_fedavg() -> None:
    # equal work per task (a fixed number of steps) on identical devices: equally fast nodes
    cfg = _digits(train={"steps": 5, "batch_size": 16, "lr": 0.1})
    ws = client.workspace(cfg.to_run_config())
    initial = ArrayRecord(client._model(cfg.model, ws.data, cfg.seed).state_dict())

    seed_everything(cfg.seed)
    grid = build_grid(cfg)
    sync = run_rounds(
        FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=6, min_available_nodes=6),
        grid,
        initial,
        LoopSettings(num_rounds=3, train_config=train_config_record(cfg)),
    )
    seed_everything(cfg.seed)
    grid = build_grid(cfg)
    strat = AsyncSGD(concurrency=6, buffer_size=6, weighting="examples")
    asyn = run_async(
        strat,
        grid,
        initial,
        AsyncSettings(max_updates=3, train_config=train_config_record(cfg)),
    )
    assert [r["staleness"] for r in asyn.rows] == [0.0, 0.0, 0.0]
    a, b = sync.arrays.to_torch_state_dict(), asyn.arrays.to_torch_state_dict()
    diffs = [float((a[k] - b[k]).abs().max()) for k in a]
    assert max(diffs) < 1e-6, diffs
    before = initial.to_torch_state_dict()
    assert max(float((a[k] - before[k]).abs().max()) for k in a) > 1e-2  # it did train


@pytest.mark.parametrize("name", ["adasgd", "dynsgd", "asyncsgd", "fedasync", "fedbuff"])
def test_async_strategies_run_from_a_config_and_are_deterministic(name: str) -> None:
    cfg = _digits(
        rounds=30,
        devices={"kind": "tiers", "flops_per_s": 1e6, "compute_jitter": 0.3},
        train={"steps": 2, "batch_size": 16, "lr": 0.1},
        strategy={"name": name, "clients_per_round": 4},
        evaluation={"every": 10},
    )
    a, b = run_experiment(cfg), run_experiment(cfg)
    assert a.rows == [
        {**r, "wall_time": ra["wall_time"]} for r, ra in zip(b.rows, a.rows, strict=True)
    ]
    sa, sb = a.arrays.to_torch_state_dict(), b.arrays.to_torch_state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.rows[-1]["round"] == 30
    assert a.final_accuracy > a.rows[0]["central_accuracy"] + 0.1  # it learns
    assert a.stop_reason == "updates"
    vt = [r["virtual_time"] for r in a.rows]
    assert vt == sorted(vt) and vt[-1] > 0


def test_async_options_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="boost_flor"):
        _digits(strategy={"name": "adasgd", "options": {"boost_flor": 0.2}})
    with pytest.raises(ConfigError, match="buffer_size"):
        _digits(strategy={"name": "fedbuff", "options": {"buffer_size": 0}})


def test_async_strategy_start_is_flowers_signature() -> None:
    grid = _toy_grid([1e6, 2e6])

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        return MetricRecord({"mean": float(arrays["w"].numpy().mean())})

    result = AsyncSGD(concurrency=2).start(
        grid=grid, initial_arrays=_w0(), num_rounds=4, evaluate_fn=evaluate_fn
    )
    assert result.arrays["w"].numpy() == pytest.approx(np.full(3, 4.0))
    assert result.evaluate_metrics_serverapp[4]["mean"] == pytest.approx(4.0)
    assert math.isclose(result.evaluate_metrics_serverapp[0]["mean"], 0.0)


def test_train_reply_reports_labels_and_device_time() -> None:
    cfg = _digits()
    grid = build_grid(cfg)
    ws = client.workspace(cfg.to_run_config())
    arrays = ArrayRecord(client._model(cfg.model, ws.data, cfg.seed).state_dict())
    msg = Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"local-steps": 2, "batch-size": 8})}),
        grid.node_id(0),
        "train",
    )
    (reply,) = grid.send_and_receive([msg])
    metrics = reply.content["metrics"]
    assert sum(metrics["label-counts"]) == 16 == metrics["examples-processed"]
    outcome = next(iter(grid.outcomes.values()))
    assert metrics["compute-s"] == outcome.compute_s > 0


# ------------------------------------------------------------------ faults and edge cases


def test_a_run_where_every_task_fails_stops_instead_of_spinning() -> None:
    def crash(msg: Message, context: object) -> Message:
        raise RuntimeError("always")

    devices = [DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12)] * 2
    grid = VirtualGrid(crash, devices)
    res = run_async(DynSGD(concurrency=2), grid, _w0(), AsyncSettings(max_updates=5))
    assert res.stop_reason.startswith("no progress")
    assert res.rows == [] and len(grid.outcomes) == 20  # 10 × concurrency tasks, then stop


def test_lost_feature_queries_do_not_stall_the_run() -> None:
    from fl.profiling.iprof import IProf

    echo = _echo_app(1.0)

    def app(msg: Message, context: object) -> Message:
        if msg.metadata.message_type == "query":
            feats = MetricRecord({"device.cpu": 2.0})
            return Message(RecordDict({"features": feats}), reply_to=msg)
        return echo(msg, context)

    good = DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12)
    lost = DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12, failure_prob=1.0)
    grid = VirtualGrid(app, [good, good, good, lost])
    strat = AsyncSGD(concurrency=3, profiler=IProf(slo_s=1.0))
    res = run_async(strat, grid, _w0(), AsyncSettings(max_updates=6, timeout=3600))
    assert res.stop_reason == "updates"
    assert res.rows[-1]["virtual_time"] < 10  # not the lost query's 3600 s TTL
    assert sorted(strat.features) == [1001, 1002, 1003]


def test_max_staleness_drops_without_counting_an_update() -> None:
    grid = _toy_grid([1e6, 1e6 / 10.5])
    strat = AsyncSGD(concurrency=2, max_staleness=5)
    res = run_async(strat, grid, _w0(), AsyncSettings(max_updates=22))
    assert len(res.rows) == 22 and all(r["nodes"] == "1001" for r in res.rows)
    assert res.arrays["w"].numpy() == pytest.approx(np.full(3, 22.0))  # 22 real updates
    assert "max_staleness" in " ".join(r["rejected"] for r in res.rows)


def test_a_strategy_can_run_twice() -> None:
    strat = FedBuff(concurrency=3, buffer_size=2)
    first = run_async(strat, _toy_grid([1e6, 2e6, 3e6]), _w0(), AsyncSettings(max_updates=5))
    second = run_async(strat, _toy_grid([1e6, 2e6, 3e6]), _w0(), AsyncSettings(max_updates=5))
    assert np.array_equal(first.arrays["w"].numpy(), second.arrays["w"].numpy())
    assert first.rows == [{**r, "wall_time": a["wall_time"]} for r, a in
                          zip(second.rows, first.rows, strict=True)]  # fmt: skip


def test_replies_after_the_time_budget_are_not_applied() -> None:
    grid = _toy_grid([1e6, 1e6 / 10.5])
    res = run_async(
        AsyncSGD(concurrency=2), grid, _w0(), AsyncSettings(max_updates=100, time_budget=5.5)
    )
    assert res.stop_reason == "time budget"
    assert all(r["virtual_time"] <= 5.5 for r in res.rows) and len(res.rows) == 5


def test_start_evaluates_after_every_update_once() -> None:
    calls: list[int] = []

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        calls.append(rnd)
        return MetricRecord({"mean": float(arrays["w"].numpy().mean())})

    AsyncSGD(concurrency=2).start(
        grid=_toy_grid([1e6, 2e6]), initial_arrays=_w0(), num_rounds=4, evaluate_fn=evaluate_fn
    )
    assert calls == [0, 1, 2, 3, 4]


def test_fedasync_refuses_options_it_would_ignore() -> None:
    with pytest.raises(ValueError, match="server_lr"):
        FedAsync(server_lr=0.5)


# ------------------------------------------------ weighted_by_key and label-similarity boosts


def _underscore_app(msg: Message, context: object) -> Message:
    """A client that reports `num_examples` (underscore), as some Flower apps do."""
    w = msg.content["arrays"]["w"].numpy() + 1.0
    metrics = MetricRecord({"num_examples": 10, "work-flops": 1e6})
    return Message(
        RecordDict({"arrays": ArrayRecord({"w": Array(w)}), "metrics": metrics}), reply_to=msg
    )


@pytest.mark.parametrize("cls", [AsyncSGD, FedBuff, AdaSGD])
def test_async_strategies_honour_weighted_by_key(cls) -> None:  # type: ignore[no-untyped-def]
    devices = [DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12)] * 2
    default = cls(concurrency=2, buffer_size=2)
    res = run_async(default, VirtualGrid(_underscore_app, devices), _w0(), AsyncSettings(4))
    assert res.rows == [] and default.version == 0  # the default key: every reply rejected
    assert "missing metric 'num-examples'" in {why for _, why in default.rejected}
    strat = cls(concurrency=2, buffer_size=2, weighted_by_key="num_examples", weighting="examples")
    res = run_async(strat, VirtualGrid(_underscore_app, devices), _w0(), AsyncSettings(4))
    assert res.stop_reason == "updates" and strat.version == 4 and strat.rejected == []
    assert all(u.num_examples == 10.0 for u in strat.buffer)
    assert float(res.arrays["w"].numpy()[0]) > 0
    cfg = _digits(strategy={"name": "fedbuff", "options": {"weighted_by_key": "num_examples"}})
    assert cfg.strategy.options["weighted_by_key"] == "num_examples"


def test_adasgd_boosts_a_stale_node_with_rare_labels_but_not_one_with_common_labels() -> None:
    # Eight fast nodes hold classes 0 and 1 equally; two 20x slower stragglers: 1009 mostly
    # holds class 2 (rare: 0 < BC < 1), 1010 holds what the fast nodes hold (BC = 1).
    labels = {1009: [1, 1, 8], 1010: [5, 5, 0]}

    def app_for(node: int):  # type: ignore[no-untyped-def]
        return _echo_app(1.0, labels.get(node, [5, 5, 0]))

    fast = DeviceProfile(flops_per_s=1e6, down_bps=1e12, up_bps=1e12)
    slow = DeviceProfile(flops_per_s=5e4, down_bps=1e12, up_bps=1e12)
    grid = VirtualGrid(_echo_app(1.0), [fast] * 8 + [slow] * 2, client_app_for=app_for)
    strat = AdaSGD(concurrency=10, seed=0, max_weight=10.0)
    res = run_async(strat, grid, _w0(), AsyncSettings(max_updates=400))
    rare = [r for r in res.rows if r["nodes"] == "1009" and r["boosted"]]
    common = [r for r in res.rows if r["nodes"] == "1010" and r["boosted"]]
    assert rare and common  # both stale enough for the boost to fire
    for r in rare:  # BC against the (mostly class 0/1) totals ≈ 0.45: boosted ≈ 2.2×
        assert 0.3 < r["similarity"] < 0.6
        assert r["boost"] == pytest.approx(1 / r["similarity"]) and r["boost"] > 1.5
        lam = math.exp(-adasgd_beta(r["tau_thres"]) * r["tau_thres"])  # capped τ
        assert r["weight"] == pytest.approx(lam * r["boost"])
    for r in common:  # same labels as the history: not boosted
        assert r["similarity"] > 0.99 and r["boost"] == pytest.approx(1.0, abs=0.01)
        lam = math.exp(-adasgd_beta(r["tau_thres"]) * r["tau_thres"])
        assert r["weight"] == pytest.approx(lam, rel=0.01)
