"""The fast client executors give the sequential executor's results.

Batched (torch.func) training equals sequential training to float tolerance; the process pool
gives bit-identical results for any number of workers.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import torch

from fl.client.training import LocalTraining, train_local
from fl.data import DataConfig, load_federated
from fl.executors import choose_executor, make_executor
from fl.executors.vmap import BatchTask, batchable, train_batched
from fl.experiment import RunResult, run_experiment
from fl.experiment.config import ConfigError, load_dict
from fl.models import ModelConfig, build_model

DROP = {"wall_time", "aggregation_wall_s"}


def _config(**top: Any) -> Any:
    tree: dict[str, Any] = {
        "name": "executors",
        "seed": 3,
        "num_nodes": 16,
        "rounds": 4,
        "data": {"name": "digits", "partition": "dirichlet", "alpha": 0.5},  # unequal sizes
        "model": {"name": "mlp", "hidden": [32]},
        "devices": {"kind": "tiers", "flops_per_s": 1e7, "compute_jitter": 0.2},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        "strategy": {"name": "fedavg", "clients_per_round": 8},
    }
    tree.update(top)
    return load_dict(tree)


def _rows(r: RunResult) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in DROP} for row in r.rows]


def _state(r: RunResult) -> dict[str, torch.Tensor]:
    return r.arrays.to_torch_state_dict()


def _hp(i: int) -> LocalTraining:
    """Different hyper-parameters per client: epochs or steps, batch sizes, momentum, wd, mu."""
    return LocalTraining(
        epochs=1 + i % 2,
        steps=[0, 0, 7, 0, 3][i % 5],
        batch_size=[8, 16, 5][i % 3],
        lr=0.02 * (1 + i % 3),
        momentum=[0.0, 0.9][i % 2],
        weight_decay=[0.0, 1e-3][(i // 2) % 2],
        proximal_mu=[0.0, 0.1][(i // 3) % 2],
    )


@pytest.mark.parametrize("model_name", ["mlp", "logreg", "cnn"])
def test_batched_training_equals_train_local_task_by_task(model_name: str) -> None:
    data = load_federated(DataConfig(name="digits", partition="dirichlet", alpha=0.3), 12, 0)
    model = build_model(ModelConfig(name=model_name, hidden=(16,)), data.input_shape, 10, seed=0)
    assert batchable(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    tasks = []
    for i in range(12):
        x, y, _, _ = data.node(i)
        if i == 5:  # a client with no data takes no step and keeps the model
            x, y = x[:0], y[:0]
        tasks.append(BatchTask(x, y, start, _hp(i), seed=100 + i, num_classes=10))
    sizes = {len(t.y) for t in tasks}
    assert len(sizes) > 5, sizes  # genuinely unequal datasets (masks and idle clients)

    batched = train_batched(model, tasks)
    after_batched = torch.default_generator.get_state()
    for t, (params, stats) in zip(tasks, batched, strict=True):
        m = copy.deepcopy(model)
        m.load_state_dict(start)
        ref = train_local(m, t.x, t.y, t.hp, t.seed, num_classes=10)
        assert (stats.examples, stats.steps, stats.label_counts) == (
            ref.examples,
            ref.steps,
            ref.label_counts,
        )
        if ref.examples:
            assert stats.loss == pytest.approx(ref.loss, rel=1e-5, abs=1e-6)
        for name, p in m.named_parameters():
            torch.testing.assert_close(params[name], p.detach(), rtol=1e-4, atol=1e-5)
    # like train_local, the default generator is left seeded with the last task's seed
    assert torch.equal(after_batched, torch.default_generator.get_state())
    # the architecture model is not trained
    assert all(torch.equal(p, start[n]) for n, p in model.named_parameters())
    assert batched[5][1].steps == 0
    assert all(torch.equal(p, start[n]) for n, p in batched[5][0].items())


def test_models_with_dropout_or_recurrent_layers_are_not_batchable() -> None:
    assert not batchable(build_model(ModelConfig(name="mlp", dropout=0.2), (64,), 10))
    assert batchable(build_model(ModelConfig(name="mlp", dropout=0.0), (64,), 10))
    lstm = build_model(ModelConfig(name="char_lstm"), (20,), 30, vocab_size=30)
    assert not batchable(lstm)
    with pytest.raises(ValueError, match="cannot be trained batched"):
        train_batched(lstm, [])


def test_batched_experiment_equals_sequential_to_float_tolerance() -> None:
    fedprox = {"name": "fedprox", "clients_per_round": 8, "options": {"proximal_mu": 0.1}}
    cfg = _config(strategy=fedprox)
    seq = run_experiment(dataclasses.replace(cfg, executor="sequential"))
    bat = run_experiment(dataclasses.replace(cfg, executor="batched"))
    assert seq.grid.executor.name == "sequential" and bat.grid.executor.name == "batched"  # type: ignore[attr-defined]
    sa, sb = _state(seq), _state(bat)
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-5)
    for ra, rb in zip(_rows(seq), _rows(bat), strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], float):
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-4), k
            else:
                assert rb[k] == ra[k], k
    # the same virtual times: every reply reported the same work
    assert [o.arrives_at for o in seq.grid.outcomes.values()] == pytest.approx(  # type: ignore[attr-defined]
        [o.arrives_at for o in bat.grid.outcomes.values()]  # type: ignore[attr-defined]
    )
    again = run_experiment(dataclasses.replace(cfg, executor="batched"))
    assert all(torch.equal(_state(again)[k], sb[k]) for k in sb)  # itself bit for bit


@pytest.mark.slow
def test_process_pool_gives_identical_results_for_any_worker_count() -> None:
    cfg = _config(
        model={"name": "cnn", "cnn_channels": [4, 8]},
        attack={"kind": "sign_flip", "fraction": 0.25},  # wrapped nodes run in the parent
        strategy={"name": "tifl", "clients_per_round": 8},
    )
    runs = {
        name: run_experiment(dataclasses.replace(cfg, executor=ex, workers=w))
        for name, ex, w in [
            ("seq", "sequential", 0),
            ("w2", "processes", 2),
            ("w3", "processes", 3),
        ]
    }
    ref = runs.pop("seq")
    for name, r in runs.items():
        assert r.grid.executor.remote_tasks >= 4 * 6, name  # type: ignore[attr-defined]
        assert _rows(r) == _rows(ref), name
        assert [vars(o) for o in r.grid.outcomes.values()] == [  # type: ignore[attr-defined]
            vars(o)
            for o in ref.grid.outcomes.values()  # type: ignore[attr-defined]
        ], name
        assert all(torch.equal(_state(r)[k], v) for k, v in _state(ref).items()), name


def test_auto_choice_follows_the_model_and_the_workload() -> None:
    from fl import client

    small = _config()
    assert choose_executor(small, client.workspace(small.to_run_config())) == "batched"
    cnn = _config(
        data={"name": "mnist", "max_samples": 2000},
        model={"name": "cnn"},  # 28×28 convolutions: no gain from batching
        train={"steps": 1, "batch_size": 16, "lr": 0.05},
        rounds=1,
        workers=2,
    )
    ws = client.workspace(cnn.to_run_config())
    assert choose_executor(cnn, ws) == "sequential"  # too short to pay for workers
    long = dataclasses.replace(cnn, rounds=2000)
    assert choose_executor(long, ws) == "processes"
    assert choose_executor(dataclasses.replace(long, workers=1), ws) == "sequential"
    dropout = dataclasses.replace(small, model=ModelConfig(name="mlp", dropout=0.5))
    ws_dropout = client.workspace(dropout.to_run_config())
    assert choose_executor(dropout, ws_dropout) == "sequential"
    with pytest.raises(ValueError, match="cannot be trained batched"):
        make_executor(dataclasses.replace(dropout, executor="batched"), ws_dropout)


def test_bad_executor_settings_are_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="executor"):
        _config(executor="gpu")
    with pytest.raises(ConfigError, match="workers"):
        _config(workers=-1)


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:\tZ") for line in fh)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_exit_when_the_parent_is_killed() -> None:
    script = (
        "import os, time\n"
        "from fl.executors.processes import _new_pool\n"
        "pool = _new_pool(2, 1)\n"
        "futures = [pool.submit(time.sleep, 0.2) for _ in range(4)]\n"
        "[f.result() for f in futures]\n"
        "print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), workers
