"""Lazy execution: the virtual grid schedules a planned task's reply at push time and trains
only when the reply is needed, in batches — with exactly the results of running each task at
push time."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import same_run
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl.client.plan import planned_examples
from fl.client.training import LocalTraining, batch_schedule
from fl.experiment import run_experiment
from fl.experiment.config import ExperimentConfig, load_config
from fl.protocol.planned import PlannedWork
from fl.sim.devices import DeviceProfile
from fl.sim.grid import VirtualGrid

ROOT = Path(__file__).resolve().parents[1]


def _runs(cfg: ExperimentConfig, tmp_path: Path, variants: dict[str, dict]) -> dict[str, object]:
    out = {}
    for name, changes in variants.items():
        out[name] = run_experiment(cfg.replace(**changes), tmp_path / name)
    return out


def test_planned_examples_is_what_the_batch_schedule_yields() -> None:
    gen = torch.Generator().manual_seed(0)
    for n, bs, steps, epochs in itertools.product(
        (0, 1, 5, 16, 17, 100), (1, 4, 16, 32), (0, 1, 3, 7, 40), (1, 2)
    ):
        hp = LocalTraining(epochs=epochs, steps=steps, batch_size=bs, lr=0.1)
        want = sum(len(b) for b in batch_schedule(n, hp, gen))
        assert planned_examples(n, hp) == want, (n, bs, steps, epochs)


@pytest.mark.slow
def test_fleet_straggler_lazy_equals_eager_with_sequential_and_pool(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "simulations/fleet/straggler.toml", ["time_budget_s=20"])
    runs = _runs(
        cfg,
        tmp_path,
        {
            "eager": {"lazy": False, "executor": "sequential"},
            "lazy": {"lazy": True, "executor": "sequential"},
            "pool": {"lazy": True, "executor": "processes", "workers": 2},
        },
    )
    assert runs["eager"].grid.deferred_batches == []  # type: ignore[attr-defined]
    batches = runs["lazy"].grid.deferred_batches  # type: ignore[attr-defined]
    # concurrency 10: after the first dispatch the tasks still arrive in batches of about 10
    assert len(batches) > 10 and sum(batches) / len(batches) > 5, batches[:20]
    assert runs["pool"].grid.executor.remote_tasks > 0  # type: ignore[attr-defined]
    same_run(tmp_path / "eager", tmp_path / "lazy")
    same_run(tmp_path / "eager", tmp_path / "pool")


@pytest.mark.slow
def test_tifl_lazy_equals_eager_with_sequential_and_pool(tmp_path: Path) -> None:
    cfg = load_config(
        ROOT / "simulations/tifl/tifl.toml",
        ["rounds=8", "num_nodes=20", "data.max_samples=4000", "strategy.options.interval=3"],
    )
    runs = _runs(
        cfg,
        tmp_path,
        {
            "eager": {"lazy": False, "executor": "sequential"},
            "lazy": {"lazy": True, "executor": "sequential"},
            "pool": {"lazy": True, "executor": "processes", "workers": 2},
        },
    )
    assert runs["lazy"].grid.deferred_batches  # type: ignore[attr-defined]
    same_run(tmp_path / "eager", tmp_path / "lazy")
    same_run(tmp_path / "eager", tmp_path / "pool")


def _async_config(**attack: object) -> ExperimentConfig:
    from fl.experiment.config import load_dict

    return load_dict(
        {
            "name": "lazy-async",
            "seed": 3,
            "num_nodes": 12,
            "rounds": 40,
            "data": {"name": "digits"},
            "model": {"name": "mlp", "hidden": [16]},
            "devices": {"kind": "tiers", "compute_jitter": 0.3, "flops_per_s": 1e7},
            "train": {"steps": 2, "batch_size": 16, "lr": 0.1},
            "strategy": {"name": "fedbuff", "clients_per_round": 6},
            "evaluation": {"every": 10},
            "attack": dict(attack),
            "executor": "sequential",
        }
    )


def test_an_omniscient_attacker_still_sees_the_honest_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ALIE attacker pushed among deferred honest tasks observes their trained models, the
    same ones it observes when every task runs at push time."""
    import fl.sim.grid

    seen: dict[str, list[int]] = {}
    observe_calls: list[int] = []
    cfg = _async_config(kind="alie", fraction=0.25)
    for lazy in (False, True):
        observed: list[int] = []
        original = fl.sim.grid.VirtualGrid.push_messages

        def push(
            self: VirtualGrid, messages: object, _obs: list[int] = observed, _push=original
        ) -> list[str]:
            ids = _push(self, messages)
            _obs.append(len(self._recent_honest))
            return ids

        monkeypatch.setattr(fl.sim.grid.VirtualGrid, "push_messages", push)
        res = run_experiment(cfg.replace(lazy=lazy), tmp_path / str(lazy))
        monkeypatch.undo()
        seen[str(lazy)] = observed
        observe_calls.append(sum(res.grid.deferred_batches))  # type: ignore[attr-defined]
    assert observe_calls[0] == 0 and observe_calls[1] > 0  # lazy deferred some tasks
    assert max(seen["True"]) > 0
    same_run(tmp_path / "False", tmp_path / "True")


