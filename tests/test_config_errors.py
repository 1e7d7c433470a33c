"""Config errors: one ConfigError(key, value, rule) for every section, raised when a config is
loaded (never rounds later), and the CLI's one-line reports of bad configs and failed runs."""

from __future__ import annotations

import pickle
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import pytest
from flwr.serverapp.strategy import Strategy
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fl.cli import cli
from fl.experiment.config import load_dict
from fl.schema import ConfigError
from fl.strategies.registry import _MANAGED, STRATEGIES, _parameters

BASE = {"num_nodes": 10, "rounds": 2}


def _load_error(change: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_dict({**BASE, **change})
    return err.value


# ------------------------------------------------------------------------------- ConfigError


def test_config_error_format_and_attributes() -> None:
    exc = ConfigError("strategy.options.beta", "abc", "a number")
    assert str(exc) == "strategy.options.beta = 'abc' is invalid: must be a number"
    assert (exc.key, exc.value, exc.rule) == ("strategy.options.beta", "abc", "a number")
    assert isinstance(exc, ValueError)
    free = ConfigError("unknown key 'colour'")
    assert str(free) == "unknown key 'colour'" and free.key is free.value is free.rule is None
    for e in (exc, free, ConfigError("k", None, "r", message="custom")):
        back = pickle.loads(pickle.dumps(e))
        assert (str(back), back.key, back.value, back.rule) == (str(e), e.key, e.value, e.rule)


# ------------------------------------------------------- strategy option types (fuzzed)


def _accepts(tp: Any, value: Any) -> bool:
    """Whether a config value fits annotation `tp`, decided independently of fl.schema."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if isinstance(tp, type) and issubclass(tp, Strategy):
        return isinstance(value, str)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, Sequence):
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if origin in (dict, Mapping):
        return isinstance(value, dict)
    if origin is Callable:
        return False
    raise AssertionError(f"the fuzz test does not know annotation {tp!r}: teach _accepts")


# Values of every TOML kind. No integral floats (an int option takes 3.0) and no "none" (an
# optional option takes it as None).
POOL: list[Any] = ["abc", True, False, 0.5, -2.5, 3, ["x"], [0.5, "y"], {"k": 1}, {}]

OPTIONS = [
    (name, key, param.annotation)
    for name in STRATEGIES
    for key, param in _parameters(name).items()
    if param.annotation is not Any  # e.g. an async strategy's `profiler`: no wrong type
]


def test_every_strategy_option_is_fuzzed() -> None:
    assert {name for name, _, _ in OPTIONS} == set(STRATEGIES)
    assert ("fedprox", "proximal_mu", float) in OPTIONS
    assert ("bgmd", "beta", float) in OPTIONS


def _assert_rejected(name: str, key: str, value: Any) -> None:
    exc = _load_error({"strategy": {"name": name, "options": {key: value}}})
    assert f"strategy.options.{key}" in str(exc), (name, key, value, str(exc))
    if key not in _MANAGED:  # managed keys: "set strategy.clients_per_round instead"
        assert exc.key is not None and exc.key.startswith(f"strategy.options.{key}"), exc


@pytest.mark.parametrize(("name", "key", "tp"), OPTIONS, ids=[f"{n}.{k}" for n, k, _ in OPTIONS])
def test_every_wrong_type_of_every_option_fails_at_load_naming_the_key(
    name: str, key: str, tp: Any
) -> None:
    wrong = [v for v in POOL if not _accepts(tp, v)]
    assert wrong, f"{name}.{key}: the pool has no wrong value for {tp!r}"
    for value in wrong:
        _assert_rejected(name, key, value)


_SCALARS = st.one_of(
    st.text(max_size=8).filter(lambda s: s.strip().lower() != "none"),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3), st.dictionaries(st.text(), _SCALARS))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(OPTIONS), _VALUES)
def test_random_wrong_values_fail_at_load_naming_the_key(option: tuple, value: Any) -> None:
    name, key, tp = option
    if _accepts(tp, value):
        return  # a right type: the constructor may still reject its range, not tested here
    _assert_rejected(name, key, value)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("fedprox", {"proximal_mu": 1}),  # an int where a float is expected
        ("fedbuff", {"max_staleness": "none", "buffer_size": 3.0}),
        ("tifl", {"probabilities": [0.5, 0.25, 0.25], "num_tiers": 3}),
        ("tifl", {"aggregator": "bgmd", "aggregator_options": {"beta": 0.2}}),
        ("fedbuff", {"aggregator": "median"}),
    ],
)
def test_right_types_still_load(name: str, options: dict) -> None:
    cfg = load_dict({**BASE, "strategy": {"name": name, "options": options}})
    assert cfg.strategy.options == options


def test_nested_aggregator_options_name_their_full_key() -> None:
    options = {"aggregator": "bgmd", "aggregator_options": {"beta": "x"}}
    exc = _load_error({"strategy": {"name": "tifl", "options": options}})
    assert exc.key == "strategy.options.aggregator_options.beta" and exc.value == "x"
    exc = _load_error({"strategy": {"name": "bgmd", "options": {"beta": 0}}})  # range, not type
    assert exc.key == "strategy.options.beta" and exc.value == 0


# --------------------------------------------------------------- every other section


@pytest.mark.parametrize(
    ("change", "key", "value"),
    [
        ({"data": {"local_test_fraction": 1.5}}, "data.local_test_fraction", 1.5),
        ({"data": {"classes_per_node": -3}}, "data.classes_per_node", -3),
        ({"data": {"alpha": 0.0}}, "data.alpha", 0.0),
        ({"data": {"size_skew": -1.0}}, "data.size_skew", -1.0),
        ({"data": {"max_samples": 0}}, "data.max_samples", 0),
        ({"data": {"max_samples": "x"}}, "data.max_samples", "x"),
        ({"data": {"synthetic_beta": -1.0}}, "data.synthetic_beta", -1.0),
        ({"data": {"synthetic_iid": 1}}, "data.synthetic_iid", 1),
        ({"data": {"shakespeare_min_samples": 0}}, "data.shakespeare_min_samples", 0),
        ({"data": {"min_partition_size": 0}}, "data.min_partition_size", 0),
        ({"data": {"outlier_class": -2}}, "data.outlier_class", -2),
        ({"data": {"partition": "natural"}}, "data.partition", "natural"),
        ({"data": {"name": "cifar"}}, "data.name", "cifar"),
        ({"model": {"name": "resnet"}}, "model.name", "resnet"),
        ({"model": {"hidden": [64, 0]}}, "model.hidden", (64, 0)),
        ({"model": {"dropout": 1.0}}, "model.dropout", 1.0),
        ({"model": {"lstm_layers": 0}}, "model.lstm_layers", 0),
        ({"devices": {"kind": "cloud"}}, "devices.kind", "cloud"),
        ({"devices": {"flops_per_s": -3}}, "devices.flops_per_s", -3.0),
        ({"devices": {"failure_prob": 2.0}}, "devices.failure_prob", 2.0),
        ({"devices": {"tier_fractions": [1, 1, 1, 1, -1]}}, "devices.tier_fractions[4]", -1.0),
        ({"devices": {"tier_down_mbps": [1.0, 2.0]}}, "devices.tier_down_mbps", (1.0, 2.0)),
        ({"devices": {"stragglers": [10]}}, "devices.stragglers", (10,)),
        ({"devices": {"availability": "sometimes"}}, "devices.availability", "sometimes"),
        ({"attack": {"kind": "teleport"}}, "attack.kind", "teleport"),
        ({"attack": {"fraction": 1.5}}, "attack.fraction", 1.5),
        ({"attack": {"std": -1.0}}, "attack.std", -1.0),
        ({"faults": {"nan_prob": 2.0}}, "faults.nan_prob", 2.0),
        ({"faults": {"crash_prob": -0.5}}, "faults.crash_prob", -0.5),
        ({"evaluation": {"every": 0}}, "evaluation.every", 0),
        ({"evaluation": {"federated_fraction": 0.0}}, "evaluation.federated_fraction", 0.0),
        ({"evaluation": {"target_accuracy": 2.0}}, "evaluation.target_accuracy", 2.0),
        ({"evaluation": {"central": "yes"}}, "evaluation.central", "yes"),
        ({"strategy": {"clients_per_round": -1}}, "strategy.clients_per_round", -1),
        ({"rounds": 0}, "rounds", 0),
        ({"seed": "x"}, "seed", "x"),
    ],
)
def test_every_section_fails_at_load_naming_key_and_value(
    change: dict, key: str, value: Any
) -> None:
    exc = _load_error(change)
    assert exc.key == key and exc.value == value, str(exc)
    assert str(exc).startswith(f"{key} = {value!r} is invalid: must be "), str(exc)


def test_train_section_errors_name_key_and_value() -> None:
    # fl/client/config.py raises free-message ConfigErrors (no .key yet): check the text
    assert str(_load_error({"train": {"lr": -0.1}})).startswith("train.lr = -0.1 is invalid")


def test_fault_probabilities_summing_over_one_fail_at_load() -> None:
    exc = _load_error({"faults": {"crash_prob": 0.7, "nan_prob": 0.7}})
    assert exc.key == "faults" and "sum to 1.4" in str(exc)


def test_unknown_keys_and_bad_toml_are_config_errors(tmp_path: Path) -> None:
    assert "colour" in str(_load_error({"colour": "blue"}))
    assert "alpah" in str(_load_error({"data": {"alpah": 1.0}}))
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    from fl.experiment.config import load_config

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


# ------------------------------------------------------------------------------------ CLI

TINY = """\
name = "tiny"
num_nodes = 4
rounds = 1
[data]
name = "digits"
max_samples = 200
[model]
name = "logreg"
"""


def _run(tmp_path: Path, *args: str) -> Any:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    return CliRunner().invoke(cli, ["run", str(config), "--quiet", "--out", str(out), *args])


def _stderr_lines(res: Any) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.strip()]


def test_cli_bad_strategy_option_exits_2_with_one_line(tmp_path: Path) -> None:
    res = _run(
        tmp_path, "--set", "strategy.name=fedprox", "--set", "strategy.options.proximal_mu=abc"
    )
    assert res.exit_code == 2, res.output
    lines = _stderr_lines(res)
    assert 1 <= len(lines) <= 5, res.stderr
    assert lines[0].startswith("error: strategy.options.proximal_mu = 'abc' is invalid")


def test_cli_failed_run_exits_1_with_one_line(tmp_path: Path) -> None:
    res = _run(tmp_path, "--set", "faults.nan_prob=1.0")  # nothing aggregated
    assert res.exit_code == 1, res.output
    lines = _stderr_lines(res)
    assert 1 <= len(lines) <= 5, res.stderr
    assert lines[0].startswith("error: the run failed: ") and "RunFailedError" in lines[0], lines
    assert "Traceback" not in res.output


def test_cli_value_the_data_refutes_exits_2_with_one_line(tmp_path: Path) -> None:
    """A config value only the loaded data can refute (more classes per node than the dataset
    has) is still a config error: exit 2, one line naming the key."""
    res = _run(tmp_path, "--set", "data.partition=shards", "--set", "data.classes_per_node=11")
    assert res.exit_code == 2, res.output
    lines = _stderr_lines(res)
    assert 1 <= len(lines) <= 5, res.stderr
    assert lines[0].startswith("error: invalid classes_per_node=11"), lines
    assert "Traceback" not in res.output


def test_cli_debug_reraises(tmp_path: Path) -> None:
    res = _run(tmp_path, "--set", "data.partition=shards", "--set", "data.classes_per_node=11")
    assert res.exit_code == 2
    res = _run(
        tmp_path,
        "--debug",
        "--set",
        "data.partition=shards",
        "--set",
        "data.classes_per_node=11",
    )
    assert isinstance(res.exception, ValueError) and "classes_per_node=11" in str(res.exception)
