"""The same experiments on Flower's own engines: `flwr run` on Ray, and a Deployment Engine."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest
import torch
from flwr.common.config import flatten_dict

from fl.experiment import run_experiment
from fl.experiment.config import ExperimentConfig, load_dict
from fl.experiment.tables import read_csv
from fl.flower.cleanup import flower_processes
from fl.flower.engines import (
    APP_DIR,
    FlowerRunError,
    flwr_run,
    local_deployment,
    run_config_toml,
    run_on_flower,
)


def _cfg(strategy: str, **over: object) -> ExperimentConfig:
    opts = {
        "tifl": {"policy": "uniform", "num_tiers": 2, "profiling_rounds": 1, "t_max": 600.0},
        "bgmd": {"beta": 0.5},
    }.get(strategy, {})
    tree: dict = {
        "name": strategy,
        "seed": 1,
        "num_nodes": 4,
        "rounds": 3,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"steps": 3, "batch_size": 16, "lr": 0.1},
        "strategy": {"name": strategy, "clients_per_round": 2, "options": opts},
    }
    tree.update(over)
    return load_dict(tree)


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain `text` (this test's own FLWR_HOME)."""
    out = subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line]


def test_pyproject_app_config_has_every_schema_key_and_loads() -> None:
    project = tomllib.loads((APP_DIR / "pyproject.toml").read_text())
    app = project["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "fl.flower.app:serverapp",
        "clientapp": "fl.flower.app:clientapp",
    }
    flat = flatten_dict(app["config"])
    assert set(flat) == set(ExperimentConfig().to_flower_run_config())  # overrides need the keys
    cfg = ExperimentConfig.from_run_config(flat)
    assert (cfg.num_nodes, cfg.rounds, cfg.strategy.name) == (10, 3, "fedavg")


def test_flower_run_config_round_trips_lists_none_and_options() -> None:
    cfg = _cfg(
        "tifl",
        data={"name": "digits", "max_samples": 300},
        devices={"kind": "tiers", "tier_fractions": [1, 1, 1, 1, 2]},
    )
    flat = cfg.to_flower_run_config()
    assert flat["model.hidden"] == "[16]" and flat["devices.bandwidth_jitter"] == "none"
    assert flat["strategy.options"].startswith("{") and "uniform" in flat["strategy.options"]
    # written and read back as `flwr run --run-config FILE` does
    parsed = flatten_dict(tomllib.loads(run_config_toml(flat)))
    assert ExperimentConfig.from_run_config(parsed) == cfg
    # and typed by hand on the command line
    typed = dict(flat, **{"model.hidden": "[32, 8]", "strategy.options": "{policy = 'fast'}"})
    back = ExperimentConfig.from_run_config(typed)
    assert back.model.hidden == (32, 8) and back.strategy.options == {"policy": "fast"}


# Enough local work to learn in a few rounds: on the virtual grid these configs go from
# 0.09-0.11 (the initial model) to 0.69-0.80 (TiFL, 2 rounds), 0.81-0.84 (AdaSGD, 6 updates)
# and 0.82-0.87 (BGMD, 3 rounds) over seeds 1-3, a gain of at least 0.59. On Ray the order of
# arrivals is real, not simulated, so the runs differ; half that gain is the bar.
LEARNS = {"train": {"steps": 30, "batch_size": 16, "lr": 0.2}}
MIN_GAIN = 0.3


@pytest.mark.slow
def test_tifl_adasgd_and_bgmd_run_on_the_ray_simulation_engine(tmp_path: Path) -> None:
    home = tmp_path / "flwr-home"
    for name, rounds in (("tifl", 2), ("adasgd", 6), ("bgmd", 3)):
        out = run_on_flower(
            _cfg(name, rounds=rounds, **LEARNS), tmp_path / name, cpus_per_client=1, home=home
        )
        summary = json.loads((out / "summary.json").read_text())
        rows = read_csv(out / "rounds.csv")
        assert summary["strategy"] == name and summary["rounds_completed"] == rounds
        assert summary["engine"] == "flower"
        assert rows[0]["round"] == 0 and rows[-1]["round"] == rounds
        assert 0 < rows[-1]["virtual_time"] < 600  # wall-clock seconds on a real engine
        assert summary["final_accuracy"] >= rows[0]["central_accuracy"] + MIN_GAIN, name
        assert (out / "model.pt").is_file() and (out / "accuracy_vs_time.png").is_file()
        assert not _processes_mentioning(str(home))  # the local SuperLink was stopped
        assert not flower_processes(home)  # and Ray's actors, which outlive it orphaned


@pytest.mark.slow
def test_fedavg_gives_the_same_model_on_the_virtual_grid_and_on_ray(tmp_path: Path) -> None:
    cfg = _cfg("fedavg", train={"epochs": 1, "batch_size": 16, "lr": 0.1})
    cfg = cfg.replace(strategy=load_dict({"strategy": {"name": "fedavg"}}).strategy)
    virtual = run_experiment(cfg, tmp_path / "virtual")
    out = run_on_flower(cfg, tmp_path / "ray")
    a = torch.load(tmp_path / "virtual" / "model.pt")
    b = torch.load(out / "model.pt")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    ray_rows = read_csv(out / "rounds.csv")
    assert ray_rows[-1]["central_accuracy"] == pytest.approx(virtual.final_accuracy, abs=1e-3)


@pytest.mark.slow
def test_deployment_engine_superlink_and_two_supernodes(tmp_path: Path) -> None:
    cfg = _cfg("fedavg", num_nodes=2, rounds=2)
    home = tmp_path / "home"
    with local_deployment(2, home=home) as (connection, env):
        superlink = _processes_mentioning(str(home))  # its --database lies in `home`
        assert len(superlink) == 1 and "flower-superlink" in superlink[0]
        port = superlink[0].split("--port ")[1].split()[0]
        assert len(_processes_mentioning(f"--superlink 127.0.0.1:{port}")) == 2
        out = flwr_run(cfg, tmp_path / "results", connection, env, timeout_s=600)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["final_accuracy"] > 0.1
    assert not _processes_mentioning(str(home))  # nothing we started is left
    assert not _processes_mentioning(f"127.0.0.1:{port}")


@pytest.mark.slow
def test_a_failing_serverapp_is_an_error_not_stale_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # left by an earlier run
    cfg = _cfg("fedavg", attack={"kind": "sign_flip", "fraction": 0.25})  # refused on Flower
    with pytest.raises(FlowerRunError, match="wrote no results"):
        run_on_flower(cfg, out, home=tmp_path / "home")
    assert not (out / "summary.json").exists()
    assert not _processes_mentioning(str(tmp_path / "home"))


@pytest.mark.slow
def test_a_run_that_learns_nothing_fails_on_ray_too(tmp_path: Path) -> None:
    # every reply lacks the metric the geometric median is told to weight by: all rejected
    cfg = _cfg("geomedian", rounds=2)
    cfg = cfg.replace(
        strategy=load_dict(
            {
                "strategy": {
                    "name": "geomedian",
                    "clients_per_round": 2,
                    "options": {"weighted_by_key": "no-such-metric"},
                }
            }
        ).strategy
    )
    with pytest.raises(FlowerRunError, match=r"nothing was learnt.*no-such-metric"):
        run_on_flower(cfg, tmp_path / "run", home=tmp_path / "home")
    assert not _processes_mentioning(str(tmp_path / "home"))
