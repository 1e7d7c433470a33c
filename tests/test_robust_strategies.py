"""GeometricMedian / BlockGeometricMedian strategies, reply validation, attacks on the grid."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fl.experiment import run_experiment
from fl.experiment.config import load_dict
from fl.loops.synchronous import LoopSettings, run_rounds
from fl.robust.geomedian import geometric_median
from fl.sim.attacks import AttackConfig, ByzantineClientApp, alie, alie_z
from fl.sim.devices import DeviceProfile
from fl.sim.grid import VirtualGrid
from fl.strategies import BlockGeometricMedian, GeometricMedian

D = 50


def offset_app(bad: dict[int, str] | None = None) -> ClientApp:
    """Node p replies global + offset_p (a fixed random vector); `bad` nodes misbehave."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        g = msg.content["arrays"]["w"].numpy()
        rng = np.random.default_rng(pid)
        w = (g + rng.normal(0, 1, g.shape)).astype(np.float32)
        kind = (bad or {}).get(pid)
        arrays = {"w": Array(w)}
        if kind == "nan":
            w[3] = np.nan
            arrays = {"w": Array(w)}
        elif kind == "shape":
            arrays = {"w": Array(np.zeros(D + 1, dtype=np.float32))}
        elif kind == "huge":
            arrays = {"w": Array((g + 1e6).astype(np.float32))}
        n = -5 if kind == "negative" else 10
        return Message(
            RecordDict(
                {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": n})}
            ),
            reply_to=msg,
        )

    return app


def grid_of(app: ClientApp, n: int, **kw: object) -> VirtualGrid:
    devices = [DeviceProfile(flops_per_s=1e9, down_bps=1e9, up_bps=1e9) for _ in range(n)]
    return VirtualGrid(app, devices, seed=0, **kw)  # type: ignore[arg-type]


def initial() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(D, dtype=np.float32))})


def offsets(n: int) -> torch.Tensor:
    return torch.tensor(
        np.stack([np.random.default_rng(p).normal(0, 1, D) for p in range(n)]), dtype=torch.float32
    )


def test_geometric_median_strategy_applies_gm_of_deltas_and_resists_outliers() -> None:
    n = 10
    random.seed(0)
    grid = grid_of(offset_app({0: "huge", 1: "huge"}), n)
    strategy = GeometricMedian(weighted=False, fraction_evaluate=0.0, min_available_nodes=n)
    out = run_rounds(strategy, grid, initial(), LoopSettings(num_rounds=1)).arrays["w"].numpy()
    deltas = offsets(n)
    deltas[:2] = 1e6
    expected = geometric_median(deltas, tol=1e-6, max_iter=100).median.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(out).max() < 5  # the mean would be ~2e5


def test_bgmd_with_beta_one_equals_gm_every_round() -> None:
    n = 8
    results = []
    for strategy in (
        GeometricMedian(weighted=False, fraction_evaluate=0.0, min_available_nodes=n),
        BlockGeometricMedian(
            beta=1.0, weighted=False, fraction_evaluate=0.0, min_available_nodes=n
        ),
    ):
        random.seed(0)
        grid = grid_of(offset_app({0: "huge"}), n)
        results.append(
            run_rounds(strategy, grid, initial(), LoopSettings(num_rounds=3)).arrays["w"].numpy()
        )
        if isinstance(strategy, BlockGeometricMedian):
            assert strategy.memory is not None and float(strategy.memory.abs().max()) == 0.0
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy_name", ["fedavg", "geomedian", "bgmd"])
def test_bad_replies_are_rejected_counted_and_never_aggregated(strategy_name: str) -> None:
    n = 8
    bad = {0: "nan", 1: "shape", 2: "negative"}
    random.seed(0)
    grid = grid_of(offset_app(bad), n)
    kw = {"fraction_evaluate": 0.0, "min_available_nodes": n}
    strategy = {
        "fedavg": lambda: FedAvg(**kw),
        "geomedian": lambda: GeometricMedian(**kw),
        "bgmd": lambda: BlockGeometricMedian(beta=0.5, **kw),
    }[strategy_name]()
    result = run_rounds(strategy, grid, initial(), LoopSettings(num_rounds=2))
    for row in result.rows:
        assert row["num_rejected"] == 3
        assert (
            "NaN" in row["rejected"]
            and "shape" in row["rejected"]
            and "num-examples" in row["rejected"]
        )
        assert row["aggregated"]
    w = result.arrays["w"].numpy()
    assert np.isfinite(w).all() and w.shape == (D,)


def test_all_replies_bad_keeps_previous_model() -> None:
    n = 4
    random.seed(0)
    grid = grid_of(offset_app(dict.fromkeys(range(n), "nan")), n)
    result = run_rounds(
        GeometricMedian(fraction_evaluate=0.0, min_available_nodes=n),
        grid,
        initial(),
        LoopSettings(num_rounds=2),
    )
    assert all(not r["aggregated"] for r in result.rows)
    np.testing.assert_array_equal(result.arrays["w"].numpy(), np.zeros(D, dtype=np.float32))


