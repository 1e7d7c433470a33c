"""Strategy names a config may use, and how a config becomes a strategy object.

Every stock Flower message-API strategy is available as a baseline; the project's own
strategies register here as they land. Options are checked against the constructor's
signature at load time, so a misspelt option is an error, not silently ignored.
"""

from __future__ import annotations

import functools
import inspect
import logging
import operator
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Union

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

from fl.schema import ConfigError, coerce
from fl.strategies.adasgd import AdaSGD, AsyncSGD, DynSGD
from fl.strategies.aggregation import AGGREGATORS
from fl.strategies.asynchronous import AsyncStrategy
from fl.strategies.fedasync import FedAsync
from fl.strategies.fedbuff import FedBuff
from fl.strategies.geomedian import BlockGeometricMedian, GeometricMedian
from fl.strategies.robust import RobustAggregation
from fl.strategies.tifl import TiFL

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
    "tifl": TiFL,
    "geomedian": GeometricMedian,
    "bgmd": BlockGeometricMedian,
    "robust": RobustAggregation,
    "adasgd": AdaSGD,
    "dynsgd": DynSGD,
    "asyncsgd": AsyncSGD,
    "fedasync": FedAsync,
    "fedbuff": FedBuff,
}

ASYNC_STRATEGIES = tuple(
    name
    for name, factory in STRATEGIES.items()
    if isinstance(factory, type) and issubclass(factory, AsyncStrategy)
)

# Strategies whose `aggregator` option names a rule of fl.strategies.aggregation (not a strategy).
RULE_STRATEGIES = (*ASYNC_STRATEGIES, "robust")

# Strategies whose aggregation another strategy (TiFL) may borrow: their aggregate_train needs
# only the replies (and, for ours, the model sent, passed through `set_reference`). FedAvgM and
# the FedOpt family keep server state set in their own configure_train, so they are not here.
PLUGGABLE_AGGREGATORS = (
    "fedavg",
    "fedprox",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "geomedian",
    "bgmd",
)

# Filled in by build_strategy from the experiment, unless given as options. An asynchronous
# strategy's `concurrency` (nodes kept busy) is the config's clients_per_round.
_INJECTED = ("clients_per_round", "concurrency", "num_rounds", "seed")


class _DropExpectedWarnings(logging.Filter):
    """Hide Flower's warning that federated evaluation is off: here that is the default (the
    server evaluates centrally, and configs build strategies to validate them), not a mistake."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fraction_evaluate is set to 0.0" not in str(record.msg)


logging.getLogger("flwr").addFilter(_DropExpectedWarnings())

# Set from `clients_per_round` and the evaluation section, not by hand.
_MANAGED = {"fraction_train", "min_train_nodes", "min_available_nodes"}


def _init_classes(name: str) -> list[Any]:
    """The classes whose constructors make up strategy `name`'s options: the class, then its
    bases while constructors pass ``**kwargs`` on to their parent."""
    factory = STRATEGIES[name]
    out: list[Any] = []
    for cls in getattr(factory, "__mro__", (factory,)):
        if "__init__" not in vars(cls) and cls is not factory:
            continue
        out.append(cls)
        params = inspect.signature(cls).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return out


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    """Strategy `name`'s constructor options, with resolved type annotations."""
    out: dict[str, inspect.Parameter] = {}
    for cls in _init_classes(name):
        try:
            hints = typing.get_type_hints(cls.__init__)  # inherited if cls defines none
        except Exception:  # an unresolvable annotation: check that option's type no further
            hints = {}
        for p in inspect.signature(cls).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(p.name, p.replace(annotation=hints.get(p.name, Any)))
    if "aggregator" in out and "aggregator_options" not in out:
        out["aggregator_options"] = inspect.Parameter(
            "aggregator_options",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Mapping[str, Any] | None,
        )
    return out


def strategy_options(name: str) -> dict[str, inspect.Parameter]:
    """The options a config may give strategy `name` (``strategy.options``): its constructor
    parameters, less those set from `clients_per_round` and the evaluation section."""
    return {k: p for k, p in _parameters(name).items() if k not in _MANAGED}


def _config_type(tp: Any) -> Any:
    """The type an option takes in a config: a Strategy object (TiFL's `aggregator`) is named
    by a string; `Sequence[X]` is a list; the rest as annotated."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = tuple(_config_type(a) for a in typing.get_args(tp))
        return functools.reduce(operator.or_, args)
    if isinstance(tp, type) and issubclass(tp, Strategy):
        return str
    return tp


def _rule_from_message(key: str, text: str) -> str | None:
    """A constructor's complaint as a rule: "beta = 0 is invalid: must be in (0, 1]" -> "in (0,
    1]"; None for a free-form complaint."""
    match = re.match(rf"^\W*{re.escape(key)}\b.*?\bmust be (.+)$", text, re.DOTALL)
    return match.group(1) if match else None


