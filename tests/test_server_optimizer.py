"""ServerSGD (torch.optim.SGD on the aggregate delta) and RobustAggregation (a rule + ServerSGD)."""

from __future__ import annotations

import copy
import logging
import pickle
import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fl.experiment.config import load_dict
from fl.loops.synchronous import LoopSettings, run_rounds
from fl.sim.devices import DeviceProfile
from fl.sim.grid import VirtualGrid
from fl.strategies import RobustAggregation, ServerSGD
from fl.strategies.registry import build_strategy

D = 40


# ------------------------------------------------------------------------------ ServerSGD


@pytest.mark.parametrize(
    ("momentum", "nesterov", "weight_decay", "dtype"),
    [
        (0.0, False, 0.0, torch.float64),
        (0.9, False, 0.0, torch.float64),
        (0.9, True, 1e-5, torch.float64),
        (0.5, False, 1e-2, torch.float32),
        (0.9, True, 1e-5, torch.float32),
    ],
)
@pytest.mark.parametrize("foreach", [False, True])
def test_server_sgd_agrees_with_torch_sgd(
    momentum: float, nesterov: bool, weight_decay: float, dtype: torch.dtype, foreach: bool
) -> None:
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(257, generator=g, dtype=dtype)
    deltas = [torch.randn(257, generator=g, dtype=dtype) for _ in range(6)]
    param = torch.nn.Parameter(w0.clone())
    opt = torch.optim.SGD(
        [param],
        lr=0.01,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        foreach=foreach,
    )
    ours = ServerSGD(lr=0.01, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    w = w0.clone()
    for delta in deltas:
        param.grad = -delta  # the aggregate delta is minus a gradient
        opt.step()
        w = ours.step(w, delta)
        assert w.dtype == dtype
        torch.testing.assert_close(w, param.detach(), rtol=0, atol=1e-12)
    if momentum:
        buf = opt.state[param]["momentum_buffer"]
        assert ours.buffer is not None
        torch.testing.assert_close(ours.buffer, buf, rtol=0, atol=1e-12)
    assert ours.steps == len(deltas)


def test_server_sgd_identity_is_exactly_w_plus_delta() -> None:
    g = torch.Generator().manual_seed(1)
    opt = ServerSGD(lr=1.0)
    assert opt.is_identity
    w = torch.randn(100, generator=g, dtype=torch.float64) * 1e3
    for _ in range(3):
        delta = torch.randn(100, generator=g, dtype=torch.float64) * 1e-3
        new = opt.step(w, delta)
        assert torch.equal(new, w + delta)
        w = new
    assert opt.buffer is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"lr": 0.0}, "server_lr"),
        ({"lr": float("inf")}, "server_lr"),
        ({"lr": True}, "server_lr"),
        ({"lr": 0.1, "momentum": 1.0}, "server_momentum"),
        ({"lr": 0.1, "momentum": -0.1}, "server_momentum"),
        ({"lr": 0.1, "nesterov": True}, "nesterov"),
        ({"lr": 0.1, "momentum": 0.9, "nesterov": 1}, "nesterov"),
        ({"lr": 0.1, "weight_decay": -1e-5}, "weight_decay"),
    ],
)
def test_server_sgd_rejects_bad_settings(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ServerSGD(**kwargs)


def test_server_sgd_state_survives_pickle() -> None:
    g = torch.Generator().manual_seed(2)
    opt = ServerSGD(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-5)
    w = torch.randn(50, generator=g, dtype=torch.float64)
    for _ in range(3):
        w = opt.step(w, torch.randn(50, generator=g, dtype=torch.float64))
    back = pickle.loads(pickle.dumps(opt))
    assert back.steps == 3 and back.buffer is not None and torch.equal(back.buffer, opt.buffer)
    delta = torch.randn(50, generator=g, dtype=torch.float64)
    assert torch.equal(back.step(w, delta), opt.step(w, delta))


# --------------------------------------------------------------------- RobustAggregation


def delta_app(deltas: dict[int, np.ndarray], examples: dict[int, float]) -> ClientApp:
    """Node p replies global + deltas[p] and reports examples[p] (default 10); its compute time
    comes from `work-flops`, so a liar's count does not make it miss the round."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        g = msg.content["arrays"]["w"].numpy()
        w = (g.astype(np.float64) + deltas[pid]).astype(np.float32)
        metrics = MetricRecord({"num-examples": examples.get(pid, 10), "work-flops": 1e6})
        return Message(
            RecordDict({"arrays": ArrayRecord({"w": Array(w)}), "metrics": metrics}),
            reply_to=msg,
        )

    return app


def run(strategy: object, app: ClientApp, n: int, rounds: int = 1, w0: np.ndarray | None = None):
    random.seed(0)
    devices = [DeviceProfile(flops_per_s=1e9, down_bps=1e9, up_bps=1e9) for _ in range(n)]
    grid = VirtualGrid(app, devices, seed=0)  # type: ignore[arg-type]
    start = np.zeros(D, dtype=np.float32) if w0 is None else w0
    initial = ArrayRecord({"w": Array(start)})
    return run_rounds(strategy, grid, initial, LoopSettings(num_rounds=rounds))  # type: ignore[arg-type]


def honest_deltas(n: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p: 1.0 + 0.1 * rng.standard_normal(D) for p in range(n)}


def test_mean_without_optimizer_equals_fedavgs_unweighted_mean() -> None:
    n = 6
    deltas = honest_deltas(n)
    equal = delta_app(deltas, {})
    kw = {"fraction_evaluate": 0.0, "min_available_nodes": n}
    ours = run(RobustAggregation(aggregator="mean", **kw), equal, n).arrays["w"].numpy()
    fedavg = run(FedAvg(**kw), equal, n).arrays["w"].numpy()
    np.testing.assert_allclose(ours, fedavg, rtol=1e-6, atol=1e-7)
    # unequal reports do not move the unweighted mean
    skewed = delta_app(deltas, {0: 1e9, 1: 3})
    skewed_run = run(RobustAggregation(aggregator="mean", **kw), skewed, n)
    assert skewed_run.rows[0]["num_replied"] == n
    again = skewed_run.arrays["w"].numpy()
    expected = np.mean([d.astype(np.float32).astype(np.float64) for d in deltas.values()], 0)
    np.testing.assert_allclose(again, expected, rtol=1e-6, atol=1e-6)
    assert np.array_equal(again, ours)


def test_defaults_apply_g_plus_step_exactly() -> None:
    n = 4
    deltas = honest_deltas(n, seed=3)
    w0 = np.random.default_rng(5).standard_normal(D).astype(np.float32) * 100
    strategy = RobustAggregation(aggregator="median", fraction_evaluate=0.0, min_available_nodes=n)
    out = run(strategy, delta_app(deltas, {}), n, w0=w0).arrays["w"].numpy()
    g = torch.from_numpy(w0.astype(np.float64))
    G = torch.stack(
        [
            torch.from_numpy((w0.astype(np.float64) + d).astype(np.float32)).double() - g
            for d in deltas.values()
        ]
    )
    expected = (g + G.sort(0).values[1:3].mean(0)).numpy().astype(np.float32)
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("weighted", [False, True])
def test_geomedian_resists_the_billion_example_liar(weighted: bool) -> None:
    n = 10
    deltas = honest_deltas(n)
    deltas[0] = np.full(D, 1000.0)
    honest = np.stack([deltas[p] for p in range(1, n)])
    centre = honest.mean(0)
    spread = float(np.linalg.norm(honest - centre, axis=1).max())
    strategy = RobustAggregation(
        aggregator="geomedian", weighted=weighted, fraction_evaluate=0.0, min_available_nodes=n
    )
    result = run(strategy, delta_app(deltas, {0: 1e9}), n)
    assert result.rows[0]["num_replied"] == n  # the liar took part
    out = result.arrays["w"].numpy().astype(np.float64)
    assert np.linalg.norm(out - centre) <= spread, (np.linalg.norm(out - centre), spread)
    if weighted:
        assert result.rows[0]["weights_clipped"] == 1
    # trusting the reports unbounded, the liar owns the weighted median
    trusting = RobustAggregation(
        aggregator="geomedian",
        weighted=True,
        weight_clip=float("inf"),
        fraction_evaluate=0.0,
        min_available_nodes=n,
    )
    owned = run(trusting, delta_app(deltas, {0: 1e9}), n).arrays["w"].numpy()
    assert np.linalg.norm(owned - 1000.0) < 1.0


def test_optimizer_and_rule_state_survive_pickle_and_the_next_step_is_identical() -> None:
    n = 8
    deltas = honest_deltas(n, seed=7)
    app = delta_app(deltas, {})
    strategy = RobustAggregation(
        aggregator="bgmd",
        aggregator_options={"beta": 0.25},
        server_lr=0.01,
        server_momentum=0.9,
        nesterov=True,
        weight_decay=1e-5,
        fraction_evaluate=0.0,
        min_available_nodes=n,
    )
    first = run(strategy, app, n, rounds=3)
    assert strategy.optimizer.buffer is not None and strategy.optimizer.steps == 3
    memory = strategy.rule.memory  # type: ignore[attr-defined]
    assert memory is not None and float(memory.abs().max()) > 0
    back = pickle.loads(pickle.dumps(strategy))
    assert torch.equal(back.optimizer.buffer, strategy.optimizer.buffer)
    assert torch.equal(back.rule.memory, memory)  # type: ignore[attr-defined]
    w = first.arrays["w"].numpy()
    duplicate = copy.deepcopy(strategy)
    a = run(strategy, app, n, w0=w).arrays["w"].numpy()
    b = run(back, app, n, w0=w).arrays["w"].numpy()
    assert np.array_equal(a, b)
    assert np.array_equal(a, run(duplicate, app, n, w0=w).arrays["w"].numpy())
    # momentum makes the step differ from a stateless one
    stateless = RobustAggregation(
        aggregator="bgmd",
        aggregator_options={"beta": 0.25},
        server_lr=0.01,
        fraction_evaluate=0.0,
        min_available_nodes=n,
    )
    assert not np.array_equal(run(stateless, app, n, w0=w).arrays["w"].numpy(), b)


def test_bad_replies_are_rejected_and_all_bad_keeps_the_model(caplog) -> None:  # type: ignore[no-untyped-def]
    n = 4
    deltas = honest_deltas(n)
    deltas[2] = np.full(D, np.nan)
    app = delta_app(deltas, {3: -5})  # node 2 replies NaN, node 3 a negative count
    devices = [DeviceProfile(flops_per_s=1e9, down_bps=1e9, up_bps=1e9) for _ in range(n)]
    grid = VirtualGrid(app, devices, seed=0)  # type: ignore[arg-type]
    g = ArrayRecord({"w": Array(np.zeros(D, dtype=np.float32))})
    msgs = [Message(RecordDict({"arrays": g}), 1001 + i, "train") for i in range(n)]
    replies = sorted(grid.send_and_receive(msgs), key=lambda m: m.metadata.src_node_id)
    strategy = RobustAggregation(aggregator="geomedian")
    strategy.set_reference(g)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    info = strategy.last_round_info
    assert info["rejected_by_strategy"] == 2
    assert (
        "NaN" in info["rejected_by_strategy_why"]
        and "num-examples" in info["rejected_by_strategy_why"]
    )
    expected = np.mean([deltas[0], deltas[1]], 0)  # the GM of two points: any point between
    assert np.linalg.norm(arrays["w"].numpy() - expected) <= np.linalg.norm(deltas[0] - deltas[1])
    with caplog.at_level(logging.WARNING):
        arrays, metrics = strategy.aggregate_train(2, replies[2:])
    assert arrays is None and metrics is None
    assert "model unchanged" in caplog.text and "NaN" in caplog.text
    assert strategy.last_round_info["aggregation"] == "skipped: no valid update"
    krum = RobustAggregation(aggregator="krum", aggregator_options={"f": 1})  # needs 5 rows
    krum.set_reference(g)
    with caplog.at_level(logging.WARNING):
        assert krum.aggregate_train(1, replies[:2]) == (None, None)
    assert "the rule needs 5" in krum.last_round_info["aggregation"]


def test_robust_is_registered_with_the_paper_options() -> None:
    options = {
        "aggregator": "bgmd",
        "aggregator_options": {"beta": 0.1},
        "server_lr": 0.01,
        "server_momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-5,
    }
    cfg = load_dict({"num_nodes": 8, "strategy": {"name": "robust", "options": options}})
    assert cfg.strategy.options == options
    strategy = build_strategy("robust", options, num_nodes=8)
    assert isinstance(strategy, RobustAggregation)
    assert strategy.rule.name == "bgmd" and strategy.rule.beta == 0.1  # type: ignore[attr-defined]
    assert strategy.optimizer == ServerSGD(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-5)
    with pytest.raises(ValueError, match=r"aggregator_options\.beta"):
        RobustAggregation(aggregator="bgmd", aggregator_options={"beta": 2.0})
    with pytest.raises(ValueError, match="weighted"):
        RobustAggregation(aggregator="krum", weighted=True)
