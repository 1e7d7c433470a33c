"""The Flower ClientApp every simulated (or real) node runs: local training and evaluation.

The node finds its data from `context.node_config["partition-id"]` and the experiment from
`context.run_config` (the flat form of `ExperimentConfig`), exactly as a ClientApp on Flower's
own engines does. Per-request hyper-parameters in the message's config (`lr`,
`local-epochs`, `local-steps`, `batch-size`, `proximal-mu`, ...) override the config's
`[train]` section, so a strategy can tune them per node (FedProx's mu, I-Prof's batch size).

Replies carry `num-examples` (the node's training-set size, FedAvg's weight), the training
loss, `examples-processed` and `work-flops` (examples × training FLOPs per example), which the
virtual grid divides by the device's speed to get compute time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl.config import RUN_ONLY_KEYS, ExperimentConfig
from fl.data import DataConfig, FederatedData, load_federated
from fl.models import (
    ModelConfig,
    build_model,
    forward_flops_per_example,
    train_flops_per_example,
)
from fl.payload import decode
from fl.sim.attacks import corrupt_data, data_attack_from_config
from fl.sim.grid import COMPUTE_S_KEY
from fl.strategies.asynchronous import LABEL_COUNTS_KEY
from fl.training import LocalTraining, TrainStats, derive_seed, evaluate, train_local


class _ProjectClientApp(ClientApp):
    """This module's ClientApp. It pickles as a reference to `app` (checkpoints, worker
    processes), so a restored grid still runs — and the executors still recognise — `app`.
    It only reads the messages it is given (`reads_only`): the virtual grid may hand every
    node the same content instead of a private copy."""

    reads_only = True

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _project_app, ()


def _project_app() -> ClientApp:
    return app


app = _ProjectClientApp()


@lru_cache(maxsize=4)
def federated_data(data: DataConfig, num_nodes: int, seed: int) -> FederatedData:
    """Load (once per process) the partitioned dataset the experiment describes."""
    return load_federated(data, num_nodes, seed)


@dataclass
class Workspace:
    """Per-process state shared by all nodes: data, one long-lived model, FLOP costs."""

    config: ExperimentConfig
    data: FederatedData
    model: torch.nn.Module
    train_flops: float  # per example
    eval_flops: float  # per example
    # name → (the serialized bytes object, its decoded tensor): every node of a round is sent
    # the same bytes objects (the grid copies records, not payloads), so each array is decoded
    # once per round instead of once per node. Holding the bytes keeps their identity unique.
    decoded: dict[str, tuple[bytes, torch.Tensor]] = field(default_factory=dict)

    def decode(self, record: ArrayRecord) -> dict[str, torch.Tensor]:
        """The tensors of `record`, each payload decoded only once (shared between calls with
        the same payload: read them only)."""
        state = {}
        for name, array in record.items():
            hit = self.decoded.get(name)
            if hit is not None and hit[0] is array.data:
                state[name] = hit[1]
            else:
                tensor = torch.from_numpy(decode(array))
                self.decoded[name] = (array.data, tensor)
                state[name] = tensor
        return state


def make_workspace(cfg: ExperimentConfig) -> Workspace:
    """Build the data and one model instance for `cfg` (parameters are loaded per task)."""
    data = federated_data(cfg.data, cfg.num_nodes, cfg.seed)
    model = _model(cfg.model, data, cfg.seed)
    dtype = torch.long if data.vocab_size else torch.float32
    return Workspace(
        config=cfg,
        data=data,
        model=model,
        train_flops=train_flops_per_example(model, data.input_shape, dtype),
        eval_flops=forward_flops_per_example(model, data.input_shape, dtype),
    )


def _model(model_cfg: ModelConfig, data: FederatedData, seed: int) -> torch.nn.Module:
    return build_model(model_cfg, data.input_shape, data.num_classes, data.vocab_size, seed=seed)


_WORKSPACES: dict[tuple[tuple[str, Any], ...], Workspace] = {}


def workspace(run_config: Mapping[str, Any]) -> Workspace:
    """The cached workspace for this run_config (one per experiment per process)."""
    key = tuple(sorted((k, v) for k, v in run_config.items() if k not in RUN_ONLY_KEYS))
    ws = _WORKSPACES.get(key)
    if ws is None:
        if len(_WORKSPACES) >= 4:
            _WORKSPACES.clear()
        ws = make_workspace(ExperimentConfig.from_run_config(run_config))
        _WORKSPACES[key] = ws
    return ws


def local_training(cfg: ExperimentConfig, request: ConfigRecord | None) -> LocalTraining:
    """Local hyper-parameters: the config's [train] section, overridden by the request."""
    r: Mapping[str, Any] = request or {}
    t = cfg.train
    return LocalTraining(
        epochs=int(r.get("local-epochs", t.epochs)),
        steps=int(r.get("local-steps", t.steps)),
        batch_size=int(r.get("batch-size", t.batch_size)),
        lr=float(r.get("lr", t.lr)),
        momentum=float(r.get("momentum", t.momentum)),
        weight_decay=float(r.get("weight-decay", t.weight_decay)),
        proximal_mu=float(r.get("proximal-mu", 0.0)),
    )


