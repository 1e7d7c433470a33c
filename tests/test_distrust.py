"""Strategies do not believe what clients say about themselves: reported example counts,
label counts, versions, and how often (and how fast) a node answers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fl.loops.asynchronous import AsyncSettings, run_async
from fl.loops.synchronous import LoopSettings, run_rounds
from fl.sim.devices import DeviceProfile
from fl.sim.grid import VirtualGrid
from fl.strategies import AdaSGD, BlockGeometricMedian, FedBuff, GeometricMedian, TiFL
from fl.strategies.aggregation import bounded_weights

D = 20


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower needs a task identity to build instruction messages outside a grid."""
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    TaskIdentity.task_id = 1


def liar_app(liar_claims: float) -> ClientApp:
    """Node 0 replies δ = +1000 claiming `liar_claims` examples; the others δ ≈ 1 (10 each)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        g = msg.content["arrays"]["w"].numpy()
        if pid == 0:
            w, n = g + 1000.0, liar_claims
        else:
            w, n = g + 1.0 + 0.1 * np.random.default_rng(pid).normal(size=g.shape), 10
        metrics = MetricRecord({"num-examples": n, "work-flops": 1e6})  # timed by work
        arrays = ArrayRecord({"w": Array(w.astype(np.float32))})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def one_round(strategy: object, n: int = 10, claims: float = 1e9) -> np.ndarray:
    random.seed(0)
    devices = [DeviceProfile(flops_per_s=1e9, down_bps=1e9, up_bps=1e9) for _ in range(n)]
    grid = VirtualGrid(liar_app(claims), devices, seed=0)
    init = ArrayRecord({"w": Array(np.zeros(D, dtype=np.float32))})
    result = run_rounds(strategy, grid, init, LoopSettings(num_rounds=1))  # type: ignore[arg-type]
    return result.arrays["w"].numpy().astype(np.float64)


def honest_deltas(n: int = 10) -> np.ndarray:
    return np.stack(
        [1.0 + 0.1 * np.random.default_rng(p).normal(size=D) for p in range(1, n)]
    ).astype(np.float32)


def kw(n: int = 10) -> dict[str, object]:
    return {"fraction_evaluate": 0.0, "min_available_nodes": n}


def test_a_liar_claiming_1e9_examples_does_not_move_the_default_gm_or_bgmd() -> None:
    honest = honest_deltas()
    spread = float((honest.max(axis=0) - honest.min(axis=0)).max())
    assert 0.2 < spread < 1.0  # the bound the liar must stay within
    # Undefended (FedAvg, or GM trusting the reports): the liar owns the aggregate.
    assert one_round(FedAvg(**kw())).min() > 999.0  # type: ignore[arg-type]
    trusting = GeometricMedian(weighted=True, weight_clip=float("inf"), **kw())  # type: ignore[arg-type]
    assert one_round(trusting).min() > 999.0
    # Default GM: unweighted; its output stays among the honest updates.
    gm = one_round(GeometricMedian(**kw()))  # type: ignore[arg-type]
    assert np.abs(gm - np.median(honest, axis=0)).max() <= spread
    assert (gm >= honest.min(axis=0) - 1e-3).all() and (gm <= honest.max(axis=0) + spread).all()
    # Weighted on request: the claim is clipped to the median count (10), one vote of ten.
    clipped = GeometricMedian(weighted=True, **kw())  # type: ignore[arg-type]
    out = one_round(clipped)
    assert clipped.last_round_info["weights_clipped"] == 1
    assert np.abs(out - np.median(honest, axis=0)).max() <= spread
    # BGMD, in the round the liar arrives: the block is the GM of the honest cluster and the
    # rest waits in memory. (With the paper's mean memory the liar's off-block delta / n is
    # released in later rounds: that is the memory's weakness, not the weights'.)
    bgmd = BlockGeometricMedian(beta=0.5, **kw())  # type: ignore[arg-type]
    step = one_round(bgmd)
    block = step != 0
    assert block.sum() == D // 2
    assert np.abs(step[block] - np.median(honest, axis=0)[block]).max() <= spread


def test_bounded_weights_clip_to_a_multiple_of_the_median() -> None:
    w, clipped = bounded_weights(torch.tensor([10.0, 12.0, 8.0, 1e9]), clip=2.0)
    assert clipped == 1
    assert w.tolist() == [10.0, 12.0, 8.0, 20.0]  # lower median 10, cap 2 × 10
    w, clipped = bounded_weights(torch.tensor([1.0, 1e9]), clip=float("inf"))
    assert clipped == 0 and w.tolist() == [1.0, 1e9]
    with pytest.raises(ValueError, match="weight_clip"):
        bounded_weights(torch.tensor([1.0]), clip=0.5)


def test_bgmd_refuses_warm_start() -> None:
    with pytest.raises(ValueError, match="warm_start"):
        BlockGeometricMedian(warm_start=True)


# --------------------------------------------------------------- asynchronous: the reply checks
def _arrays(value: float = 0.0) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(D, value, dtype=np.float32))})


def _reply(msg: Message, delta: np.ndarray | float, **metrics: object) -> Message:
    sent = msg.content["arrays"]["w"].numpy()
    w = (sent + delta).astype(np.float32)
    m = MetricRecord({"num-examples": 10, **metrics})  # type: ignore[dict-item]
    return Message(RecordDict({"arrays": ArrayRecord({"w": Array(w)}), "metrics": m}), reply_to=msg)


def _started(strategy: FedBuff | AdaSGD) -> FedBuff | AdaSGD:
    strategy.initialize(_arrays())
    return strategy


def test_label_counts_must_be_integers_summing_to_the_examples_processed() -> None:
    s = _started(FedBuff(buffer_size=10, concurrency=3))
    cases = {
        1: ([3, 4, 3], 10, None),  # consistent: accepted
        2: ([3, 4, 2], 10, "sum to 9, but examples-processed = 10"),
        3: ([3.5, 4.0, 2.5], 10, "must be integer counts"),
    }
    for node, (counts, processed, _) in cases.items():
        msg = s.request(node, ConfigRecord())
        s.receive(node, _reply(msg, 0.1, **{"label-counts": counts,
                                            "examples-processed": processed}))  # fmt: skip
    reasons = dict(s.rejected)
    assert set(reasons) == {2, 3} and len(s.buffer) == 1
    for node, (_, _, why) in cases.items():
        if why:
            assert why in reasons[node]


def test_a_reply_claiming_another_model_version_is_rejected() -> None:
    s = _started(FedBuff(buffer_size=10, concurrency=2))
    msg = s.request(1, ConfigRecord())
    s.receive(1, _reply(msg, 0.1, **{"model-version": 7}))
    assert s.rejected == [(1, "model-version = 7, but it was sent 0")]
    msg = s.request(2, ConfigRecord())
    s.receive(2, _reply(msg, 0.1, **{"model-version": 0}))
    assert len(s.buffer) == 1


def test_the_replay_check_rejects_an_old_delta_sent_against_a_new_version() -> None:
    rng = np.random.default_rng(0)
    old = 1e-3 * rng.normal(size=D)
    for check, expected in ((False, 0), (True, 1)):
        s = _started(FedBuff(buffer_size=1, concurrency=1, replay_check=check))
        s.receive(5, _reply(s.request(5, ConfigRecord()), old))  # version 0 → 1
        s.receive(6, _reply(s.request(6, ConfigRecord()), old))  # another node: not a replay
        s.receive(5, _reply(s.request(5, ConfigRecord()), old))  # node 5 replays at version 2
        s.receive(5, _reply(s.request(5, ConfigRecord()), 1e-3 * rng.normal(size=D)))
        assert len(s.rejected) == expected
        assert s.version == 4 - expected
        if check:
            assert s.rejected[0][0] == 5 and "replayed" in s.rejected[0][1]


def test_the_rate_limit_bounds_a_fast_nodes_share_and_never_stalls() -> None:
    class Grid:  # the strategy only asks which nodes are online
        now = 0.0

        def get_node_ids(self) -> list[int]:
            return [1, 2, 3, 4]

    grid = Grid()
    s = _started(FedBuff(buffer_size=1, concurrency=1, rate_limit=1, rate_window=3, seed=0))
    order = []
    for _ in range(12):
        (msg,) = s.configure_train(1, _arrays(), ConfigRecord(), grid)  # type: ignore[arg-type]
        node = int(msg.metadata.dst_node_id)
        order.append(node)
        s.receive(node, _reply(msg, 0.1))
    for i in range(len(order) - 2):  # any 3 consecutive accepted updates: 3 distinct nodes
        assert len(set(order[i : i + 3])) == 3
    # Every node over its limit and nobody busy: the limit is waived, not a stall.
    s = _started(FedBuff(buffer_size=1, concurrency=1, rate_limit=1, rate_window=8, seed=0))
    for _ in range(6):
        (msg,) = s.configure_train(1, _arrays(), ConfigRecord(), grid)  # type: ignore[arg-type]
        s.receive(int(msg.metadata.dst_node_id), _reply(msg, 0.1))
    assert s.version == 6 and s.rate_limit_waived == 2


def test_forged_labels_buy_a_stale_update_at_most_a_fresh_ones_weight() -> None:
    """A stale node claims all its examples on the rarest class: FLeet's unbounded boost
    multiplies its weight by 1/BC; the default cap keeps it at a fresh update's weight."""
    weights = {}
    for cap in (float("inf"), 1.0):
        s = _started(AdaSGD(concurrency=4, staleness_threshold=1, warmup_updates=0, max_weight=cap))
        stale = s.request(9, ConfigRecord())  # sent version 0
        for v in range(4):  # four honest fresh updates with balanced labels
            msg = s.request(v + 1, ConfigRecord())
            s.receive(v + 1, _reply(msg, 0.1, **{"label-counts": [2] * 10}))
        s.receive(9, _reply(stale, 0.1, **{"label-counts": [0] * 9 + [20]}))
        weights[cap] = s.update_log[-1]["weight"]
        honest_stale = np.exp(-np.log(2) * 1)  # λ at τ = τ_thres = 1 without a boost
        assert s.update_log[-1]["boosted"] == 1.0
    # BC(one-hot, uniform over 10) = √0.1
    assert weights[float("inf")] == pytest.approx(honest_stale / np.sqrt(0.1))
    assert weights[float("inf")] > 1.0
    assert weights[1.0] == 1.0


