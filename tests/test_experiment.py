"""End-to-end: configs → runs on the virtual grid → results folders; stock Flower strategies."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)
from typer.testing import CliRunner

from fl import client
from fl.cli import cli
from fl.experiment import (
    build_grid,
    central_evaluator,
    run_experiment,
    seed_everything,
    train_config_record,
)
from fl.experiment.config import ExperimentConfig, load_config, load_dict
from fl.experiment.tables import read_csv
from fl.loops.synchronous import LoopSettings, run_rounds
from fl.schema import ConfigError
from fl.strategies.registry import ASYNC_STRATEGIES as ASYNC
from fl.strategies.registry import STRATEGIES

QUICKSTART = Path(__file__).parents[1] / "simulations" / "quickstart" / "fedavg.toml"


def digits_config(**top: object) -> ExperimentConfig:
    tree: dict = {
        "name": "digits-fedavg",
        "seed": 0,
        "num_nodes": 20,
        "rounds": 20,
        "data": {"name": "digits", "partition": "iid"},
        "model": {"name": "mlp", "hidden": [64]},
        "devices": {"kind": "tiers", "flops_per_s": 1e7},
        "train": {"epochs": 5, "batch_size": 16, "lr": 0.1},
        "strategy": {"name": "fedavg"},
    }
    tree.update(top)
    return load_dict(tree)


def test_fedavg_on_digits_reaches_090_within_20_rounds_and_is_deterministic(tmp_path: Path) -> None:
    cfg = digits_config()
    a = run_experiment(cfg, tmp_path / "a")
    b = run_experiment(cfg, tmp_path / "b")
    assert b.final_accuracy == a.final_accuracy
    accs = [r["central_accuracy"] for r in a.rows]
    assert max(accs) >= 0.90, accs
    assert a.final_accuracy >= 0.90
    ta = read_csv(tmp_path / "a" / "rounds.csv")
    tb = read_csv(tmp_path / "b" / "rounds.csv")
    drop = {"wall_time", "aggregation_wall_s"}  # wall time is measured, not simulated
    assert [{k: v for k, v in r.items() if k not in drop} for r in ta] == [
        {k: v for k, v in r.items() if k not in drop} for r in tb
    ]
    assert (tmp_path / "a" / "messages.csv").read_text() == (
        tmp_path / "b" / "messages.csv"
    ).read_text()
    sa = torch.load(tmp_path / "a" / "model.pt")
    sb = torch.load(tmp_path / "b" / "model.pt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_results_folder_contents_and_config_round_trip(tmp_path: Path) -> None:
    cfg = digits_config(rounds=3)
    run_experiment(cfg, tmp_path)
    for name in (
        "config.toml",
        "rounds.csv",
        "messages.csv",
        "summary.json",
        "model.pt",
        "accuracy_vs_time.png",
        "accuracy_vs_round.png",
    ):
        assert (tmp_path / name).is_file(), name
    assert load_config(tmp_path / "config.toml") == cfg
    rows = read_csv(tmp_path / "rounds.csv")
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert all(rows[i]["virtual_time"] < rows[i + 1]["virtual_time"] for i in range(3))
    assert rows[1]["num_selected"] == 20
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        summary["rounds_completed"] == 3 and summary["virtual_time_s"] == rows[-1]["virtual_time"]
    )
    msgs = read_csv(tmp_path / "messages.csv")
    assert len(msgs) == 60 and all(m["status"] == "replied" for m in msgs)
    assert all(m["work_flops"] > 0 and m["compute_s"] > 0 for m in msgs)


def _stock_run(strategy: Strategy, cfg: ExperimentConfig, rounds: int) -> ArrayRecord:
    seed_everything(cfg.seed)
    ws = client.workspace(cfg.to_run_config())
    grid = build_grid(cfg)
    initial = ArrayRecord(client._model(cfg.model, ws.data, cfg.seed).state_dict())
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=rounds,
        train_config=train_config_record(cfg),
        evaluate_fn=lambda r, a: None,
    )
    return result.arrays


@pytest.mark.parametrize(
    "strategy",
    [
        FedAvg(fraction_evaluate=0.2, min_available_nodes=10),
        FedProx(proximal_mu=0.1, fraction_evaluate=0.2, min_available_nodes=10),
        Krum(num_malicious_nodes=1, fraction_evaluate=0.2, min_available_nodes=10),
        FedMedian(fraction_evaluate=0.2, min_available_nodes=10),
        FedTrimmedAvg(beta=0.2, fraction_evaluate=0.2, min_available_nodes=10),
        Bulyan(num_malicious_nodes=1, fraction_evaluate=0.2, min_available_nodes=10),
    ],
    ids=lambda s: type(s).__name__,
)
def test_stock_flower_strategies_run_unmodified(strategy: Strategy) -> None:
    cfg = digits_config(num_nodes=10, rounds=2)
    before = ArrayRecord(
        client._model(cfg.model, client.workspace(cfg.to_run_config()).data, 0).state_dict()
    )
    after = _stock_run(strategy, cfg, rounds=2)
    evaluate = central_evaluator(client.workspace(cfg.to_run_config()))
    assert evaluate(2, after)["accuracy"] > evaluate(0, before)["accuracy"] + 0.1


def test_run_rounds_matches_flower_strategy_start() -> None:
    cfg = digits_config(num_nodes=10, rounds=3)
    via_start = _stock_run(FedAvg(fraction_evaluate=0.0, min_available_nodes=10), cfg, rounds=3)
    seed_everything(cfg.seed)
    ws = client.workspace(cfg.to_run_config())
    grid = build_grid(cfg)
    initial = ArrayRecord(client._model(cfg.model, ws.data, cfg.seed).state_dict())
    ours = run_rounds(
        FedAvg(fraction_evaluate=0.0, min_available_nodes=10),
        grid,
        initial,
        LoopSettings(num_rounds=3, train_config=train_config_record(cfg)),
    ).arrays
    for key in via_start:
        np.testing.assert_array_equal(via_start[key].numpy(), ours[key].numpy())


@pytest.mark.parametrize(
    ("data", "model"),
    [
        ({"name": "digits", "partition": "dirichlet", "alpha": 0.5}, {"name": "cnn"}),
        ({"name": "synthetic", "partition": "natural"}, {"name": "logreg"}),
        ({"name": "mnist", "partition": "iid", "max_samples": 2000}, {"name": "cnn"}),
        (
            {"name": "mnist", "partition": "dirichlet", "alpha": 1.0, "max_samples": 2000},
            {"name": "mlp"},
        ),
        (
            {"name": "shakespeare", "partition": "natural"},
            {"name": "char_lstm", "lstm_hidden": 32, "lstm_layers": 1},
        ),
    ],
    ids=["digits-cnn", "synthetic", "mnist-iid", "mnist-dirichlet", "shakespeare"],
)
def test_each_offline_dataset_trains_one_round(data: dict, model: dict) -> None:
    steps = {"steps": 2} if data["name"] == "shakespeare" else {}
    cfg = digits_config(
        num_nodes=8, rounds=1, data=data, model=model, train={"batch_size": 16, "lr": 0.05, **steps}
    )
    result = run_experiment(cfg)
    row = result.rows[-1]
    assert row["round"] == 1 and row["num_replied"] == 8
    assert np.isfinite(row["central_loss"]) and np.isfinite(row["train_train_loss"])
    assert result.rows[-1]["virtual_time"] > 0


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"rounds": -1}, "rounds"),
        ({"num_nodes": 0}, "num_nodes"),
        ({"strategy": {"name": "fedsgdx"}}, "fedsgdx"),
        ({"strategy": {"name": "fedavg", "options": {"bogus": 1}}}, "bogus"),
        ({"strategy": {"name": "fedavg", "clients_per_round": 50}}, "clients_per_round"),
        ({"data": {"name": "cifar"}}, "cifar"),
        ({"data": {"name": "digits", "alpha": 0.0}}, "alpha"),
        ({"data": {"name": "digits", "partition": "zipf"}}, "zipf"),
        ({"model": {"name": "resnet"}}, "resnet"),
        ({"devices": {"kind": "cloud"}}, "cloud"),
        ({"train": {"lr": -0.1}}, "lr"),
        ({"train": {"batch_size": "big"}}, "batch_size"),
        ({"train": {"weight_decay": float("inf")}}, "weight_decay"),
        ({"server_time_factor": float("inf")}, "server_time_factor"),
        (
            {"strategy": {"name": "fedavg", "options": {"fraction_evaluate": 3.0}}},
            "fraction_evaluate",
        ),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_configs_fail_at_load_naming_key_and_value(change: dict, needle: str) -> None:
    tree = {"num_nodes": 20, "rounds": 5}
    tree.update(change)
    with pytest.raises(ConfigError, match=needle):
        load_dict(tree)


def test_cli_run_set_and_plot(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(
        cli,
        [
            "run",
            str(QUICKSTART),
            "--set",
            "rounds=2",
            "--set",
            "strategy.name=fedprox",
            "--set",
            "strategy.options.proximal_mu=0.1",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    cfg = load_config(out / "config.toml")
    assert cfg.rounds == 2 and cfg.strategy.name == "fedprox"
    assert cfg.strategy.options == {"proximal_mu": 0.1}
    res = runner.invoke(cli, ["plot", str(out), str(out), "--out", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "plots" / "accuracy_vs_time.png").stat().st_size > 1000
    res = runner.invoke(cli, ["run", str(QUICKSTART), "--set", "rounds=-3"])
    assert res.exit_code == 2 and "rounds = -3" in res.output


def test_availability_waits_in_virtual_time_and_never_picks_offline_nodes() -> None:
    cfg = digits_config(
        num_nodes=20,
        rounds=6,
        devices={
            "kind": "uniform",
            "flops_per_s": 1e6,
            "availability": "onoff",
            "mean_online_s": 30.0,
            "mean_offline_s": 30.0,
        },
        strategy={"name": "fedavg", "clients_per_round": 5},
    )
    result = run_experiment(cfg)
    grid = result.grid
    assert all(r["num_selected"] == 5 for r in result.rows if r["round"] > 0)
    for o in grid.outcomes.values():
        assert grid.devices[grid.node_index(o.node_id)].availability.online(o.sent_at)


def test_same_seed_same_sampling_different_seed_differs() -> None:
    base = {"rounds": 3, "strategy": {"name": "fedavg", "clients_per_round": 4}}
    sel = []
    for seed in (1, 1, 2):
        random.seed(12345)  # global state before the run must not matter
        r = run_experiment(digits_config(seed=seed, **base))
        sel.append([row["selected"] for row in r.rows if row["round"] > 0])
    assert sel[0] == sel[1]
    assert sel[0] != sel[2]


def test_time_budget_stops_the_run_and_evaluates_the_last_round() -> None:
    cfg = digits_config(rounds=50, time_budget_s=10.0, evaluation={"every": 100})
    result = run_experiment(cfg)
    assert result.stop_reason == "time budget"
    done = [r for r in result.rows if r["round"] > 0]
    assert 0 < len(done) < 50
    assert done[-1]["virtual_time"] >= 10.0 and done[-2]["virtual_time"] < 10.0
    assert "central_accuracy" in done[-1]


def test_federated_evaluation_with_availability_waits_instead_of_hanging() -> None:
    cfg = digits_config(
        num_nodes=12,
        rounds=5,
        devices={
            "kind": "uniform",
            "flops_per_s": 1e6,
            "availability": "onoff",
            "mean_online_s": 5.0,
            "mean_offline_s": 20.0,
        },
        strategy={"name": "fedavg", "clients_per_round": 3, "options": {"min_evaluate_nodes": 3}},
        evaluation={"federated": True, "federated_fraction": 0.25},
    )
    result = run_experiment(cfg)
    assert len([r for r in result.rows if r["round"] > 0]) == 5
    assert any("fed_eval_acc" in r for r in result.rows)


def test_run_config_round_trip_keeps_tricky_strings() -> None:
    cfg = digits_config(name="[1, 2]", attack={"kind": "none"})
    again = ExperimentConfig.from_run_config(cfg.to_run_config())
    assert again == cfg and again.name == "[1, 2]"


def test_derive_seed_uses_all_bits() -> None:
    from fl.client.training import derive_seed

    assert derive_seed(1, 2) != derive_seed(1 + 2**32, 2)
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)


@pytest.mark.parametrize(
    "tree",
    [
        {
            "strategy": {
                "name": "tifl",
                "clients_per_round": 3,
                "options": {"policy": "adaptive", "interval": 2, "t_max": 1e4},
            },
            "evaluation": {"free": True},
        },
        {
            "strategy": {"name": "bgmd", "options": {"beta": 0.2, "selector": "sample"}},
            "attack": {"kind": "alie", "fraction": 0.2},
        },
        {
            "strategy": {"name": "geomedian"},
            "attack": {"kind": "label_flip", "fraction": 0.3},
            "devices": {
                "kind": "mobile",
                "flops_per_s": 1e7,
                "compute_jitter": 0.3,
                "availability": "onoff",
                "mean_online_s": 50.0,
                "mean_offline_s": 20.0,
                "failure_prob": 0.1,
            },
        },
    ],
    ids=["tifl-adaptive", "bgmd-alie", "gm-labelflip-mobile"],
)
def test_strategies_are_bit_for_bit_deterministic(tmp_path: Path, tree: dict) -> None:
    cfg = digits_config(num_nodes=12, rounds=5, model={"name": "logreg"}, **tree)
    for name in ("a", "b"):
        run_experiment(cfg, tmp_path / name)
    assert (tmp_path / "a" / "messages.csv").read_bytes() == (
        tmp_path / "b" / "messages.csv"
    ).read_bytes()
    sa, sb = (torch.load(tmp_path / n / "model.pt") for n in ("a", "b"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    drop = {"wall_time", "aggregation_wall_s"}
    ra, rb = (
        [
            {k: v for k, v in r.items() if k not in drop}
            for r in read_csv(tmp_path / n / "rounds.csv")
        ]
        for n in ("a", "b")
    )
    assert ra == rb


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_is_bit_for_bit_deterministic_under_faults(name: str) -> None:
    """Each registered strategy twice, with crashes and jitter: same messages, rows, model."""
    cfg = digits_config(
        num_nodes=12,
        rounds=12 if name in ASYNC else 3,
        model={"name": "logreg"},
        devices={"kind": "tiers", "flops_per_s": 1e7, "compute_jitter": 0.3},
        faults={"crash_prob": 0.1},
        strategy={"name": name, "clients_per_round": 6},
    )
    a, b = run_experiment(cfg), run_experiment(cfg)

    def virtual(row: dict) -> dict:  # wall-clock measurements (…wall_s, wall_time) differ
        return {k: v for k, v in row.items() if not (k == "wall_time" or k.endswith("wall_s"))}

    assert [virtual(r) for r in a.rows] == [virtual(r) for r in b.rows]
    assert [vars(o) for o in a.grid.outcomes.values()] == [
        vars(o) for o in b.grid.outcomes.values()
    ]
    sa, sb = a.arrays.to_torch_state_dict(), b.arrays.to_torch_state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