def test_a_checkpoint_with_deferred_tasks_resumes_to_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import fl.experiment.run
    from fl.experiment import resume_experiment
    from fl.loops.checkpoint import CHECKPOINT_FILE, load
    from fl.schema import to_toml

    cfg = _async_config().replace(checkpoint_every=1)
    save = fl.experiment.run.save
    kept: list[int] = []

    def keep(path: Path, ckpt: object) -> None:
        save(path, ckpt)  # type: ignore[arg-type]
        kept.append(ckpt.grid.deferred)  # type: ignore[attr-defined]
        if ckpt.grid.deferred and not (tmp_path / "kept.pkl").exists():  # type: ignore[attr-defined]
            shutil.copy(path, tmp_path / "kept.pkl")

    monkeypatch.setattr(fl.experiment.run, "save", keep)
    run_experiment(cfg, tmp_path / "full")
    monkeypatch.undo()
    assert any(kept), "no checkpoint was taken while tasks were deferred"
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.toml").write_text(to_toml(cfg.to_dict()))
    shutil.copy(tmp_path / "kept.pkl", part / CHECKPOINT_FILE)
    assert load(part / CHECKPOINT_FILE).grid.deferred > 0
    resume_experiment(part)
    same_run(tmp_path / "full", part)


def _tiny_grid(app: object) -> VirtualGrid:
    device = DeviceProfile(flops_per_s=1e6, down_bps=1e6, up_bps=1e6)
    return VirtualGrid(app, [device] * 2)  # type: ignore[arg-type]


def _train_message(grid: VirtualGrid, node: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord([np.zeros(3)])})
    return Message(content, grid.node_id(node), "train", ttl=1e6, group_id="1")


def test_an_app_that_declares_nothing_runs_at_push_time() -> None:
    calls: list[int] = []
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        calls.append(context.node_id)
        metrics = MetricRecord({"num-examples": 1})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    grid = _tiny_grid(app)
    grid.push_messages([_train_message(grid, 0)])
    assert calls == [grid.node_id(0)] and grid.deferred == 0


def test_a_reply_that_differs_from_its_plan_stops_the_run() -> None:
    class Liar(ClientApp):
        def planned_work(self, message: Message, context: Context) -> PlannedWork:
            return PlannedWork(work_flops=10.0, up_bytes=0)

    app = Liar()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"work-flops": 99.0})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    grid = _tiny_grid(app)
    ids = grid.push_messages([_train_message(grid, 1)])
    assert grid.deferred == 1
    with pytest.raises(RuntimeError, match=r"planned 10\.0"):
        grid.pull_messages(ids)