# ------------------------------------------------------------------ TiFL: widened pools
def _tifl_grid(n: int) -> VirtualGrid:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _reply(msg, 0.1)

    # node p's device gets slower with p: tiers are contiguous id ranges
    devices = [
        DeviceProfile(flops_per_s=1e9, down_bps=1e6 / (1 + p), up_bps=1e6 / (1 + p))
        for p in range(n)
    ]
    return VirtualGrid(app, devices, seed=0)


@pytest.mark.parametrize("f", [0, 8])
def test_tifl_widens_a_rounds_pool_to_pool_factor_times_f_nodes(f: int) -> None:
    n, rounds = 40, 100
    malicious = set(range(1001, 1001 + 8))  # the 8 fastest nodes (20 %): tier 0
    strategy = TiFL(policy="fast", clients_per_round=10, num_tiers=5, num_malicious_nodes=f,
                    fraction_evaluate=0.0, seed=0)  # fmt: skip
    random.seed(0)
    grid = _tifl_grid(n)
    shares = []
    for rnd in range(1, rounds + 1):
        msgs = list(strategy.configure_train(rnd, _arrays(), ConfigRecord(), grid))
        chosen = {int(m.metadata.dst_node_id) for m in msgs}
        shares.append(len(chosen & malicious) / len(chosen))
    assert strategy.tiers[0] == sorted(malicious)  # fast devices: the attackers are tier 0
    if f == 0:
        assert shares == [1.0] * rounds  # every row is an attacker's
        return
    assert strategy.last_round_info["pool_tiers"] == "0 1 2 3"  # 32 ≥ 4 · 8 nodes
    assert strategy.last_round_info["pool_size"] == 32
    assert np.mean(shares) == pytest.approx(8 / 32, abs=0.05)  # the pool's share, 1/pool_factor
    assert (
        np.mean(np.array(shares) > 0.5) <= 0.03
    )  # binomial bound ≤ 2 %; hypergeometric (32, 8, 10) 0.5 %


