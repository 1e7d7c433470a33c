"""The virtual grid: timing, deadlines, availability, failures, Flower message semantics."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fl.loops.synchronous import LoopSettings, run_rounds
from fl.sim.availability import AlwaysOn, OnOff
from fl.sim.devices import DeviceProfile, PopulationConfig, make_population
from fl.sim.grid import VirtualGrid
from fl.sim.outcomes import DEADLINE, EXPIRED, LOST_FAILED, REPLIED

WORK_PER_EXAMPLE = 1e6


def make_app(examples: dict[int, int] | None = None, crash: set[int] | None = None) -> ClientApp:
    """A tiny ClientApp: adds 1 to the weights; node p 'processes' examples[p] examples."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if crash and pid in crash:
            raise RuntimeError(f"node {pid} crashed")
        n = (examples or {}).get(pid, 10)
        w = msg.content["arrays"]["w"].numpy() + 1.0
        return Message(
            RecordDict(
                {
                    "arrays": ArrayRecord({"w": Array(w)}),
                    "metrics": MetricRecord(
                        {"num-examples": n, "work-flops": n * WORK_PER_EXAMPLE}
                    ),
                }
            ),
            reply_to=msg,
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": 1, "acc": 1.0})}), reply_to=msg
        )

    return app


def initial() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(1000, dtype=np.float32))})


def expected_duration(dev: DeviceProfile, down: int, up: int, work: float) -> float:
    """Independent re-statement of the time model (no jitter): bytes*8/bps + flops/speed."""
    return down * 8 / dev.down_bps + work / dev.flops_per_s + up * 8 / dev.up_bps


def tier_devices(n: int = 10) -> list[DeviceProfile]:
    return make_population(PopulationConfig(kind="tiers", flops_per_s=1e8), n, seed=1)


def test_round_duration_is_the_slowest_selected_node() -> None:
    devices = tier_devices(10)
    examples = {i: 20 + 7 * i for i in range(10)}
    grid = VirtualGrid(make_app(examples), devices, seed=3)
    random.seed(0)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=10)
    settings = LoopSettings(num_rounds=3, timeout=None)
    result = run_rounds(strategy, grid, initial(), settings)
    nbytes = initial().count_bytes()
    per_node = [
        expected_duration(devices[i], nbytes, nbytes, examples[i] * WORK_PER_EXAMPLE)
        for i in range(10)
    ]
    rounds = [r for r in result.rows if r["round"] > 0]
    assert len(rounds) == 3
    for row in rounds:
        assert row["train_duration"] == pytest.approx(max(per_node), rel=1e-12)
        assert row["num_replied"] == 10 and row["num_dropped"] == 0
    assert grid.now == pytest.approx(3 * max(per_node), rel=1e-12)
    # model: three rounds of +1 each, averaged
    np.testing.assert_allclose(result.arrays["w"].numpy(), 3.0)
    # tiers really are heterogeneous: slowest node is several times the fastest
    assert max(per_node) > 5 * min(per_node)


def test_deadline_drops_slow_nodes_and_lists_them() -> None:
    devices = tier_devices(10)
    grid = VirtualGrid(make_app(), devices, seed=3)
    nbytes = initial().count_bytes()
    per_node = [expected_duration(d, nbytes, nbytes, 10 * WORK_PER_EXAMPLE) for d in devices]
    distinct = sorted(set(per_node))
    deadline = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2  # no ties
    random.seed(0)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=10)
    result = run_rounds(strategy, grid, initial(), LoopSettings(num_rounds=2, timeout=deadline))
    slow = {grid.node_id(i) for i, t in enumerate(per_node) if t > deadline}
    fast = {grid.node_id(i) for i, t in enumerate(per_node) if t <= deadline}
    assert slow and fast
    for row in result.rows:
        assert {int(x) for x in row["dropped"].split()} == slow
        assert {int(x) for x in row["replied"].split()} == fast
        assert row["train_duration"] == pytest.approx(deadline)
    statuses = {o.node_id: o.status for o in grid.outcomes.values()}
    assert all(statuses[n] == DEADLINE for n in slow)
    assert all(statuses[n] == REPLIED for n in fast)


