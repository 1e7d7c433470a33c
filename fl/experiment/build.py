"""A config built into one experiment: its workspace (data, model), devices, grid and strategy.

`Experiment.build(cfg)` does everything that is a deterministic function of the config, once: the
node's workspace is built from the config itself (never by flattening the config into a Flower
run_config and parsing it back), the device population, the virtual grid with the attack and
fault wrappers of its nodes and its executor, and the strategy. `fl.experiment.run` runs it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl import client
from fl.client.training import evaluate, recall_per_class
from fl.executors import make_executor
from fl.experiment.config import ExperimentConfig
from fl.loops.checkpoint import Checkpoint
from fl.protocol import keys
from fl.sim.attacks import ByzantineClientApp, fast_lane, lies_in_replies, malicious_nodes
from fl.sim.devices import DeviceProfile, make_population
from fl.sim.faults import FaultyClientApp
from fl.sim.grid import FIRST_NODE_ID, VirtualGrid
from fl.strategies.registry import build_strategy


def node_workspace(cfg: ExperimentConfig) -> client.Workspace:
    """The workspace the project's ClientApp uses for `cfg`'s nodes in this process."""
    return client.workspace(cfg.to_run_config(), client.ClientConfig.of(cfg))


@dataclass
class Experiment:
    """Everything a run of `config` needs, built once."""

    config: ExperimentConfig
    workspace: client.Workspace
    grid: Grid  # a VirtualGrid, unless the run is on one of Flower's engines
    strategy: Strategy
    initial: ArrayRecord

    @classmethod
    def build(
        cls,
        cfg: ExperimentConfig,
        *,
        grid: Grid | None = None,
        strategy: Strategy | None = None,
        resume: Checkpoint | None = None,
    ) -> Experiment:
        """Build `cfg` (on `grid` if given, with `strategy` if given, or from `resume`)."""
        seed_everything(cfg.seed)
        ws = node_workspace(cfg)
        if resume is not None:
            grid, strategy = resume.grid, resume.strategy
            resume.grid.executor = make_executor(cfg, ws)  # checkpoints keep no executor
        grid = grid if grid is not None else build_grid(cfg)
        strategy = strategy or build_experiment_strategy(cfg)
        initial = ArrayRecord(client._model(cfg.model, ws.data, cfg.seed).state_dict())
        return cls(cfg, ws, grid, strategy, initial)


def seed_everything(seed: int) -> None:
    """Seed python `random` (Flower samples nodes with it), numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def train_config_record(cfg: ExperimentConfig) -> ConfigRecord:
    """The [train] section as the config every train message carries."""
    t = cfg.train
    return ConfigRecord(
        {
            "lr": t.lr,
            keys.LOCAL_EPOCHS: t.epochs,
            keys.LOCAL_STEPS: t.steps,
            keys.BATCH_SIZE: t.batch_size,
            "momentum": t.momentum,
            keys.WEIGHT_DECAY: t.weight_decay,
        }
    )


def central_evaluator(
    ws: client.Workspace, class_recall: bool = False
) -> Callable[[int, ArrayRecord], dict[str, float]]:
    """Server-side evaluation of the global model on the held-out test set (with each class's
    recall if `class_recall`)."""
    model = client._model(ws.config.model, ws.data, ws.config.seed)
    x, y = ws.data.test.take(np.arange(len(ws.data.test)))

    per_class = class_recall and not ws.data.vocab_size

    def fn(_round: int, arrays: ArrayRecord) -> dict[str, float]:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, x, y)
        out = {"loss": loss, "accuracy": acc}
        if per_class:
            recall = recall_per_class(model, x, y, ws.data.num_classes)
            out.update({f"recall_{c}": float(r) for c, r in enumerate(recall)})
        return out

    return fn


def build_grid(
    cfg: ExperimentConfig, devices: Sequence[DeviceProfile] | None = None
) -> VirtualGrid:
    """The virtual grid for `cfg`: its device population running the project's ClientApp,
    with the config's attack wrapped around the ClientApp of its malicious nodes.

    `devices` given are used as they are; otherwise they are `experiment_devices(cfg)`."""
    devices = devices if devices is not None else experiment_devices(cfg)
    return VirtualGrid(
        client.app,
        devices,
        run_config=cfg.to_run_config(),
        seed=cfg.seed,
        evaluation_cost=not cfg.evaluation.free,
        client_app_for=node_apps(cfg),
        executor=make_executor(cfg, node_workspace(cfg)),
        lazy=cfg.lazy,
    )


def experiment_devices(cfg: ExperimentConfig) -> Sequence[DeviceProfile]:
    """The device population of `cfg`'s virtual grid: `make_population`, then, if the attack
    lies ``fast_lane``, permuted so the malicious nodes hold the fastest devices."""
    devices: Sequence[DeviceProfile] = make_population(cfg.devices, cfg.num_nodes, cfg.seed)
    if "fast_lane" in cfg.attack.lies:
        devices = fast_lane(devices, malicious_nodes(cfg.attack, cfg.num_nodes, cfg.seed))
    return devices


def node_apps(cfg: ExperimentConfig) -> Callable[[int], Any] | None:
    """Node id → the ClientApp wrapper a node runs instead of the honest app (a Byzantine
    attacker and/or fault injection; None: the honest app). A dict's `get`, so grids that
    hold it can be checkpointed."""
    byz = byzantine_apps(cfg)
    if not cfg.faults.active:
        return byz
    apps = {
        FIRST_NODE_ID + i: FaultyClientApp(
            (byz(FIRST_NODE_ID + i) if byz else None) or client.app, cfg.faults, i, cfg.seed
        )
        for i in range(cfg.num_nodes)
    }
    return apps.get


def byzantine_apps(cfg: ExperimentConfig) -> Callable[[int], Any] | None:
    """Node id → the Byzantine wrapper of a malicious node (None for honest nodes). Only an
    attack kind or a lie told in replies needs one (``fast_lane`` alone is in the devices)."""
    if not lies_in_replies(cfg.attack) or cfg.attack.fraction <= 0:
        return None
    bad = malicious_nodes(cfg.attack, cfg.num_nodes, cfg.seed)
    apps = {
        FIRST_NODE_ID + i: ByzantineClientApp(client.app, cfg.attack, i, cfg.seed)
        for i in sorted(bad)
    }
    return apps.get


def build_experiment_strategy(cfg: ExperimentConfig) -> Strategy:
    """The strategy the config names, selecting `clients_per_round` nodes per round."""
    s = cfg.strategy
    return build_strategy(
        s.name,
        s.options,
        num_nodes=cfg.num_nodes,
        clients_per_round=s.clients_per_round,
        federated_eval_fraction=cfg.evaluation.federated_fraction
        if cfg.evaluation.federated
        else 0.0,
        num_rounds=cfg.rounds,
        seed=cfg.seed,
    )
