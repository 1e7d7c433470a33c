"""The virtual grid and TiFL against the Grid / Strategy contract as Flower defines it.

Written from Flower 1.41's own grids (`flwr.superlink.grid.InMemoryGrid`, `GrpcGrid`) and
FedAvg's sampling (`strategy_utils.sample_nodes`): what they check, raise and return. The
last group pins the private Flower internals `fl.protocol.flower_internals` wraps, so a Flower
release that changes them fails here, loudly, rather than in a simulation's numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    Metadata,
    RecordDict,
)
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from test_grid import make_app  # adds 1 to the weights; 10 examples, 1e7 FLOPs a node

from fl.protocol import flower_internals as fi
from fl.schema import ConfigError
from fl.sim.devices import DeviceProfile
from fl.sim.grid import VirtualGrid
from fl.strategies import TiFL
from fl.strategies.registry import build_strategy, check_strategy


@dataclasses.dataclass(frozen=True)
class OnlineFrom:
    """Offline until `start`, online ever after."""

    start: float

    def online(self, t: float) -> bool:
        return t >= self.start

    def next_change(self, t: float) -> float:
        return self.start if t < self.start else math.inf


def device(availability: object = None, flops: float = 1e8) -> DeviceProfile:
    kw = {} if availability is None else {"availability": availability}
    return DeviceProfile(flops_per_s=flops, down_bps=1e9, up_bps=1e9, **kw)  # type: ignore[arg-type]


def arrays() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(100, dtype=np.float32))})


def train_msg(grid: VirtualGrid, i: int, **kw: object) -> Message:
    return Message(RecordDict({"arrays": arrays()}), grid.node_id(i), "train", **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ Grid: the run
def test_set_run_rejects_anything_but_a_run() -> None:
    grid = VirtualGrid(make_app(), [device()])
    for bad in (None, 7, {"run_id": 7}):
        with pytest.raises(TypeError, match="Run"):
            grid.set_run(bad)  # type: ignore[arg-type]
    assert grid.run.run_id == 1


def test_set_run_changes_the_run_id_new_messages_and_replies_carry() -> None:
    grid = VirtualGrid(make_app(), [device(), device()])
    grid.set_run(fi.empty_run(42))
    assert grid.run.run_id == 42
    msg = train_msg(grid, 0)
    assert msg.metadata.run_id == 42  # built after set_run: Flower takes it from TaskIdentity
    (reply,) = grid.send_and_receive([msg])
    assert reply.metadata.run_id == 42 and not reply.has_error()
    assert "42" in msg.metadata.message_id  # grid-made ids name the run too
    (unknown,) = grid.pull_messages(["no-such-id"])
    assert unknown.metadata.run_id == 42


def test_run_property_returns_a_copy() -> None:
    grid = VirtualGrid(make_app(), [device()], run_id=5)
    run = grid.run
    assert run == grid.run and run is not grid.run
    run.run_id = 99
    assert grid.run.run_id == 5
    given = fi.empty_run(8)
    grid.set_run(given)
    given.run_id = 100  # the caller's object is not the grid's state either
    assert grid.run.run_id == 8


# -------------------------------------------------------------- Grid: pushing
@pytest.mark.parametrize("ttl", [0.0, -1.0, math.nan])
def test_push_refuses_a_non_positive_ttl_before_dispatching_anything(ttl: float) -> None:
    grid = VirtualGrid(make_app(), [device(), device()])
    good, bad = train_msg(grid, 0), train_msg(grid, 1)
    bad.metadata.ttl = ttl
    with pytest.raises(ValueError, match="ttl"):
        grid.push_messages([good, bad])
    assert grid.outcomes == {} and good.metadata.message_id == ""  # nothing dispatched
    assert grid.now == 0.0


def test_push_to_an_unknown_node_refuses_the_whole_push() -> None:
    """Deliberate difference: Flower's SuperLink stores the others; a simulation refuses."""
    grid = VirtualGrid(make_app(), [device()])
    msgs = [train_msg(grid, 0), Message(RecordDict({"arrays": arrays()}), 999_999, "train")]
    with pytest.raises(KeyError):
        grid.push_messages(msgs)
    assert grid.outcomes == {}