def test_omniscient_attacker_sees_the_honest_updates_of_its_round() -> None:
    n, f = 10, 2
    honest_app = offset_app()
    cfg = AttackConfig(kind="alie", fraction=f / n)
    wrappers = {1001 + i: ByzantineClientApp(honest_app, cfg, i, 0) for i in (3, 7)}
    grid = grid_of(honest_app, n, client_app_for=wrappers.get)
    honest = offsets(n)[[i for i in range(n) if i not in (3, 7)]].double()
    expected = alie(honest, alie_z(n, f)).numpy()
    msgs = [Message(RecordDict({"arrays": initial()}), 1001 + i, "train") for i in range(n)]
    got = {m.metadata.src_node_id: m for m in grid.send_and_receive(msgs)}
    assert len(got) == n
    for node in (1004, 1008):
        w = got[node].content["arrays"]["w"].numpy()
        np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-5)


def digits_attack_config(strategy: str, attack: dict, **options: object) -> object:
    return load_dict(
        {
            "num_nodes": 16,
            "rounds": 30,
            "data": {"name": "digits", "partition": "iid"},
            "model": {"name": "logreg"},
            "train": {"steps": 4, "batch_size": 16, "lr": 0.1},
            "strategy": {"name": strategy, "options": dict(options)},
            "attack": attack,
            "evaluation": {"every": 10},
        }
    )


def test_bit_flip_breaks_fedavg_but_not_geometric_median() -> None:
    attack = {"kind": "sign_flip", "scale": 5.0, "fraction": 0.25}
    clean = run_experiment(digits_attack_config("geomedian", {})).final_accuracy
    gm = run_experiment(digits_attack_config("geomedian", attack)).final_accuracy
    avg = run_experiment(digits_attack_config("fedavg", attack)).final_accuracy
    assert clean > 0.85
    assert gm >= clean - 0.02
    assert avg <= 0.15


@pytest.mark.slow
def test_quick_bgmd_experiment_shows_fedavg_collapse_and_gm_robustness(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """simulations/bgmd --quick (mean and GM only): bit flip ×(−5) on 20% and 40% of nodes."""
    import csv

    from conftest import load_simulation

    results = load_simulation("bgmd").main(
        ["--quick", "--workers", "1", "--aggregators", "mean", "gm", "--out", str(tmp_path)]
    )
    claims = {claim: ok for claim, ok, _ in results}
    assert claims["bit flip 20%: FedAvg collapses (≤ chance + 5 points)"]
    assert claims["bit flip 40%: FedAvg collapses (≤ chance + 5 points)"]
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    acc = {(r["attack"], r["aggregator"]): float(r["final_accuracy"]) for r in rows}
    # GM keeps learning under attack: far above the collapsed mean, close to clean at 20%.
    assert acc[("bitflip-20", "gm")] >= acc[("none", "gm")] - 0.05
    assert acc[("bitflip-40", "gm")] >= acc[("bitflip-40", "mean")] + 0.5
    assert (tmp_path / "table.md").is_file()


def test_inconsistent_metric_keys_and_bad_work_are_rejected_not_fatal() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        metrics = {"num-examples": 10, "work-flops": 1.0}
        if pid == 0:
            metrics["extra"] = 1.0  # a different metric layout
        if pid == 1:
            metrics["work-flops"] = -3.0
        g = msg.content["arrays"]["w"].numpy()
        return Message(
            RecordDict(
                {"arrays": ArrayRecord({"w": Array(g + 1)}), "metrics": MetricRecord(metrics)}
            ),
            reply_to=msg,
        )

    random.seed(0)
    grid = grid_of(app, 5)
    result = run_rounds(
        FedAvg(fraction_evaluate=0.0, min_available_nodes=5),
        grid,
        initial(),
        LoopSettings(num_rounds=1),
    )
    row = result.rows[0]
    assert (
        row["num_rejected"] == 2
        and "work-flops" in row["rejected"]
        and "metric keys" in row["rejected"]
    )
    np.testing.assert_allclose(result.arrays["w"].numpy(), 1.0)


@pytest.mark.parametrize("cls", [GeometricMedian, BlockGeometricMedian])
def test_a_round_that_aggregates_nothing_logs_why(cls, caplog) -> None:  # type: ignore[no-untyped-def]
    n = 3
    random.seed(0)
    grid = grid_of(offset_app({0: "nan", 1: "shape", 2: "negative"}), n)
    strategy = cls(fraction_evaluate=0.0, min_available_nodes=n)
    strategy.set_reference(initial())
    msgs = [Message(RecordDict({"arrays": initial()}), 1001 + i, "train") for i in range(n)]
    replies = list(grid.send_and_receive(msgs))
    with caplog.at_level("WARNING", logger="flwr"):
        assert strategy.aggregate_train(1, replies) == (None, None)
    (record,) = [r for r in caplog.records if "aggregated nothing" in r.getMessage()]
    assert record.name == "flwr" and record.levelname == "WARNING"
    text = record.getMessage()
    assert cls.__name__ in text and "3 replies rejected" in text
    for node, reason in ((1001, "NaN"), (1002, "shape"), (1003, "num-examples")):
        assert f"node {node}: " in text and reason in text
