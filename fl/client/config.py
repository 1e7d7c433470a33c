"""What a node needs to know of the experiment: data, model, local training, seed, node count.

`ClientConfig` is the part of an experiment config the ClientApp reads. On Flower's engines it is
parsed from the flat `context.run_config` (`ClientConfig.from_run_config`); the rest of the
experiment (strategy, devices, attacks) is the server's business and never loaded on a node, so
`import fl.client` stays light.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fl.data import DataConfig
from fl.models import ModelConfig
from fl.schema import ConfigError, from_dict, unflatten


@dataclass(frozen=True)
class TrainConfig:
    """Local training on each node (sent to clients in every train message)."""

    epochs: int = 1  # local epochs (ignored when steps > 0)
    steps: int = 0  # if > 0: exactly this many mini-batch steps per round instead of epochs
    batch_size: int = 16  # local mini-batch size (an I-Prof profiler may choose it per task)
    lr: float = 0.1  # local SGD learning rate
    momentum: float = 0.0  # local SGD momentum (reset every round)
    weight_decay: float = 0.0  # local SGD L2 weight decay

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", self.epochs, "≥ 1")
        _check(self.steps >= 0, "train.steps", self.steps, "≥ 0")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "≥ 1")
        _check(self.lr > 0 and math.isfinite(self.lr), "train.lr", self.lr, "> 0")
        _check(0 <= self.momentum < 1, "train.momentum", self.momentum, "in [0, 1)")
        _check(
            0 <= self.weight_decay < math.inf,
            "train.weight_decay",
            self.weight_decay,
            "a finite number ≥ 0",
        )


@dataclass(frozen=True)
class ClientConfig:
    """The experiment as a node sees it."""

    seed: int = 0
    num_nodes: int = 20
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ClientConfig:
        """The node's part of a flat run_config (every other key is ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        own = {k: v for k, v in run_config.items() if k.split(".")[0] in names}
        return from_dict(cls, unflatten(own))

    @classmethod
    def of(cls, experiment: Any) -> ClientConfig:
        """The node's part of an experiment config (any object with these fields)."""
        return cls(
            seed=experiment.seed,
            num_nodes=experiment.num_nodes,
            data=experiment.data,
            model=experiment.model,
            train=experiment.train,
        )


CLIENT_KEYS = tuple(f.name for f in dataclasses.fields(ClientConfig))
"""Top-level config keys a node reads: its workspace is shared by runs that agree on them."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)