# ------------------------------------------------------- Grid: send_and_receive
@pytest.mark.parametrize("timeout", [-1.0, 0.0])
def test_send_and_receive_with_non_positive_timeout_pulls_nothing(timeout: float) -> None:
    """Flower's grids push, then their pull loop (`while time.time() < now + timeout`) never
    runs: no reply, even one that is already there (free evaluation arrives at once)."""
    grid = VirtualGrid(make_app(), [device(), device()], evaluation_cost=False)
    msgs = [Message(RecordDict(), grid.node_id(i), "evaluate") for i in range(2)]
    assert grid.send_and_receive(msgs, timeout=timeout) == []
    assert grid.now == 0.0
    assert all(m.metadata.message_id for m in msgs)  # they were pushed
    late = grid.pull_messages([m.metadata.message_id for m in msgs])
    assert all(r.has_error() for r in late)  # the server stopped waiting for them
    # a positive timeout still gets the (zero-latency) replies
    again = [Message(RecordDict(), grid.node_id(i), "evaluate") for i in range(2)]
    assert len(grid.send_and_receive(again, timeout=1.0)) == 2


# -------------------------------------------------------------- Grid: pulling
def test_unavailable_reply_is_flowers_error_stamped_with_virtual_time() -> None:
    grid = VirtualGrid(make_app(), [device()])
    grid.advance(123.5)
    msg = train_msg(grid, 0)
    assert len(grid.send_and_receive([msg])) == 1
    for mid in ("never-pushed", msg.metadata.message_id):  # unknown, then consumed
        (err,) = grid.pull_messages([mid])
        assert err.has_error() and err.error.code == ErrorCode.MESSAGE_UNAVAILABLE
        assert err.metadata.reply_to_message_id == mid
        assert err.metadata.created_at == grid.now  # virtual, not time.time()
        assert err.metadata.src_node_id == SUPERLINK_NODE_ID
        assert err.metadata.message_id  # Flower gives the error its own id


# ------------------------------------------------------- TiFL: waiting for nodes
def test_tifl_under_flowers_start_waits_for_late_nodes_before_profiling() -> None:
    """FedAvg's `sample_nodes` waits for min_available_nodes; so does TiFL, in virtual time."""
    starts = [0.0, 0.0, 50.0, 120.0, 300.0, 900.0]
    grid = VirtualGrid(make_app(), [device(OnlineFrom(t)) for t in starts])
    assert len(grid.get_node_ids()) == 2
    strategy = TiFL(
        policy="uniform",
        clients_per_round=2,
        num_tiers=2,
        profiling_rounds=1,
        t_max=100.0,
        min_available_nodes=len(starts),
        fraction_evaluate=0.0,
    )
    strategy.start(grid=grid, initial_arrays=arrays(), num_rounds=2, timeout=100.0)
    assert sorted(strategy.profile.count) == grid.all_node_ids()  # every node profiled
    assert sorted(n for t in strategy.tiers for n in t) == grid.all_node_ids()
    profiling = [o for o in grid.outcomes.values() if o.group_id == "profiling-1"]
    assert min(o.sent_at for o in profiling) == 900.0  # waited for the last one to connect


def test_tifl_that_can_never_have_enough_nodes_fails_loudly() -> None:
    grid = VirtualGrid(make_app(), [device(), device(OnlineFrom(math.inf))])
    strategy = TiFL(policy="uniform", clients_per_round=2, num_tiers=1, t_max=10.0)
    with pytest.raises(RuntimeError, match="min_available_nodes"):
        strategy.configure_train(1, arrays(), ConfigRecord(), grid)