def test_offline_nodes_never_get_work_and_server_waits_in_virtual_time() -> None:
    devices = [
        DeviceProfile(
            flops_per_s=2e6, down_bps=1e7, up_bps=1e7, availability=OnOff(20.0, 20.0, seed=(7, i))
        )
        for i in range(12)
    ]
    grid = VirtualGrid(make_app(), devices, seed=0)
    random.seed(0)
    strategy = FedAvg(
        fraction_train=0.25, min_train_nodes=3, fraction_evaluate=0.0, min_available_nodes=3
    )
    result = run_rounds(strategy, grid, initial(), LoopSettings(num_rounds=30, timeout=10.0))
    assert len(result.rows) == 30
    assert len(grid.outcomes) == 90
    for o in grid.outcomes.values():
        dev = devices[grid.node_index(o.node_id)]
        assert dev.availability.online(o.sent_at), "work sent to an offline node"
    # some nodes went offline mid-task (their replies were lost, the round carried on)
    lost = [o for o in grid.outcomes.values() if o.status != REPLIED]
    assert 3 <= len(lost) <= 45 and all("offline" in o.error for o in lost)
    times = [r["virtual_time"] for r in result.rows]
    assert times == sorted(times)


def test_failed_node_gives_no_reply_and_the_run_continues() -> None:
    devices = [
        DeviceProfile(flops_per_s=1e8, down_bps=1e7, up_bps=1e7, failure_prob=0.3)
        for _ in range(10)
    ]
    grid = VirtualGrid(make_app(), devices, seed=0)
    random.seed(0)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=10)
    result = run_rounds(strategy, grid, initial(), LoopSettings(num_rounds=5, timeout=5.0))
    failed = [
        o
        for o in grid.outcomes.values()
        if o.status in (LOST_FAILED, DEADLINE) and "failed" in o.error
    ]
    assert 5 <= len(failed) <= 25  # ~30% of 50
    assert sum(r["num_replied"] for r in result.rows) == 50 - len(failed)
    # the server waited until its deadline for the lost replies
    assert result.rows[0]["train_duration"] == pytest.approx(5.0)
    assert all(r["aggregated"] for r in result.rows)


def test_crashing_client_is_an_error_reply_not_a_crash() -> None:
    devices = [DeviceProfile(flops_per_s=1e8, down_bps=1e7, up_bps=1e7) for _ in range(6)]
    grid = VirtualGrid(make_app(crash={2}), devices, seed=0)
    random.seed(0)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=6)
    result = run_rounds(strategy, grid, initial(), LoopSettings(num_rounds=2))
    for row in result.rows:
        assert row["num_replied"] == 5
        assert row["failed"] == str(grid.node_id(2))
    errors = [o.error for o in grid.outcomes.values() if o.node_id == grid.node_id(2)]
    assert all("node 2 crashed" in e for e in errors)
    np.testing.assert_allclose(result.arrays["w"].numpy(), 2.0)


def test_pull_semantics_jump_clock_and_repull_is_an_error() -> None:
    devices = [DeviceProfile(flops_per_s=1e8 * (i + 1), down_bps=1e9, up_bps=1e9) for i in range(3)]
    grid = VirtualGrid(make_app(), devices, seed=0)
    content = RecordDict({"arrays": initial(), "config": ConfigRecord({"server-round": 1})})
    ids = grid.push_messages([Message(content, grid.node_id(i), "train") for i in range(3)])
    assert grid.now == 0.0
    first = grid.pull_messages(ids)  # nothing had arrived: the clock jumps to the first arrival
    assert len(first) == 1 and first[0].metadata.src_node_id == grid.node_id(2)
    assert grid.now == pytest.approx(first[0].metadata.created_at)
    assert first[0].metadata.reply_to_message_id == ids[2]
    again = grid.pull_messages([ids[2]])
    assert len(again) == 1 and again[0].has_error() and again[0].error.code == 3
    rest = grid.pull_messages(ids[:2])
    assert [m.metadata.src_node_id for m in rest] == [grid.node_id(1)]
    rest = grid.pull_messages(ids[:1])
    assert [m.metadata.src_node_id for m in rest] == [grid.node_id(0)]
    assert math.isinf(grid.next_arrival())


def test_lost_reply_surfaces_as_expired_error_at_ttl() -> None:
    devices = [DeviceProfile(flops_per_s=1e8, down_bps=1e9, up_bps=1e9, failure_prob=1.0)]
    grid = VirtualGrid(make_app(), devices, seed=0)
    msg = Message(RecordDict({"arrays": initial()}), grid.node_id(0), "train", ttl=100.0)
    ids = grid.push_messages([msg])
    (reply,) = grid.pull_messages(ids)
    assert reply.has_error() and "failed" in reply.error.reason
    assert grid.now == pytest.approx(100.0)
    assert grid.outcomes[ids[0]].status == LOST_FAILED


