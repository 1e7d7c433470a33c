"""Checkpoint and resume: a run killed with SIGKILL and resumed ends exactly like an
uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import same_run

from fl.experiment import resume_experiment, run_experiment
from fl.experiment.config import ExperimentConfig, load_dict
from fl.loops.checkpoint import CHECKPOINT_FILE, load
from fl.schema import to_toml

STRATEGIES = {
    "tifl": {
        "name": "tifl",
        "clients_per_round": 3,
        "options": {"policy": "adaptive", "num_tiers": 3, "interval": 2},
    },
    # asynchronous: a checkpoint holds work in flight (grid replies, strategy tasks, buffer)
    "adasgd": {"name": "adasgd", "clients_per_round": 4, "options": {"buffer_size": 2}},
}


def _config(strategy: str, rounds: int = 120) -> ExperimentConfig:
    return load_dict(
        {
            "name": "ckpt",
            "seed": 4,
            "num_nodes": 12,
            "rounds": rounds * (4 if strategy == "adasgd" else 1),
            "checkpoint_every": 1,
            "data": {"name": "digits"},
            "model": {"name": "mlp", "hidden": [16]},
            "devices": {"kind": "tiers", "compute_jitter": 0.3, "flops_per_s": 1e7},
            "train": {"steps": 2, "batch_size": 16, "lr": 0.1},
            "strategy": STRATEGIES[strategy],
            "evaluation": {"every": 5},
        }
    )


def _run_keeping(
    cfg: ExperimentConfig, out: Path, nth: int, copy_to: Path, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """Run `cfg` into `out`, keeping a copy of its `nth` checkpoint at `copy_to`; the
    `next_round` of every checkpoint saved."""
    import shutil

    import fl.experiment.run

    save = fl.experiment.run.save
    kept: list[int] = []

    def keep(path: Path, ckpt: object) -> None:
        save(path, ckpt)  # type: ignore[arg-type]
        kept.append(ckpt.loop.next_round)  # type: ignore[attr-defined]
        if len(kept) == nth:
            shutil.copy(path, copy_to)

    monkeypatch.setattr(fl.experiment.run, "save", keep)
    run_experiment(cfg, out)
    monkeypatch.undo()
    return kept


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    import shutil

    cfg = _config(strategy, rounds=12)
    kept = _run_keeping(cfg, tmp_path / "full", 6, tmp_path / "sixth.pkl", monkeypatch)
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.toml").write_text(to_toml(cfg.to_dict()))
    shutil.copy(tmp_path / "sixth.pkl", part / CHECKPOINT_FILE)
    ckpt = load(part / CHECKPOINT_FILE)
    assert ckpt.loop.next_round == kept[5] and 0 < kept[5] < cfg.rounds
    if strategy == "adasgd":
        assert ckpt.loop.extra["in_flight"]  # work was in flight when it was saved
    resume_experiment(part)
    same_run(tmp_path / "full", part)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_sigkill_at_three_random_points_then_resume(tmp_path: Path, strategy: str) -> None:
    cfg = _config(strategy)
    config = tmp_path / "cfg.toml"
    config.write_text(to_toml(cfg.to_dict()))
    run_experiment(cfg, tmp_path / "reference")
    rng = np.random.default_rng(7)
    killed_at = []
    for k in range(3):
        out = tmp_path / f"killed{k}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "fl.cli", "run", str(config), "--out", str(out), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 1.5)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        killed_at.append(load(out / CHECKPOINT_FILE).loop.next_round)
        resume_experiment(out)
        same_run(tmp_path / "reference", out)
    assert all(0 < r < cfg.rounds for r in killed_at), killed_at


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    cfg = _config("tifl", rounds=3)
    run_experiment(cfg, tmp_path)
    changed = cfg.replace(train=load_dict({"train": {"lr": 5.0}}).train)
    (tmp_path / "config.toml").write_text(to_toml(changed.to_dict()))
    with pytest.raises(ValueError, match="train"):
        resume_experiment(tmp_path)


def test_resume_may_change_how_clients_run_but_not_what(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """executor/workers are run-only keys: a checkpoint written without them (as before they
    existed) resumes with the process pool, and the pool gives the uninterrupted result."""
    from fl.loops.checkpoint import save

    cfg = _config("tifl", rounds=6).replace(executor="sequential")
    _run_keeping(cfg, tmp_path / "full", 3, tmp_path / "third.pkl", monkeypatch)
    part = tmp_path / "part"
    part.mkdir()
    old = load(tmp_path / "third.pkl")
    for key in ("executor", "workers"):
        old.config.pop(key)
    save(part / CHECKPOINT_FILE, old)
    (part / "config.toml").write_text(
        to_toml(cfg.replace(executor="processes", workers=2).to_dict())
    )
    result = resume_experiment(part)
    assert result.grid.executor.remote_tasks > 0  # type: ignore[attr-defined]
    same_run(tmp_path / "full", part)


def test_a_state_that_cannot_be_pickled_disables_checkpoints_not_the_run(tmp_path: Path) -> None:
    from flwr.serverapp.strategy import FedAvg

    cfg = _config("tifl", rounds=3).replace(strategy=load_dict({}).strategy)
    strategy = FedAvg(fraction_evaluate=0.0, train_metrics_aggr_fn=lambda r, k: None)  # type: ignore[arg-type,return-value]
    result = run_experiment(cfg, tmp_path, strategy=strategy)
    assert len(result.rows) == 4 and not (tmp_path / CHECKPOINT_FILE).exists()