# ---------------------------------------------------------- TiFL: its options
@pytest.mark.parametrize("option, value", [("fraction_train", 0.5), ("min_train_nodes", 3)])
def test_tifl_refuses_fedavg_options_it_would_ignore(option: str, value: object) -> None:
    with pytest.raises(TypeError, match=option):
        TiFL(**{option: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=option):
        check_strategy("tifl", {option: value})
    with pytest.raises(TypeError, match="nope"):
        TiFL(nope=1)  # type: ignore[call-arg]


def test_registry_builds_tifl_with_the_options_it_honours() -> None:
    strategy = build_strategy(
        "tifl",
        {"policy": "uniform", "t_max": 600.0},
        num_nodes=10,
        clients_per_round=3,
        federated_eval_fraction=0.2,
    )
    assert isinstance(strategy, TiFL)
    assert strategy.clients_per_round == 3 and strategy.min_available_nodes == 3
    assert strategy.min_train_nodes == 3  # derived: what loops waiting for nodes read
    assert strategy.fraction_evaluate == 0.2


def test_tifl_with_no_tiered_node_logs_and_raises(caplog: pytest.LogCaptureFixture) -> None:
    slow = [device(flops=1.0) for _ in range(3)]  # 1e7 FLOPs at 1 FLOP/s: never within t_max
    grid = VirtualGrid(make_app(), slow)
    strategy = TiFL(policy="uniform", clients_per_round=2, num_tiers=2, t_max=5.0)
    logger = logging.getLogger("flwr")
    logger.addHandler(caplog.handler)  # flwr's logger does not propagate to the root
    try:
        with pytest.raises(RuntimeError, match=r"t_max = 5 .*dropouts"):
            strategy.configure_train(1, arrays(), ConfigRecord(), grid)
    finally:
        logger.removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "no tiered node" in errors[0].getMessage()


# ------------------------------------------------------ Flower's private internals
def test_metadata_private_fields_the_grid_writes_exist() -> None:
    """`reply_metadata` and `set_message_id` write these `Metadata.__dict__` keys: a rename
    in Flower would add a stray key instead of setting the field."""
    md = Message(RecordDict(), 1001, "train").metadata
    written = {"_src_node_id", "_dst_node_id", "_reply_to_message_id", "_created_at", "_ttl"}
    assert written | {"_message_id"} <= set(vars(md))
    assert isinstance(md, Metadata)


def test_set_message_id_and_reply_metadata() -> None:
    fi.set_task_identity(3)
    msg = Message(RecordDict(), 1001, "train", group_id="g")
    assert msg.metadata.run_id == 3 and msg.metadata.src_node_id == SUPERLINK_NODE_ID
    fi.set_message_id(msg, "m-1")
    assert msg.metadata.message_id == "m-1"
    md = fi.reply_metadata(msg, created_at=7.0)
    assert (md.src_node_id, md.dst_node_id) == (1001, SUPERLINK_NODE_ID)
    assert md.reply_to_message_id == "m-1" and md.created_at == 7.0 and md.ttl == 0.0
    assert md.message_id == "" and md.group_id == "g" and md.run_id == 3
    assert msg.metadata.created_at != 7.0 or md is not msg.metadata  # a copy
    err = fi.make_message(md, error=fi_error())
    assert err.has_error() and err.metadata is md


def test_set_node_identity_is_what_a_workers_messages_carry() -> None:
    """A worker process running ClientApps sets the run and node of Flower's process identity;
    a reply built there carries them (the task id is left alone)."""
    from flwr.supercore.task_identity import TaskIdentity

    fi.set_task_identity(1, task_id=9)
    fi.set_node_identity(5, 1007)
    assert (TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id) == (5, 1007, 9)
    msg = Message(RecordDict(), 1001, "train")
    assert msg.metadata.run_id == 5


def fi_error():  # type: ignore[no-untyped-def]
    from flwr.app import Error

    return Error(code=ErrorCode.REPLY_MESSAGE_UNAVAILABLE, reason="expired")


def test_unavailable_reply_is_deterministic_and_flowers_layout() -> None:
    a = fi.unavailable_reply("x", 4, created_at=2.5)
    b = fi.unavailable_reply("x", 4, created_at=2.5)
    assert a.metadata.message_id == b.metadata.message_id == a.object_id
    assert a.metadata.message_type == "system" and a.metadata.ttl == 0
    assert a.metadata.run_id == 4 and a.metadata.created_at == 2.5
    assert a.error.code == ErrorCode.MESSAGE_UNAVAILABLE


def test_run_helpers_and_array_copy() -> None:
    run = fi.empty_run(11)
    assert isinstance(run, fi.Run) and run.run_id == 11
    copy = fi.copy_run(run)
    assert copy == run and copy is not run
    arr = Array(np.arange(6, dtype=np.float32).reshape(2, 3))
    new = fi.copy_array(arr)
    assert new is not arr and new.data is arr.data
    np.testing.assert_array_equal(new.numpy(), arr.numpy())
    if isinstance(arr.shape, list):
        new.shape.append(1)
        assert arr.shape == [2, 3]