def _partition(context: Context, ws: Workspace) -> int:
    """This node's partition index, checked against the experiment's number of nodes (on
    Flower's engines the federation's node count and `num_nodes` must agree)."""
    pid = int(context.node_config["partition-id"])  # type: ignore[arg-type]
    parts = context.node_config.get("num-partitions")
    n = ws.config.num_nodes
    if (parts is not None and int(parts) != n) or not 0 <= pid < n:  # type: ignore[arg-type]
        raise ValueError(
            f"this node is partition {pid} of {parts}, but the experiment has num_nodes = {n}: "
            f"run it with {n} SuperNodes (num-supernodes={n}) or set num_nodes"
        )
    return pid


def _next_call(context: Context) -> int:
    """Count this node's tasks in its persistent state (a per-node RNG stream index)."""
    rec = context.state.config_records.get("fl.node")
    calls = int(rec["calls"]) if rec is not None else 0  # type: ignore[arg-type]
    context.state["fl.node"] = ConfigRecord({"calls": calls + 1})
    return calls


def _request_config(msg: Message) -> ConfigRecord | None:
    records = list(msg.content.config_records.values())
    return records[0] if records else None


@dataclass
class TrainTask:
    """A training request, resolved: what `train_local` needs, and what the reply reports."""

    ws: Workspace
    x: torch.Tensor
    y: torch.Tensor
    hp: LocalTraining
    seed: int
    start: dict[str, torch.Tensor]  # the model sent (read only: shared with other tasks)


def prepare_train(msg: Message, context: Context) -> TrainTask:
    """Resolve a train message for this node: its data, hyper-parameters, seed (poisoned data
    if a Byzantine wrapper asked for it) and the sent model, decoded."""
    ws = workspace(context.run_config)
    pid = _partition(context, ws)
    request = _request_config(msg)
    hp = local_training(ws.config, request)
    x_tr, y_tr, _, _ = ws.data.node(pid)
    start = ws.decode(next(iter(msg.content.array_records.values())))
    server_round = int(request["server-round"]) if request and "server-round" in request else 0  # type: ignore[arg-type]
    seed = derive_seed(ws.config.seed, pid, server_round, _next_call(context))
    attack = data_attack_from_config(request or {})
    if attack is not None:  # a Byzantine wrapper asked this node to poison its own data
        x_tr, y_tr = corrupt_data(x_tr, y_tr, attack, ws.data.num_classes, seed)
    return TrainTask(ws=ws, x=x_tr, y=y_tr, hp=hp, seed=seed, start=start)


def train_reply(
    msg: Message,
    task: TrainTask,
    stats: TrainStats,
    state: Mapping[str, torch.Tensor],
    compute_s: float,
) -> Message:
    """The reply to a train message: the trained model and what the training did."""
    metrics = MetricRecord(
        {
            "train_loss": stats.loss,
            "num-examples": len(task.y),
            "examples-processed": stats.examples,
            "work-flops": stats.examples * task.ws.train_flops,
            # Measured on the device; the virtual grid replaces it with the virtual time.
            COMPUTE_S_KEY: compute_s,
        }
    )
    if stats.label_counts:
        metrics[LABEL_COUNTS_KEY] = stats.label_counts
    content = RecordDict({"arrays": ArrayRecord(dict(state)), "metrics": metrics})
    return Message(content=content, reply_to=msg)


def finish_train(msg: Message, task: TrainTask) -> Message:
    """Train the workspace model from the sent model on the task's data; the reply."""
    model = task.ws.model
    model.load_state_dict(task.start, strict=True)
    t0 = time.perf_counter()
    stats = train_local(model, task.x, task.y, task.hp, task.seed, label_classes(task.ws))
    compute_s = time.perf_counter() - t0
    return train_reply(msg, task, stats, model.state_dict(), compute_s)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the sent model, train on this node's partition, reply with the new model."""
    return finish_train(msg, prepare_train(msg, context))


def label_classes(ws: Workspace) -> int:
    """Classes to count labels over (0 for next-character models: no label vector)."""
    return 0 if ws.data.vocab_size else int(ws.data.num_classes)


@app.query()
def device_features(msg: Message, context: Context) -> Message:
    """Reply with what this device says about itself (`device.<name>` entries of its node
    config): the features a profiler such as I-Prof predicts speed from."""
    feats: dict[str, int | float | list[int] | list[float]] = {
        k: float(v)
        for k, v in context.node_config.items()
        if k.startswith("device.") and isinstance(v, int | float) and not isinstance(v, bool)
    }
    return Message(content=RecordDict({"features": MetricRecord(feats)}), reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the sent model on this node's local test split (train split if it has none)."""
    ws = workspace(context.run_config)
    pid = _partition(context, ws)
    x_tr, y_tr, x_te, y_te = ws.data.node(pid)
    if len(y_te) == 0:
        x_te, y_te = x_tr, y_tr
    ws.model.load_state_dict(ws.decode(next(iter(msg.content.array_records.values()))))
    loss, acc = evaluate(ws.model, x_te, y_te)
    metrics = MetricRecord(
        {
            "eval_loss": loss,
            "eval_acc": acc,
            "num-examples": len(y_te),
            "work-flops": len(y_te) * ws.eval_flops,
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
