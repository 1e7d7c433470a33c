"""Runs that learn nothing end in an error that says why, on the virtual grid (the same check
on Flower's Ray engine is in tests/test_flower_app.py), and strategies say why a round
aggregated nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl.experiment import RunFailedError, load_dict, run_experiment
from fl.experiment.run import FAILURE_FILE


def _cfg(strategy: dict, **over: object):  # type: ignore[no-untyped-def]
    tree: dict = {
        "seed": 3,
        "num_nodes": 6,
        "rounds": 3,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"steps": 2, "batch_size": 16},
        "strategy": strategy,
    }
    tree.update(over)
    return load_dict(tree)


def test_geometric_median_rejecting_every_reply_is_an_error_naming_the_reason(
    tmp_path: Path,
) -> None:
    cfg = _cfg({"name": "geomedian", "options": {"weighted_by_key": "no-such-metric"}})
    with pytest.raises(RunFailedError, match=r"none aggregated.*missing metric 'no-such-metric'"):
        run_experiment(cfg, tmp_path)
    assert "no-such-metric" in (tmp_path / FAILURE_FILE).read_text()
    assert (tmp_path / "rounds.csv").is_file()  # the rows are kept for a look


def test_an_asynchronous_run_whose_every_task_crashes_stops_and_fails(tmp_path: Path) -> None:
    cfg = _cfg({"name": "adasgd", "clients_per_round": 3}, rounds=20, faults={"crash_prob": 1.0})
    with pytest.raises(RunFailedError, match=r"no progress.*InjectedCrash"):
        run_experiment(cfg, tmp_path)


def test_a_run_that_learns_clears_an_older_failure_note(tmp_path: Path) -> None:
    (tmp_path / FAILURE_FILE).write_text("old\n")
    run_experiment(_cfg({"name": "fedavg"}), tmp_path)
    assert not (tmp_path / FAILURE_FILE).exists()
