"""The experiment configuration: one schema for TOML files, `--set` and Flower's run_config.

A config names the dataset and its partition, the model, the device population, local
training, the strategy and its options, the stopping rule and the seed. Loading validates
everything (types, ranges, names) before any work starts, and errors name the key and value.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl.client.config import TrainConfig
from fl.data import DataConfig
from fl.data.config import validate_config
from fl.executors.base import EXECUTORS
from fl.models import MODELS, ModelConfig
from fl.schema import (
    ConfigError,
    flatten,
    flatten_plain,
    from_dict,
    parse_value,
    set_dotted,
    to_dict,
    unflatten,
)
from fl.sim.attacks import AttackConfig
from fl.sim.devices import POPULATIONS, PopulationConfig
from fl.sim.faults import FaultConfig
from fl.strategies.registry import ASYNC_STRATEGIES, build_strategy


@dataclass(frozen=True)
class StrategyConfig:
    """Which server strategy, how many clients per round, and its constructor options."""

    name: str = "fedavg"  # a strategy name (`fl-sim strategies` lists them)
    clients_per_round: int = 0  # 0: every online node
    options: dict[str, Any] = field(default_factory=dict)  # passed to the strategy constructor

    def __post_init__(self) -> None:
        _check(
            self.clients_per_round >= 0,
            "strategy.clients_per_round",
            self.clients_per_round,
            "≥ 0 (0 = all online nodes)",
        )


@dataclass(frozen=True)
class EvalConfig:
    """How the global model is evaluated."""

    central: bool = True  # server-side on the held-out test set, after every `every` rounds
    every: int = 1  # evaluate every N rounds / model updates
    federated: bool = False  # also run the strategy's federated evaluation on nodes
    federated_fraction: float = 0.2  # fraction of nodes asked to evaluate, when federated
    free: bool = False  # True: federated evaluation messages take no virtual time
    target_accuracy: float = 0.0  # if > 0: time/rounds to reach it are reported
    class_recall: bool = False  # also report each class's recall (central_recall_<class>)

    def __post_init__(self) -> None:
        _check(self.every >= 1, "evaluation.every", self.every, "≥ 1")
        _check(
            0 < self.federated_fraction <= 1,
            "evaluation.federated_fraction",
            self.federated_fraction,
            "in (0, 1]",
        )
        _check(
            0 <= self.target_accuracy <= 1,
            "evaluation.target_accuracy",
            self.target_accuracy,
            "in [0, 1]",
        )


RUN_ONLY_KEYS = (
    "executor",
    "workers",
    "lazy",
    "ray_address",
    "ray_worker_cpus",
    "ray_worker_gpus",
)
"""Config keys that say how a run is computed, not what it computes: clients' workspaces are
shared across them, and a resumed run may change them."""


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: data + model + devices + strategy, run in virtual time."""

    name: str = "experiment"  # the run's name: results go to <output_dir>/<name>
    seed: int = 0  # seeds data, devices, strategy and training: same seed, same bytes
    num_nodes: int = 20  # simulated devices, each with its own partition of the data
    rounds: int = 20  # rounds (synchronous) or model updates (asynchronous) to run at most
    time_budget_s: float = 0.0  # stop once the virtual clock passes this (0: no budget)
    round_timeout_s: float = 3600.0  # the server's deadline per round, virtual seconds
    server_time_factor: float = 0.0  # virtual seconds charged per wall second of aggregation
    output_dir: str = "results"  # parent folder of the results folder
    torch_threads: int = 1  # intra-op threads; small per-client models are fastest on one
    executor: str = "auto"  # how clients run: auto, sequential, batched, processes, ray
    workers: int = 0  # workers of the "processes" / "ray" executor (0: one per core / CPU)
    ray_address: str = ""  # "ray" executor: cluster to join ("": $RAY_ADDRESS, else local)
    ray_worker_cpus: float = 1.0  # "ray" executor: CPUs Ray reserves per worker
    ray_worker_gpus: float = 0.0  # "ray" executor: GPUs reserved per worker (training: CPU)
    lazy: bool = True  # train only when a reply is needed, in batches (same results)
    checkpoint_every: int = 0  # save a resumable checkpoint every N rounds / model updates (0: off)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    devices: PopulationConfig = field(default_factory=PopulationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        _check(self.num_nodes >= 1, "num_nodes", self.num_nodes, "≥ 1")
        _check(self.rounds >= 1, "rounds", self.rounds, "≥ 1")
        _check(
            0 <= self.time_budget_s < math.inf,
            "time_budget_s",
            self.time_budget_s,
            "a finite number ≥ 0",
        )
        _check(
            0 < self.round_timeout_s < math.inf,
            "round_timeout_s",
            self.round_timeout_s,
            "a finite number > 0",
        )
        _check(
            0 <= self.server_time_factor < math.inf,
            "server_time_factor",
            self.server_time_factor,
            "a finite number ≥ 0",
        )
        _check(self.seed >= 0, "seed", self.seed, "≥ 0")
        _check(self.torch_threads >= 1, "torch_threads", self.torch_threads, "≥ 1")
        _check(
            self.executor in EXECUTORS,
            "executor",
            self.executor,
            f"one of {', '.join(EXECUTORS)}",
        )
        _check(self.workers >= 0, "workers", self.workers, "≥ 0 (0 = one per core)")
        _check(
            0 < self.ray_worker_cpus < math.inf,
            "ray_worker_cpus",
            self.ray_worker_cpus,
            "a finite number > 0",
        )
        _check(
            0 <= self.ray_worker_gpus < math.inf,
            "ray_worker_gpus",
            self.ray_worker_gpus,
            "a finite number ≥ 0",
        )
        _check(
            self.checkpoint_every >= 0,
            "checkpoint_every",
            self.checkpoint_every,
            "≥ 0 (0 = no checkpoints)",
        )
        try:  # every data field, before any data is loaded
            validate_config(self.data, self.num_nodes, self.seed)
        except ConfigError as exc:
            raise ConfigError(exc.key or "data", exc.value, exc.rule) from None
        _check(
            self.model.name in MODELS, "model.name", self.model.name, f"one of {', '.join(MODELS)}"
        )
        _check(
            self.devices.kind in POPULATIONS,
            "devices.kind",
            self.devices.kind,
            f"one of {', '.join(POPULATIONS)}",
        )
        for node in self.devices.stragglers:
            _check(
                -self.num_nodes <= node < self.num_nodes,
                "devices.stragglers",
                self.devices.stragglers,
                f"node indices in [-num_nodes, num_nodes) (num_nodes = {self.num_nodes})",
            )
        _check(
            self.strategy.clients_per_round <= self.num_nodes,
            "strategy.clients_per_round",
            self.strategy.clients_per_round,
            f"≤ num_nodes ({self.num_nodes})",
        )
        own = self.strategy.options.get("clients_per_round")  # TiFL's, if set as an option
        _check(
            not isinstance(own, int) or own <= self.num_nodes,
            "strategy.options.clients_per_round",
            own,
            f"≤ num_nodes ({self.num_nodes})",
        )
        # Constructing a strategy is cheap: doing it here makes every option error a load error.
        build_strategy(
            self.strategy.name,
            self.strategy.options,
            num_nodes=self.num_nodes,
            clients_per_round=self.strategy.clients_per_round,
            num_rounds=self.rounds,
            seed=self.seed,
        )

    @property
    def asynchronous(self) -> bool:
        """Whether the strategy is asynchronous (then `rounds` counts model updates)."""
        return self.strategy.name in ASYNC_STRATEGIES

    # ------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        """The resolved config as a nested dict (what results/config.toml holds)."""
        return to_dict(self)

    def to_run_config(self) -> dict[str, Any]:
        """Flat scalar dict for Flower's `context.run_config` (ClientApps rebuild it)."""
        return flatten(self.to_dict())

    def to_flower_run_config(self) -> dict[str, Any]:
        """The flat form for `flwr run --run-config` and pyproject's [tool.flwr.app.config]:
        always the same keys (lists as "[..]" strings, None as "none", the strategy's options
        as one inline-table string)."""
        return flatten_plain(self.to_dict(), {"strategy.options"})

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ExperimentConfig:
        """Rebuild from a flat run_config (keys this schema does not know are ignored, since
        Flower adds its own)."""
        names = {f.name for f in dataclasses.fields(cls)}
        own = {k: v for k, v in run_config.items() if k.split(".")[0] in names}
        return load_dict(unflatten(own))

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with some top-level fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def load_dict(tree: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a nested dict into an ExperimentConfig."""
    return from_dict(ExperimentConfig, tree)


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `key.sub=value` strings (values parsed as TOML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        set_dotted(tree, key.strip(), parse_value(text.strip()))
    return tree


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a TOML config file, apply `--set` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        tree = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return load_dict(apply_overrides(tree, overrides))
