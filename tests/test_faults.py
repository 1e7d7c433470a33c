"""Faults: crashes, dropouts, stragglers, bad replies, too few valid replies, a raising
strategy; plus a fuzz test of configs and replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl.experiment import RunFailedError, run_experiment
from fl.experiment.config import ExperimentConfig, load_dict
from fl.experiment.tables import read_csv
from fl.loops.checkpoint import CHECKPOINT_FILE, load
from fl.protocol.replies import split_replies
from fl.schema import ConfigError


def _cfg(**over: Any) -> ExperimentConfig:
    tree: dict[str, Any] = {
        "name": "faults",
        "seed": 2,
        "num_nodes": 10,
        "rounds": 10,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"steps": 4, "batch_size": 16, "lr": 0.1},
        "strategy": {"name": "fedavg", "clients_per_round": 5},
    }
    tree.update(over)
    return load_dict(tree)


def _learns(result: Any) -> bool:
    return result.final_accuracy > result.rows[0]["central_accuracy"] + 0.1


def test_crashing_clients_are_recorded_with_their_error_and_training_goes_on(
    tmp_path: Path,
) -> None:
    result = run_experiment(_cfg(faults={"crash_prob": 0.3}), tmp_path)
    assert len(result.rows) == 11 and _learns(result)
    assert sum(r["num_failed"] for r in result.rows[1:]) > 5
    crashed = [m for m in read_csv(tmp_path / "messages.csv") if m["status"] == "client-error"]
    assert crashed and all("injected crash" in m["error"] for m in crashed)


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("nan_prob", "NaN"),
        ("corrupt_prob", "has shape"),
        ("bad_metrics_prob", "num-examples"),
    ],
)
def test_bad_replies_are_rejected_counted_and_never_aggregated(fault: str, needle: str) -> None:
    result = run_experiment(_cfg(faults={fault: 0.3}))
    rejected = [r["rejected"] for r in result.rows[1:] if r["num_rejected"]]
    assert rejected and all(needle in text or "metric" in text for text in rejected)
    assert _learns(result)
    state = result.arrays.to_torch_state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())


def test_nodes_going_offline_mid_round_are_lost_not_fatal() -> None:
    devices = {"kind": "uniform", "flops_per_s": 2e5, "availability": "onoff",
               "mean_online_s": 30.0, "mean_offline_s": 10.0}  # fmt: skip
    result = run_experiment(_cfg(devices=devices, round_timeout_s=120.0))
    statuses = {o.status for o in result.grid.outcomes.values()}
    assert statuses & {"expired", "lost-offline"} and _learns(result)


def test_stragglers_past_the_deadline_are_dropped() -> None:
    devices = {"kind": "tiers", "flops_per_s": 2e5}
    result = run_experiment(_cfg(devices=devices, round_timeout_s=5.0))
    assert sum(r["num_dropped"] for r in result.rows[1:]) > 0
    assert all(r["train_duration"] <= 5.0 + 1e-9 for r in result.rows[1:])


def test_too_few_valid_replies_keep_the_previous_model_and_say_so() -> None:
    cfg = _cfg(faults={"nan_prob": 1.0}, rounds=3)
    with pytest.raises(RunFailedError, match=r"none aggregated.*NaN or Inf") as failure:
        run_experiment(cfg)  # nothing was learnt: an error, with the rows kept
    result = failure.value.run
    assert [r["aggregated"] for r in result.rows[1:]] == [False, False, False]
    assert all(r["num_rejected"] == 5 for r in result.rows[1:])
    from fl import client

    ws = client.workspace(cfg.to_run_config())
    initial = client._model(cfg.model, ws.data, cfg.seed).state_dict()
    final = result.arrays.to_torch_state_dict()
    assert all(torch.equal(initial[k], final[k]) for k in initial)


class _Raising(FedAvg):
    """Aggregation that breaks in round 4."""

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        if server_round == 4:
            raise RuntimeError("aggregator bug")
        return super().aggregate_train(server_round, replies)


def test_a_raising_strategy_does_not_lose_the_checkpoint(tmp_path: Path) -> None:
    cfg = _cfg(checkpoint_every=1, strategy={"name": "fedavg"})
    strategy = _Raising(fraction_train=0.5, fraction_evaluate=0.0)
    with pytest.raises(RuntimeError, match="aggregator bug"):
        run_experiment(cfg, tmp_path, strategy=strategy)
    ckpt = load(tmp_path / CHECKPOINT_FILE)
    assert ckpt.loop.next_round == 4 and len(ckpt.loop.rows) == 4  # rounds 0-3 kept
    assert (tmp_path / "config.toml").is_file()


def test_async_strategies_survive_faults() -> None:
    cfg = _cfg(
        rounds=60,
        faults={"crash_prob": 0.2, "nan_prob": 0.1, "corrupt_prob": 0.1},
        strategy={"name": "adasgd", "clients_per_round": 4},
        evaluation={"every": 20},
    )
    result = run_experiment(cfg)
    assert result.stop_reason == "updates" and _learns(result)
    assert sum(r["num_rejected"] for r in result.rows[1:]) > 0
    assert sum(r["num_failed"] for r in result.rows[1:]) > 0


# ------------------------------------------------------------------------------------- fuzz

BASE = _cfg().to_dict()
KEYS = [
    "num_nodes", "rounds", "seed", "round_timeout_s", "checkpoint_every", "data.name",
    "data.partition", "data.alpha", "data.max_samples", "model.name", "model.hidden",
    "devices.kind", "devices.flops_per_s", "devices.stragglers", "train.lr", "train.steps",
    "train.batch_size", "strategy.name", "strategy.clients_per_round", "strategy.options",
    "evaluation.every", "attack.kind", "attack.fraction", "faults.crash_prob", "no_such_key",
    "data.no_such_key",
]  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-5, 100), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(-3, 3), max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=3))
def test_fuzzed_configs_load_or_fail_with_a_config_error(changes: dict[str, Any]) -> None:
    import copy

    tree = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = tree
        *path, last = dotted.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    try:
        load_dict(tree)
    except ConfigError as exc:
        assert str(exc)  # a message, naming the problem
    # any other exception type escapes and fails the test


def _reply(content: RecordDict) -> Message:
    ins = Message(RecordDict({"config": ConfigRecord({})}), 1001, "train")
    ins.metadata.__dict__["_message_id"] = "m1"
    return Message(content=content, reply_to=ins)


ARR = st.one_of(
    st.builds(
        lambda s: np.full(s, 1.0, dtype=np.float32), st.sampled_from([(4, 3), (12,), (3, 4)])
    ),
    st.builds(lambda v: np.full((4, 3), v, dtype=np.float32),
              st.floats(allow_nan=True, allow_infinity=True, width=32)),
    st.builds(lambda: np.ones((4, 3), dtype=np.float64)),
    st.builds(lambda: np.ones((4, 3), dtype=np.int32)),
)  # fmt: skip
METRIC = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=150, deadline=None)
@given(
    arrays=st.dictionaries(st.sampled_from(["w", "b", "x"]), ARR, max_size=3),
    metrics=st.dictionaries(st.sampled_from(["num-examples", "work-flops", "loss"]), METRIC),
    two_records=st.booleans(),
)
def test_fuzzed_replies_are_accepted_only_when_sound(
    arrays: dict[str, np.ndarray], metrics: dict[str, Any], two_records: bool
) -> None:
    reference = ArrayRecord({"w": Array(np.zeros((4, 3), dtype=np.float32))})
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()})})
    content["metrics"] = MetricRecord(metrics)
    if two_records:
        content["more"] = MetricRecord({"num-examples": 1})
    keep, rejected = split_replies([_reply(content)], reference)
    assert len(keep) + len(rejected) == 1
    if keep:  # sound: one model of the right layout, finite, with a valid weight
        rec = keep[0].content["arrays"]
        assert set(rec) == {"w"} and rec["w"].numpy().shape == (4, 3)
        assert np.isfinite(rec["w"].numpy()).all()
        n = keep[0].content["metrics"]["num-examples"]
        assert np.isfinite(n) and n >= 0
    else:
        assert next(iter(rejected.values()))  # with the reason
