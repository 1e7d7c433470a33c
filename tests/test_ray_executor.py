"""The Ray executor: the virtual grid in this process, the ClientApp on Ray actors — with
exactly the sequential executor's results, for 1 and 2 workers, when a worker is killed, and
across a checkpoint and resume. The end-to-end tests start a local Ray with 2 CPUs."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import same_run
from flwr.app import Array, ArrayRecord, Message, RecordDict

from fl.executors import make_executor
from fl.executors.ray import RayExecutor, dump_tasks, load_tasks, shared_payloads
from fl.experiment import resume_experiment, run_experiment
from fl.experiment.build import node_workspace
from fl.experiment.config import ExperimentConfig, load_config, load_dict
from fl.loops.checkpoint import CHECKPOINT_FILE
from fl.protocol.flower_internals import set_task_identity
from fl.schema import ConfigError, to_toml

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's FutureWarning
ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


def _message(payload: bytes | None, node: int) -> Message:
    set_task_identity(1)
    arrays = {"w": Array(np.frombuffer(payload, np.float32).reshape(-1))} if payload else {}
    content = RecordDict({"arrays": ArrayRecord(arrays)})  # type: ignore[arg-type]
    return Message(content, dst_node_id=node, message_type="train")


def test_a_shared_payload_is_pickled_once_and_restored_to_every_message() -> None:
    big = np.arange(4096, dtype=np.float32).tobytes()
    small = np.arange(8, dtype=np.float32).tobytes()  # under SHARED_MIN_BYTES: pickled inline
    msgs = [_message(big, 1), _message(big, 2), _message(small, 3), _message(None, 4)]
    # Array(np) copies: make the first two messages share one bytes object, as the grid does
    msgs[1].content["arrays"]["w"].data = msgs[0].content["arrays"]["w"].data
    payloads = shared_payloads(msgs)
    assert len(payloads) == 1 and payloads[0] is msgs[0].content["arrays"]["w"].data
    shared = {id(p): k for k, p in enumerate(payloads)}
    blob = dump_tasks([(m, None) for m in msgs], shared)
    assert len(blob) < len(big)  # the 16 KiB payload is not in the blob
    back = load_tasks(blob, payloads)
    for (m, _), orig in zip(back, msgs, strict=True):
        assert m.metadata.dst_node_id == orig.metadata.dst_node_id
        assert m.content["arrays"].keys() == orig.content["arrays"].keys()
        for k in m.content["arrays"]:
            assert m.content["arrays"][k].data == orig.content["arrays"][k].data
    assert back[0][0].content["arrays"]["w"].data is back[1][0].content["arrays"]["w"].data


def test_ray_config_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match="ray_worker_cpus"):
        load_dict({"ray_worker_cpus": 0})
    with pytest.raises(ConfigError, match="ray_worker_gpus"):
        load_dict({"ray_worker_gpus": -1})
    cfg = load_dict({"executor": "ray", "workers": 3, "ray_worker_cpus": 0.5})
    ex = make_executor(cfg, node_workspace(cfg))
    assert isinstance(ex, RayExecutor) and ex.workers == 3 and ex.cpus == 0.5
    assert not ray.is_initialized()  # nothing starts before the first push


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs for the module (started once: it takes ~5 s)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _tifl() -> ExperimentConfig:
    return load_config(
        ROOT / "simulations/tifl/tifl.toml",
        ["rounds=6", "num_nodes=16", "data.max_samples=3000", "strategy.options.interval=3"],
    )


def _adasgd() -> ExperimentConfig:
    return load_config(
        ROOT / "simulations/fleet/straggler.toml",
        ["time_budget_s=6", "data.max_samples=4000", "evaluation.every=20"],
    )


def _remote(run: Any) -> int:
    return int(run.grid.executor.remote_tasks)


@pytest.mark.slow
@pytest.mark.parametrize("make", [_tifl, _adasgd], ids=["tifl", "adasgd"])
def test_ray_gives_the_sequential_results_with_1_and_2_workers(
    tmp_path: Path, local_ray: None, make: Any
) -> None:
    cfg = make()
    ref = run_experiment(cfg.replace(executor="sequential"), tmp_path / "seq")
    for w in (1, 2):
        run = run_experiment(cfg.replace(executor="ray", workers=w), tmp_path / f"ray{w}")
        assert run.grid.executor.name == "ray"  # type: ignore[attr-defined]
        assert _remote(run) > 20, w
        assert run.grid.executor.restarts == 0  # type: ignore[attr-defined]
        same_run(tmp_path / "seq", tmp_path / f"ray{w}")
    assert ref.final_accuracy is not None and ref.final_accuracy > 0.2  # learnt: chance is 0.1


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_results_do_not_change(
    tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    cfg = _tifl()
    run_experiment(cfg.replace(executor="sequential"), tmp_path / "seq")
    original = RayExecutor.run
    calls = []

    def run_killing(self: RayExecutor, tasks: Any) -> Any:
        calls.append(len(tasks))
        if len(calls) == 3:  # the third push: its first worker dies before the push reaches it
            os.kill(self.pids()[0], signal.SIGKILL)
        return original(self, tasks)

    monkeypatch.setattr(RayExecutor, "run", run_killing)
    with caplog.at_level("WARNING", logger="fl"):
        run = run_experiment(cfg.replace(executor="ray", workers=2), tmp_path / "killed")
    assert run.grid.executor.restarts >= 1  # type: ignore[attr-defined]
    assert "Ray worker 0 died" in caplog.text
    summary = (tmp_path / "killed" / "summary.json").read_text()
    assert '"worker_restarts": 1' in summary
    same_run(tmp_path / "seq", tmp_path / "killed")


@pytest.mark.slow
def test_a_ray_run_resumes_from_its_checkpoint_to_the_same_result(
    tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fl.experiment.run

    cfg = _tifl().replace(executor="ray", workers=2, checkpoint_every=1)
    save = fl.experiment.run.save
    kept: list[int] = []

    def keep(path: Path, ckpt: Any) -> None:
        save(path, ckpt)
        kept.append(ckpt.loop.next_round)
        if len(kept) == 3:
            shutil.copy(path, tmp_path / "third.pkl")

    monkeypatch.setattr(fl.experiment.run, "save", keep)
    run_experiment(cfg, tmp_path / "full")
    monkeypatch.undo()
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.toml").write_text(to_toml(cfg.to_dict()))
    shutil.copy(tmp_path / "third.pkl", part / CHECKPOINT_FILE)
    resumed = resume_experiment(part)
    assert resumed.grid.executor.name == "ray"  # type: ignore[attr-defined]
    same_run(tmp_path / "full", part)
