"""Strategy names a config may use, and how a config becomes a strategy object.

Every stock Flower message-API strategy is available as a baseline; the project's own
strategies register here as they land. Options are checked against the constructor's
signature at load time, so a misspelt option is an error, not silently ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from fl.schema import ConfigError

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
}

# Set from `clients_per_round` and the evaluation section, not by hand.
_MANAGED = {"fraction_train", "min_train_nodes", "min_available_nodes"}


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    factory = STRATEGIES[name]
    target: Callable[..., object] = factory
    return {
        p.name: p
        for p in inspect.signature(target).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def check_strategy(name: str, options: Mapping[str, Any]) -> None:
    """Raise ConfigError for an unknown strategy name or option."""
    if name not in STRATEGIES:
        raise ConfigError(
            f"strategy.name = {name!r} is unknown; known strategies: {', '.join(STRATEGIES)}"
        )
    params = _parameters(name)
    for key in options:
        if key not in params:
            raise ConfigError(
                f"strategy.options.{key} is not an option of {name!r}; "
                f"options: {', '.join(sorted(set(params) - _MANAGED))}"
            )
        if key in _MANAGED:
            raise ConfigError(
                f"strategy.options.{key}: set strategy.clients_per_round instead "
                "(it fixes the number of nodes selected per round)"
            )


def build_strategy(
    name: str,
    options: Mapping[str, Any],
    *,
    num_nodes: int,
    clients_per_round: int = 0,
    federated_eval_fraction: float = 0.0,
) -> Strategy:
    """Construct strategy `name` selecting exactly `clients_per_round` nodes (0 = all online).

    Flower samples `max(int(online × fraction_train), min_train_nodes)` nodes; with
    fraction_train = k/N and min_train_nodes = k this is exactly k whenever all N are online.
    """
    check_strategy(name, options)
    params = _parameters(name)
    kwargs = dict(options)
    k = clients_per_round or num_nodes
    kwargs["fraction_train"] = k / num_nodes
    kwargs["min_train_nodes"] = k if clients_per_round else 1
    kwargs["min_available_nodes"] = k if clients_per_round else 1
    if "fraction_evaluate" in params and "fraction_evaluate" not in options:
        kwargs["fraction_evaluate"] = federated_eval_fraction
    if "min_evaluate_nodes" in params and "min_evaluate_nodes" not in options:
        kwargs["min_evaluate_nodes"] = 1
    try:
        return STRATEGIES[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"strategy {name!r} rejected its options {dict(options)}: {exc}") from exc
