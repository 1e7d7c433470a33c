"""Metadata and timing lies (`attack.lies`): config, the wrapper's replies, fast_lane, a run."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from fl.experiment import build_grid, run_experiment
from fl.experiment.build import byzantine_apps, experiment_devices
from fl.experiment.config import ExperimentConfig, load_dict
from fl.experiment.results import RunResult
from fl.schema import ConfigError
from fl.sim.attacks import (
    LIES,
    AttackConfig,
    ByzantineClientApp,
    fast_lane,
    forge_label_counts,
    inflate_counts,
    malicious_nodes,
    speed_order,
)
from fl.sim.devices import DeviceProfile, make_population
from fl.sim.grid import FIRST_NODE_ID

NUM_NODES = 10
# Node pid's honest label counts: 12 + pid examples processed (pid more on class 0), class 3
# the rarest (1 example).
BASE_COUNTS = [4, 2, 3, 1, 2]


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower needs a task identity to build instruction messages."""
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    TaskIdentity.task_id = 1


def label_counts(pid: int) -> list[int]:
    counts = list(BASE_COUNTS)
    counts[0] += pid
    return counts


def make_app() -> ClientApp:
    """Honest fake: w += offset(pid, round) (float32), b += 0.1·round (float64), steps += 1."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        arrays = msg.content["arrays"]
        w = arrays["w"].numpy()
        offset = np.random.default_rng((pid, rnd)).normal(0.0, 0.1, w.shape)
        rec = ArrayRecord(
            {
                "w": Array((w + offset).astype(np.float32)),
                "b": Array(arrays["b"].numpy() + 0.1 * rnd),
                "steps": Array(arrays["steps"].numpy() + 1),
            }
        )
        counts = label_counts(pid)
        metrics = MetricRecord(
            {
                "train_loss": 0.5,
                "num-examples": 10 + pid,
                "examples-processed": sum(counts),
                "work-flops": 1e6,
                "label-counts": counts,
            }
        )
        return Message(RecordDict({"arrays": rec, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 3})}), reply_to=msg)

    return app


def instruction(pid: int, server_round: int = 1, kind: str = "train") -> Message:
    """A train instruction carrying global model g_round (different for every round)."""
    rng = np.random.default_rng(1000 + server_round)
    glob = ArrayRecord(
        {
            "w": Array(rng.normal(0, 1, (6, 5)).astype(np.float32)),
            "b": Array(rng.normal(0, 1, 3)),
            "steps": Array(np.array([7 + server_round], dtype=np.int64)),
        }
    )
    content = RecordDict(
        {"arrays": glob, "config": ConfigRecord({"server-round": server_round, "lr": 0.1})}
    )
    msg = Message(content, dst_node_id=FIRST_NODE_ID + pid, message_type=kind)
    msg.metadata.__dict__["_message_id"] = f"m{pid}-{server_round}"
    return msg


def context(pid: int) -> Context:
    return Context(
        run_id=1,
        node_id=FIRST_NODE_ID + pid,
        node_config={"partition-id": pid, "num-partitions": NUM_NODES},
        state=RecordDict(),
        run_config={},
    )


def honest(pid: int, server_round: int = 1) -> Message:
    return make_app()(instruction(pid, server_round), context(pid))


def delta(reply: Message, ins: Message, key: str = "w") -> np.ndarray:
    w = reply.content["arrays"][key].numpy().astype(np.float64)
    return w - ins.content["arrays"][key].numpy().astype(np.float64)


def metrics(reply: Message) -> dict:
    return dict(reply.content["metrics"])


# ------------------------------------------------------------------------------- config
def test_lies_load_from_toml_as_a_tuple_and_round_trip() -> None:
    cfg = load_dict(
        {
            "num_nodes": 20,
            "attack": {
                "lies": ["inflate_examples", "stale_replay"],
                "fraction": 0.2,
                "inflate_factor": 50,
            },
        }
    )
    assert cfg.attack.lies == ("inflate_examples", "stale_replay")
    assert cfg.attack.inflate_factor == 50.0 and cfg.attack.kind == "none"
    assert ExperimentConfig.from_run_config(cfg.to_run_config()) == cfg
    assert ExperimentConfig.from_run_config(cfg.to_flower_run_config()) == cfg
    assert AttackConfig(lies=["fast_lane"]).lies == ("fast_lane",)  # type: ignore[arg-type]
    assert AttackConfig().lies == () and AttackConfig().inflate_factor == 1000.0


@pytest.mark.parametrize(
    "lies", [["teleport"], ["forge_labels", "forge_labels"], "inflate_examples", [3]]
)
def test_bad_lies_name_the_key_and_the_allowed_lies(lies: object) -> None:
    with pytest.raises(ConfigError) as err:
        load_dict({"attack": {"lies": lies, "fraction": 0.2}})
    assert err.value.key is not None and err.value.key.startswith("attack.lies")
    if err.value.key == "attack.lies" and not isinstance(lies, str):
        assert all(name in str(err.value) for name in LIES)


@pytest.mark.parametrize("factor", [0.5, 0.0, -2.0, math.inf, math.nan])
def test_inflate_factor_must_be_finite_and_at_least_one(factor: float) -> None:
    with pytest.raises(ConfigError) as err:
        load_dict({"attack": {"lies": ["inflate_examples"], "inflate_factor": factor}})
    assert err.value.key == "attack.inflate_factor"
    assert AttackConfig(inflate_factor=1).inflate_factor == 1


def test_lies_alone_make_nodes_malicious_nested_with_the_attack_kinds() -> None:
    liars = AttackConfig(lies=("forge_labels",), fraction=0.2)
    bad = malicious_nodes(liars, 50, seed=7)
    assert len(bad) == 10
    assert bad == malicious_nodes(AttackConfig(kind="sign_flip", fraction=0.2), 50, seed=7)
    assert bad < malicious_nodes(dataclasses.replace(liars, fraction=0.3), 50, seed=7)
    assert malicious_nodes(dataclasses.replace(liars, fraction=0.0), 50, 7) == frozenset()
    assert malicious_nodes(AttackConfig(fraction=0.2), 50, 7) == frozenset()


def test_byzantine_apps_wrap_liars_in_replies_but_not_fast_lane_alone() -> None:
    tree = {"num_nodes": 10, "data": {"name": "digits"}, "model": {"name": "logreg"}}
    cfg = load_dict({**tree, "attack": {"lies": ["inflate_examples"], "fraction": 0.3}})
    apps = byzantine_apps(cfg)
    assert apps is not None
    bad = malicious_nodes(cfg.attack, 10, cfg.seed)
    wrapped = {i for i in range(10) if apps(FIRST_NODE_ID + i) is not None}
    assert wrapped == set(bad) and len(bad) == 3
    fast = load_dict({**tree, "attack": {"lies": ["fast_lane"], "fraction": 0.3}})
    assert byzantine_apps(fast) is None
    none = load_dict({**tree, "attack": {"lies": ["inflate_examples"], "fraction": 0.0}})
    assert byzantine_apps(none) is None


# ------------------------------------------------------------------------ inflate_examples
def test_inflate_examples_scales_the_claimed_examples_consistently() -> None:
    pid = 4
    cfg = AttackConfig(lies=("inflate_examples",), fraction=0.2, inflate_factor=1000)
    ins = instruction(pid)
    reply = ByzantineClientApp(make_app(), cfg, pid, 0)(ins, context(pid))
    good = honest(pid)
    got, want = metrics(reply), metrics(good)
    assert got["num-examples"] == 14_000 and isinstance(got["num-examples"], int)
    assert got["examples-processed"] == want["examples-processed"] * 1000 == 16_000
    assert got["label-counts"] == [c * 1000 for c in want["label-counts"]]
    assert sum(got["label-counts"]) == got["examples-processed"]
    assert got["work-flops"] == want["work-flops"] and got["train_loss"] == want["train_loss"]
    for k in ("w", "b", "steps"):  # kind none: the model is the honest one
        np.testing.assert_array_equal(
            reply.content["arrays"][k].numpy(), good.content["arrays"][k].numpy()
        )


def test_inflated_counts_keep_their_sum_for_a_non_integer_factor() -> None:
    assert inflate_counts([1, 1, 1], 2.5) == [3, 3, 2]  # 7.5 each → floors 6, +2: sum 8
    assert sum(inflate_counts([3, 0, 7, 1], 1.37)) == round(11 * 1.37)
    assert inflate_counts([1.5, 0.0], 2.0) == [3.0, 0.0]
    pid = 2
    cfg = AttackConfig(lies=("inflate_examples",), fraction=0.2, inflate_factor=2.5)
    got = metrics(ByzantineClientApp(make_app(), cfg, pid, 0)(instruction(pid), context(pid)))
    assert got["num-examples"] == round(12 * 2.5) == 30
    assert sum(got["label-counts"]) == got["examples-processed"] == round(14 * 2.5)


def test_sign_flip_with_inflated_examples_composes() -> None:
    pid = 6
    cfg = AttackConfig(kind="sign_flip", fraction=0.2, lies=("inflate_examples",))
    ins = instruction(pid)
    reply = ByzantineClientApp(make_app(), cfg, pid, 0)(ins, context(pid))
    good = honest(pid)
    np.testing.assert_allclose(delta(reply, ins), -5.0 * delta(good, ins), rtol=0, atol=1e-5)
    np.testing.assert_allclose(delta(reply, ins, "b"), -5.0 * delta(good, ins, "b"), rtol=1e-12)
    np.testing.assert_array_equal(reply.content["arrays"]["steps"].numpy(), [9])
    assert metrics(reply)["num-examples"] == 16_000
    assert metrics(reply)["examples-processed"] == 18_000


# ---------------------------------------------------------------------------- forge_labels
def test_forge_labels_puts_every_example_on_the_rarest_class() -> None:
    assert forge_label_counts([4, 2, 3, 1, 2]) == [0, 0, 0, 12, 0]
    assert forge_label_counts([5, 0, 2, 0]) == [0, 7, 0, 0]  # tie: the lowest index
    assert forge_label_counts([2.0, 1.0]) == [0.0, 3.0]
    pid = 3
    cfg = AttackConfig(lies=("forge_labels",), fraction=0.2)
    reply = ByzantineClientApp(make_app(), cfg, pid, 0)(instruction(pid), context(pid))
    got, want = metrics(reply), metrics(honest(pid))
    assert want["label-counts"] == [7, 2, 3, 1, 2]
    assert got["label-counts"] == [0, 0, 0, 15, 0]
    assert all(isinstance(c, int) for c in got["label-counts"])
    assert got["examples-processed"] == want["examples-processed"] == 15
    assert got["num-examples"] == want["num-examples"]  # no inflation asked for


def test_forged_then_inflated_labels_stay_consistent() -> None:
    pid = 0
    cfg = AttackConfig(lies=("inflate_examples", "forge_labels"), fraction=0.2, inflate_factor=10)
    got = metrics(ByzantineClientApp(make_app(), cfg, pid, 0)(instruction(pid), context(pid)))
    assert got["label-counts"] == [0, 0, 0, 120, 0]
    assert got["examples-processed"] == 120 and got["num-examples"] == 100


def test_a_reply_without_label_counts_is_not_given_any() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        rec = ArrayRecord({k: Array(a.numpy()) for k, a in msg.content["arrays"].items()})
        return Message(
            RecordDict({"arrays": rec, "metrics": MetricRecord({"num-examples": 5})}),
            reply_to=msg,
        )

    cfg = AttackConfig(lies=("forge_labels", "inflate_examples"), fraction=0.2, inflate_factor=3)
    reply = ByzantineClientApp(app, cfg, 1, 0)(instruction(1), context(1))
    assert metrics(reply) == {"num-examples": 15}


def test_lies_leave_evaluate_replies_alone() -> None:
    cfg = AttackConfig(lies=("forge_labels", "inflate_examples", "stale_replay"), fraction=0.2)
    ctx = context(2)
    reply = ByzantineClientApp(make_app(), cfg, 2, 0)(instruction(2, kind="evaluate"), ctx)
    assert metrics(reply) == {"num-examples": 3}
    assert "fl.attack.replay" not in ctx.state


# ---------------------------------------------------------------------------- stale_replay
@pytest.mark.parametrize("kind", ["none", "sign_flip"])
def test_stale_replay_sends_the_first_update_on_every_later_model(kind: str) -> None:
    pid = 5
    cfg = AttackConfig(kind=kind, fraction=0.2, lies=("stale_replay",))
    byz = ByzantineClientApp(make_app(), cfg, pid, 0)
    ctx = context(pid)
    first_ins, second_ins, third_ins = instruction(pid, 1), instruction(pid, 2), instruction(pid, 5)
    first = byz(first_ins, ctx)
    second = byz(second_ins, ctx)
    third = byz(third_ins, ctx)
    honest1, honest2 = honest(pid, 1), honest(pid, 2)
    scale = 1.0 if kind == "none" else -5.0
    # The first reply is the node's attack as without the lie (honest for kind none).
    np.testing.assert_allclose(
        delta(first, first_ins), scale * delta(honest1, first_ins), rtol=0, atol=1e-5
    )
    if kind == "none":
        for k in ("w", "b", "steps"):
            np.testing.assert_array_equal(
                first.content["arrays"][k].numpy(), honest1.content["arrays"][k].numpy()
            )
    d0, d0_b = delta(first, first_ins), delta(first, first_ins, "b")
    for ins, reply in ((second_ins, second), (third_ins, third)):
        np.testing.assert_allclose(delta(reply, ins), d0, rtol=0, atol=1e-6)  # float32 precision
        np.testing.assert_allclose(delta(reply, ins, "b"), d0_b, rtol=0, atol=1e-12)
        assert reply.content["arrays"]["w"].dtype == first.content["arrays"]["w"].dtype
    # ... and not the update it would have sent honestly (or attacked) for round 2.
    assert np.abs(delta(second, second_ins) - scale * delta(honest2, second_ins)).max() > 0.05
    # Integer buffers and metrics are those of the current (honest) task.
    np.testing.assert_array_equal(second.content["arrays"]["steps"].numpy(), [10])
    assert metrics(second) == metrics(honest2)
    stored = ctx.state.array_records["fl.attack.replay"]
    assert set(stored) == {"w", "b"} and stored["w"].dtype == "float64"


# ------------------------------------------------------------------------------- fast_lane
def _device(flops: float, down: float = 1e6, up: float = 1e6, group: str = "") -> DeviceProfile:
    return DeviceProfile(flops_per_s=flops, down_bps=down, up_bps=up, group=group)


def test_fast_lane_gives_the_malicious_nodes_the_fastest_profiles() -> None:
    devices = [
        _device(1e6, group="a"),
        _device(5e6, group="b"),
        _device(3e6, group="c"),
        _device(5e6, down=2e6, group="d"),  # ties b on speed, faster links: ranks first
        _device(2e6, group="e"),
        _device(3e6, group="f"),  # ties c exactly: the lower index (c) ranks first
    ]
    assert speed_order(devices) == [3, 1, 2, 5, 4, 0]
    out = fast_lane(devices, {4, 0, 5})
    assert [d.group for d in out] == ["d", "a", "e", "f", "b", "c"]
    # malicious 0, 4, 5 get the three fastest (d, b, c) in speed order; honest 1, 2, 3 keep
    # the rest (a, e, f) in their original order.
    assert [d.group for d in devices] == ["a", "b", "c", "d", "e", "f"]  # input untouched
    assert fast_lane(devices, set()) == devices
    assert sorted(map(id, fast_lane(devices, {1, 2}))) == sorted(map(id, devices))  # a permutation
    with pytest.raises(ValueError, match="outside"):
        fast_lane(devices, {6})


def test_fast_lane_on_a_tiered_population_and_in_the_experiments_grid() -> None:
    tree = {
        "num_nodes": 50,
        "data": {"name": "digits"},
        "model": {"name": "logreg"},
        "devices": {"kind": "tiers", "flops_per_s": 3e7},  # TiFL's 5 groups
    }
    cfg = load_dict({**tree, "attack": {"lies": ["fast_lane"], "fraction": 0.2}})
    bad = sorted(malicious_nodes(cfg.attack, 50, cfg.seed))
    base = make_population(cfg.devices, 50, cfg.seed)
    grid = build_grid(cfg)
    flops = sorted((d.flops_per_s for d in base), reverse=True)
    mean_bad = float(np.mean([grid.devices[i].flops_per_s for i in bad]))
    assert len(bad) == 10 and mean_bad == float(np.mean(flops[:10])) == 4 * 3e7
    assert np.mean([d.flops_per_s for d in base]) < 0.5 * mean_bad  # the lie matters
    assert {grid.devices[i].group for i in bad} == {"tier-1"}
    honest_idx = [i for i in range(50) if i not in set(bad)]
    top = set(speed_order(base)[:10])
    assert [grid.devices[i] for i in honest_idx] == [base[i] for i in range(50) if i not in top]
    mobile = load_dict(
        {**tree, "devices": {"kind": "mobile"}, "attack": {"lies": ["fast_lane"], "fraction": 0.1}}
    )
    got = experiment_devices(mobile)  # what build_grid uses
    five = sorted(malicious_nodes(mobile.attack, 50, mobile.seed))
    fastest = sorted(d.flops_per_s for d in make_population(mobile.devices, 50, 0))[-5:]
    assert sorted(got[i].flops_per_s for i in five) == fastest
    plain = build_grid(load_dict(tree)).devices
    assert plain == base  # no lie: the population as made


# ------------------------------------------------------------------------------- end to end
def _digits(strategy: str = "fedavg", rounds: int = 3, **attack: object) -> ExperimentConfig:
    return load_dict(
        {
            "seed": 2,
            "num_nodes": 6,
            "rounds": rounds,
            "executor": "batched",  # malicious nodes run beside the batch, one at a time
            "data": {"name": "digits", "partition": "dirichlet", "alpha": 0.5},
            "model": {"name": "logreg"},
            "devices": {"kind": "tiers", "flops_per_s": 1e7},
            "train": {"steps": 4, "batch_size": 16, "lr": 0.1},
            "strategy": {"name": strategy},
            "attack": {"fraction": 0.34, **attack},
        }
    )


def _outcomes(result: RunResult) -> list[tuple]:
    return [
        (o.node_id, o.status, o.arrives_at, o.up_bytes, o.work_flops)
        for o in result.grid.outcomes.values()  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize(("strategy", "rounds"), [("fedavg", 3), ("adasgd", 8)])
def test_a_run_with_every_reply_lie_and_sign_flip_is_bit_identical(
    strategy: str, rounds: int
) -> None:
    lies = ["inflate_examples", "forge_labels", "stale_replay"]
    cfg = _digits(strategy, rounds, kind="sign_flip", lies=lies, inflate_factor=2.5)
    a, b = run_experiment(cfg), run_experiment(cfg)
    drop = {"wall_time", "aggregation_wall_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in a.rows] == [
        {k: v for k, v in r.items() if k not in drop} for r in b.rows
    ]
    assert all(np.array_equal(a.arrays[k].numpy(), b.arrays[k].numpy()) for k in a.arrays)
    assert _outcomes(a) == _outcomes(b)
    # The liars are consistent: the server's reply checks (label counts summing to the
    # examples processed, with a factor that needs rounding) reject none of them.
    assert all(r.get("num_rejected", 0) == 0 for r in a.rows)
    bad = sorted(malicious_nodes(cfg.attack, cfg.num_nodes, cfg.seed))
    assert len(bad) == 2
    replayed = [i for i in bad if "fl.attack.replay" in a.grid.context(FIRST_NODE_ID + i).state]  # type: ignore[attr-defined]
    assert replayed  # a malicious node trained, and kept its first update to replay
    plain = run_experiment(_digits(strategy, rounds, kind="sign_flip"))
    assert not all(np.array_equal(a.arrays[k].numpy(), plain.arrays[k].numpy()) for k in a.arrays)