def check_strategy(
    name: str, options: Mapping[str, Any], where: str = "strategy.options"
) -> dict[str, Any]:
    """Raise ConfigError for an unknown strategy name, an unknown option or a value of the wrong
    type (checked against the constructor's annotations); return the options with values
    converted to their annotated types (ints to floats, ``"none"`` to None)."""
    if name not in STRATEGIES:
        raise ConfigError(
            f"strategy.name = {name!r} is unknown; known strategies: {', '.join(STRATEGIES)}"
        )
    if not isinstance(options, Mapping):
        raise ConfigError(where, options, "a table of constructor options")
    params = _parameters(name)
    if "aggregator" in options and name in RULE_STRATEGIES:
        agg = options["aggregator"]
        if not isinstance(agg, str) or agg not in AGGREGATORS:
            raise ConfigError(
                f"{where}.aggregator",
                agg,
                f"one of {', '.join(AGGREGATORS)} (a rule over the deltas)",
            )
    elif "aggregator" in options:
        agg = options["aggregator"]
        if not isinstance(agg, str) or agg not in PLUGGABLE_AGGREGATORS:
            raise ConfigError(
                f"{where}.aggregator",
                agg,
                f"one of {', '.join(PLUGGABLE_AGGREGATORS)} (aggregators whose aggregate_train "
                "needs no state from their own configure_train)",
            )
        agg_options = options.get("aggregator_options")
        if agg_options is not None and not isinstance(agg_options, Mapping):
            raise ConfigError(f"{where}.aggregator_options", agg_options, "a table")
        check_strategy(agg, agg_options or {}, f"{where}.aggregator_options")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key not in params:
            raise ConfigError(
                f"{where}.{key} is not an option of {name!r}; "
                f"options: {', '.join(sorted(set(params) - _MANAGED))}"
            )
        if key in _MANAGED:
            raise ConfigError(
                f"{where}.{key}: set strategy.clients_per_round instead "
                "(it fixes the number of nodes selected per round)"
            )
        checked[key] = coerce(value, _config_type(params[key].annotation), f"{where}.{key}")
        if key in ("fraction_evaluate",) and not 0 <= checked[key] <= 1:
            raise ConfigError(f"{where}.{key}", value, "in [0, 1]")
    return checked


def build_strategy(
    name: str,
    options: Mapping[str, Any],
    *,
    num_nodes: int,
    clients_per_round: int = 0,
    federated_eval_fraction: float = 0.0,
    num_rounds: int | None = None,
    seed: int = 0,
    where: str = "strategy.options",
) -> Strategy:
    """Construct strategy `name` selecting exactly `clients_per_round` nodes (0 = all online).

    Strategies that take `clients_per_round`, `num_rounds` or `seed` get the experiment's
    values unless the options set them. `aggregator = "<name>"` (with `aggregator_options`)
    plugs another strategy's aggregation into strategies that accept one (TiFL).

    Flower samples `max(int(online × fraction_train), min_train_nodes)` nodes; with
    fraction_train = k/N and min_train_nodes = k this is exactly k whenever all N are online.
    """
    kwargs = check_strategy(name, options, where)
    params = _parameters(name)
    if "aggregator" in kwargs and name not in RULE_STRATEGIES:  # a strategy name
        agg_name = kwargs.pop("aggregator")
        kwargs["aggregator"] = build_strategy(
            agg_name,
            kwargs.pop("aggregator_options", None) or {},
            num_nodes=num_nodes,
            seed=seed,
            where=f"{where}.aggregator_options",
        )
    k = clients_per_round or num_nodes
    injected = {"clients_per_round": k, "concurrency": k, "num_rounds": num_rounds, "seed": seed}
    for key in _INJECTED:
        if key in params and key not in kwargs and injected[key] is not None:
            kwargs[key] = injected[key]
    if "fraction_train" in params:
        kwargs["fraction_train"] = k / num_nodes
        kwargs["min_train_nodes"] = k if clients_per_round else 1
    if "min_available_nodes" in params:  # wait for k nodes (any that are online: 1)
        kwargs["min_available_nodes"] = k if clients_per_round else 1
    if "fraction_evaluate" in params and "fraction_evaluate" not in options:
        kwargs["fraction_evaluate"] = federated_eval_fraction
    if "min_evaluate_nodes" in params and "min_evaluate_nodes" not in options:
        kwargs["min_evaluate_nodes"] = 1
    try:
        return STRATEGIES[name](**kwargs)
    except ConfigError as exc:
        if exc.key is not None and exc.key in options:  # the strategy names its own option
            raise ConfigError(f"{where}.{exc.key}", exc.value, exc.rule) from exc
        raise
    except (TypeError, ValueError) as exc:
        text = str(exc)
        named = {
            m.start(): key
            for key in options
            if (m := re.search(rf"\b{re.escape(key)}\b", text)) is not None
        }
        if named:  # the option the complaint names first
            key = named[min(named)]
            at, value = f"{where}.{key}", options[key]
            rule = _rule_from_message(key, text)
            message = None if rule is not None else f"{at} = {value!r} is invalid: {text}"
            raise ConfigError(at, value, rule or text, message=message) from exc
        raise ConfigError(
            f"strategy {name!r} rejected its options {dict(options)}: {text}"
        ) from exc