def test_a_same_version_duplicate_is_not_a_replay() -> None:
    """A node with no more examples than a batch trains full-batch: two tasks on the same
    model version give the same delta, honestly."""
    s = _started(FedBuff(buffer_size=10, concurrency=2, replay_check=True))
    step = 1e-3 * np.random.default_rng(1).normal(size=D)
    first = s.request(5, ConfigRecord())
    s.receive(5, _reply(first, step))
    second = s.request(5, ConfigRecord())  # the buffer has not flushed: still version 0
    s.receive(5, _reply(second, step))
    assert s.rejected == [] and len(s.buffer) == 2


def test_rejected_replies_count_towards_the_rate_limit_so_nothing_locks_up() -> None:
    """Nodes whose replies are always rejected (replays) must not hold the slots while honest
    nodes wait for a window that never moves."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        seed = (pid, 0) if pid < 5 else (pid, rnd)  # nodes 0-4 resend one delta forever
        delta = 1e-3 * np.random.default_rng(seed).normal(size=D)
        return _reply(msg, delta, **{"work-flops": 1e9})  # timed by the device's speed

    devices = [  # the replayers answer 10× faster
        DeviceProfile(flops_per_s=1e10 if p < 5 else 1e9, down_bps=1e9, up_bps=1e9)
        for p in range(15)
    ]
    grid = VirtualGrid(app, devices, seed=0)
    strategy = FedBuff(buffer_size=10, concurrency=10, rate_limit=1, replay_check=True, seed=0)
    result = run_async(strategy, grid, _arrays(), AsyncSettings(max_updates=20))
    assert result.stop_reason == "updates" and strategy.version == 20
    replays = sum(str(r.get("rejected") or "").count("replayed") for r in result.rows)
    assert replays > 0