def test_offline_dispatch_is_lost_and_expires() -> None:
    class Never:
        def online(self, t: float) -> bool:
            return False

        def next_change(self, t: float) -> float:
            return math.inf

    devices = [DeviceProfile(flops_per_s=1e8, down_bps=1e9, up_bps=1e9, availability=Never())]  # type: ignore[arg-type]
    grid = VirtualGrid(make_app(), devices, seed=0)
    assert grid.get_node_ids() == []
    ids = grid.push_messages(
        [Message(RecordDict({"arrays": initial()}), grid.node_id(0), "train", ttl=50.0)]
    )
    (reply,) = grid.pull_messages(ids)
    assert reply.has_error() and grid.outcomes[ids[0]].status == EXPIRED
    assert grid.wait_for_nodes(1) is False


def test_jitter_is_seeded_per_node_and_independent_of_order() -> None:
    devices = [
        DeviceProfile(
            flops_per_s=1e8, down_bps=1e7, up_bps=1e7, compute_jitter=0.3, availability=AlwaysOn()
        )
        for _ in range(4)
    ]

    def arrivals(order: list[int], seed: int) -> dict[int, float]:
        grid = VirtualGrid(make_app(), devices, seed=seed)
        msgs = [Message(RecordDict({"arrays": initial()}), grid.node_id(i), "train") for i in order]
        grid.push_messages(msgs)
        return {o.node_id: o.compute_s for o in grid.outcomes.values()}

    a = arrivals([0, 1, 2, 3], seed=5)
    assert a == arrivals([3, 2, 1, 0], seed=5)
    assert a != arrivals([0, 1, 2, 3], seed=6)
    assert len(set(a.values())) == 4


def test_reply_after_ttl_is_discarded_as_expired() -> None:
    devices = [DeviceProfile(flops_per_s=1e6, down_bps=1e9, up_bps=1e9)]  # 10 examples: 10 s
    grid = VirtualGrid(make_app(), devices, seed=0)
    ids = grid.push_messages(
        [Message(RecordDict({"arrays": initial()}), grid.node_id(0), "train", ttl=4.0)]
    )
    (reply,) = grid.pull_messages(ids)
    assert reply.has_error() and "TTL" in reply.error.reason
    assert grid.now == pytest.approx(4.0)
    assert grid.outcomes[ids[0]].status == EXPIRED


def test_clients_cannot_change_what_the_server_or_other_nodes_hold() -> None:
    app = ClientApp()
    seen: list[float] = []

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = msg.content["config"]
        seen.append(float(cfg["lr"]))
        cfg["lr"] = 999.0  # a misbehaving client mutates its instruction
        msg.content["arrays"]["w"] = Array(np.ones(3, dtype=np.float32))
        return Message(
            RecordDict(
                {"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 1})}
            ),
            reply_to=msg,
        )

    devices = [DeviceProfile(flops_per_s=1e9, down_bps=1e9, up_bps=1e9) for _ in range(3)]
    grid = VirtualGrid(app, devices, seed=0)
    shared = RecordDict({"arrays": initial(), "config": ConfigRecord({"lr": 0.1})})
    grid.send_and_receive([Message(shared, grid.node_id(i), "train") for i in range(3)])
    assert seen == [0.1, 0.1, 0.1]
    assert shared["config"]["lr"] == 0.1
    assert shared["arrays"]["w"].numpy().shape == (1000,)


def test_client_sees_virtual_created_at() -> None:
    app = ClientApp()
    stamps: list[float] = []

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        stamps.append(msg.metadata.created_at)
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    devices = [DeviceProfile(flops_per_s=1e9, down_bps=1e6, up_bps=1e6) for _ in range(2)]
    grid = VirtualGrid(app, devices, seed=0)
    grid.send_and_receive([Message(RecordDict({"arrays": initial()}), grid.node_id(0), "train")])
    t = grid.now
    grid.send_and_receive([Message(RecordDict({"arrays": initial()}), grid.node_id(1), "train")])
    assert stamps == [0.0, t] and t > 0


def test_wait_for_nodes_advances_to_when_enough_are_online() -> None:
    devices = [
        DeviceProfile(
            flops_per_s=1e9, down_bps=1e9, up_bps=1e9, availability=OnOff(10.0, 90.0, seed=(3, i))
        )
        for i in range(10)
    ]
    grid = VirtualGrid(make_app(), devices, seed=0)
    waited = 0
    for _ in range(20):
        before = grid.now
        assert grid.wait_for_nodes(3)
        assert len(grid.get_node_ids()) >= 3
        waited += grid.now > before
        grid.advance(7.0)
    assert waited >= 5  # ~10% online each: the server had to wait many times
