"""A node's working state: the experiment's data, one long-lived model, its training tasks.

One `Workspace` per experiment per process serves every node the process runs (the virtual
grid's nodes, a process-pool worker's, a SuperNode's): data loaded and partitioned once, one model
whose parameters are loaded per task, FLOP costs counted once. `prepare_train` / `finish_train`
are the two halves of a training task, so the batched executor can train many prepared tasks
together and reply exactly as the ClientApp does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fl.client.config import CLIENT_KEYS, ClientConfig
from fl.client.poisoning import corrupt_data, data_attack_from_config
from fl.client.training import LocalTraining, TrainStats, derive_seed, train_local
from fl.data import DataConfig, FederatedData, load_federated
from fl.models import (
    ModelConfig,
    build_model,
    forward_flops_per_example,
    train_flops_per_example,
)
from fl.protocol import decode, keys, records


@lru_cache(maxsize=4)
def federated_data(data: DataConfig, num_nodes: int, seed: int) -> FederatedData:
    """Load (once per process) the partitioned dataset the experiment describes."""
    return load_federated(data, num_nodes, seed)


@dataclass
class Workspace:
    """Per-process state shared by all nodes: data, one long-lived model, FLOP costs."""

    config: ClientConfig
    data: FederatedData
    model: torch.nn.Module
    train_flops: float  # per example
    eval_flops: float  # per example
    # name → (the serialized bytes object, its decoded tensor): every node of a round is sent
    # the same bytes objects (the grid copies records, not payloads), so each array is decoded
    # once per round instead of once per node. Holding the bytes keeps their identity unique.
    decoded: dict[str, tuple[bytes, torch.Tensor]] = field(default_factory=dict)
    key: tuple[tuple[str, Any], ...] = ()  # its `workspace_key` once cached

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


def make_workspace(cfg: ClientConfig, data: FederatedData | None = None) -> Workspace:
    """Build the data (unless given: a Ray worker is handed the driver's) and one model
    instance for `cfg` (parameters are loaded per task)."""
    if data is None:
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


def workspace_key(run_config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The part of a run_config a workspace depends on (data, model, training, seed, nodes)."""
    return tuple(sorted((k, v) for k, v in run_config.items() if k.split(".")[0] in CLIENT_KEYS))


# id(run_config) → (that run_config, its workspace): a node's Context keeps one run_config
# dict for the whole run, so its workspace is found without re-sorting the config per task.
_BY_CONFIG: dict[int, tuple[Mapping[str, Any], Workspace]] = {}


def workspace(run_config: Mapping[str, Any], cfg: ClientConfig | None = None) -> Workspace:
    """The cached workspace for this run_config (one per experiment per process), built from
    `cfg` when given (an experiment in this process) or parsed from the run_config (a node on
    Flower's engines, a spawned worker). A run_config is read once per object: it must not
    change afterwards (Flower's never do)."""
    hit = _BY_CONFIG.get(id(run_config))
    if cfg is None and hit is not None and hit[0] is run_config:  # noqa: SIM102
        if _WORKSPACES.get(hit[1].key) is hit[1]:  # not evicted since
            return hit[1]
    key = workspace_key(run_config)
    ws = _WORKSPACES.get(key)
    if ws is None:
        if len(_WORKSPACES) >= 4:
            _WORKSPACES.clear()
        ws = make_workspace(cfg if cfg is not None else ClientConfig.from_run_config(run_config))
        ws.key = key
        _WORKSPACES[key] = ws
    if len(_BY_CONFIG) >= 100_000:
        _BY_CONFIG.clear()
    _BY_CONFIG[id(run_config)] = (run_config, ws)
    return ws


def adopt_workspace(
    key: tuple[tuple[str, Any], ...], cfg: ClientConfig, data: FederatedData
) -> Workspace:
    """Make `data` this process's workspace for the run_configs whose `workspace_key` is `key`
    (a Ray worker, handed the experiment's data through the object store instead of loading
    it): the ClientApp then finds it as if it had built it."""
    ws = make_workspace(cfg, data)
    ws.key = key
    if len(_WORKSPACES) >= 4:
        _WORKSPACES.clear()
    _WORKSPACES[key] = ws
    return ws


def local_training(cfg: ClientConfig, request: ConfigRecord | None) -> LocalTraining:
    """Local hyper-parameters: the config's [train] section, overridden by the request."""
    r: Mapping[str, Any] = request or {}
    t = cfg.train
    return LocalTraining(
        epochs=int(r.get(keys.LOCAL_EPOCHS, t.epochs)),
        steps=int(r.get(keys.LOCAL_STEPS, t.steps)),
        batch_size=int(r.get(keys.BATCH_SIZE, t.batch_size)),
        lr=float(r.get(keys.LR, t.lr)),
        momentum=float(r.get(keys.MOMENTUM, t.momentum)),
        weight_decay=float(r.get(keys.WEIGHT_DECAY, t.weight_decay)),
        proximal_mu=float(r.get(keys.PROXIMAL_MU, 0.0)),
    )


def _partition(context: Context, ws: Workspace) -> int:
    """This node's partition index, checked against the experiment's number of nodes (on
    Flower's engines the federation's node count and `num_nodes` must agree)."""
    pid = int(context.node_config[keys.PARTITION_ID])  # type: ignore[arg-type]
    parts = context.node_config.get(keys.NUM_PARTITIONS)
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
    """The message's first ConfigRecord (the request's hyper-parameters), if any."""
    return next((r for r in msg.content.values() if isinstance(r, ConfigRecord)), None)


def sent_model(msg: Message) -> ArrayRecord:
    """The message's first ArrayRecord (the model sent); StopIteration if it has none."""
    return next(r for r in msg.content.values() if isinstance(r, ArrayRecord))


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
    start = ws.decode(sent_model(msg))
    sent_round = request.get(keys.SERVER_ROUND) if request else None
    server_round = int(sent_round) if sent_round is not None else 0  # type: ignore[arg-type]
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
    """The reply to a train message: the trained model and what the training did.

    Built as Flower builds it (`ArrayRecord(state)`, `MetricRecord`, `RecordDict`) with the
    same bytes, but without per-item validation and with each array's .npy header cached
    (`fl.protocol.records`): the values are the ones this function computes."""
    values: dict[str, Any] = {
        keys.TRAIN_LOSS: stats.loss,
        keys.NUM_EXAMPLES: len(task.y),
        keys.EXAMPLES_PROCESSED: stats.examples,
        keys.WORK_FLOPS: stats.examples * task.ws.train_flops,
        # Measured on the device; the virtual grid replaces it with the virtual time.
        keys.COMPUTE_S: compute_s,
    }
    if stats.label_counts:
        values[keys.LABEL_COUNTS] = list(stats.label_counts)
    if records.fast():
        content = records.record_dict(
            {"arrays": records.state_record(state), "metrics": records.metric_record(values)}
        )
    else:  # Flower's own constructors (the reference)
        content = RecordDict({"arrays": ArrayRecord(dict(state)), "metrics": MetricRecord(values)})
    return Message(content=content, reply_to=msg)


def finish_train(msg: Message, task: TrainTask) -> Message:
    """Train the workspace model from the sent model on the task's data; the reply."""
    model = task.ws.model
    model.load_state_dict(task.start, strict=True)
    t0 = time.perf_counter()
    stats = train_local(model, task.x, task.y, task.hp, task.seed, label_classes(task.ws))
    compute_s = time.perf_counter() - t0
    return train_reply(msg, task, stats, model.state_dict(), compute_s)


def label_classes(ws: Workspace) -> int:
    """Classes to count labels over (0 for next-character models: no label vector)."""
    return 0 if ws.data.vocab_size else int(ws.data.num_classes)


def clear_workspaces() -> None:
    """Forget every cached workspace and dataset (a benchmark that times loading calls this)."""
    federated_data.cache_clear()
    _WORKSPACES.clear()
    _BY_CONFIG.clear()
