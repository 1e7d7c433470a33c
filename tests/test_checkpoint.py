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
import torch

from fl.checkpoint import CHECKPOINT_FILE, load
from fl.config import ExperimentConfig, load_dict
from fl.experiment import resume_experiment, run_experiment
from fl.results import read_csv
from fl.schema import to_toml

WALL = ("wall_time", "aggregation_wall_s")


def _tifl(rounds: int = 120) -> ExperimentConfig:
    return load_dict(
        {
            "name": "ckpt",
            "seed": 4,
            "num_nodes": 12,
            "rounds": rounds,
            "checkpoint_every": 1,
            "data": {"name": "digits"},
            "model": {"name": "mlp", "hidden": [16]},
            "devices": {"kind": "tiers", "compute_jitter": 0.3, "flops_per_s": 1e7},
            "train": {"steps": 2, "batch_size": 16, "lr": 0.1},
            "strategy": {
                "name": "tifl",
                "clients_per_round": 3,
                "options": {"policy": "adaptive", "num_tiers": 3, "interval": 2},
            },
            "evaluation": {"every": 5},
        }
    )


def _same_run(a: Path, b: Path) -> None:
    sa, sb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ra, rb = read_csv(a / "rounds.csv"), read_csv(b / "rounds.csv")
    strip = [{k: v for k, v in r.items() if k not in WALL} for r in ra]
    assert strip == [{k: v for k, v in r.items() if k not in WALL} for r in rb]
    assert (a / "messages.csv").read_text() == (b / "messages.csv").read_text()


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import fl.experiment

    cfg = _tifl(rounds=12)
    save = fl.experiment.save

    def keep_round_5(path: Path, ckpt: object) -> None:  # a copy of the checkpoint of round 5
        save(path, ckpt)  # type: ignore[arg-type]
        if ckpt.loop.next_round == 6:  # type: ignore[attr-defined]
            shutil.copy(path, tmp_path / "round5.pkl")

    monkeypatch.setattr(fl.experiment, "save", keep_round_5)
    run_experiment(cfg, tmp_path / "full")
    monkeypatch.undo()
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.toml").write_text(to_toml(cfg.to_dict()))
    shutil.copy(tmp_path / "round5.pkl", part / CHECKPOINT_FILE)
    assert load(part / CHECKPOINT_FILE).loop.next_round == 6
    resume_experiment(part)
    _same_run(tmp_path / "full", part)


@pytest.mark.slow
def test_sigkill_at_three_random_points_then_resume(tmp_path: Path) -> None:
    cfg = _tifl()
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
        killed_at.append(load(out / CHECKPOINT_FILE).loop.next_round - 1)
        resume_experiment(out)
        _same_run(tmp_path / "reference", out)
    assert all(0 < r < cfg.rounds for r in killed_at), killed_at
