"""Property tests (hypothesis): aggregators, tiering, the virtual clock and message outcomes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl.sim.availability import OnOff
from fl.sim.devices import DeviceProfile
from fl.sim.grid import VirtualGrid
from fl.sim.outcomes import PENDING
from fl.strategies import BlockGeometricMedian, GeometricMedian
from fl.strategies.tiers import split_tiers

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


def _replies(rows: np.ndarray, order: list[int], weights: list[int]) -> list[Message]:
    """Replies carrying `rows[i]` (as model "w") from node i, pushed in `order`."""

    def app(msg: Message, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        metrics = MetricRecord({"num-examples": weights[i]})
        content = RecordDict({"arrays": ArrayRecord({"w": Array(rows[i])}), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    n = len(rows)
    grid = VirtualGrid(app, [DeviceProfile(flops_per_s=1e9, down_bps=1e12, up_bps=1e12)] * n)
    ref = ArrayRecord({"w": Array(np.zeros(rows.shape[1], dtype=np.float32))})
    msgs = [
        Message(RecordDict({"arrays": ref, "config": ConfigRecord({})}), grid.node_id(i), "train")
        for i in order
    ]
    return list(grid.send_and_receive(msgs))


def _aggregators(n: int) -> dict[str, object]:
    gm, bgmd = GeometricMedian(), BlockGeometricMedian(beta=0.5)
    return {
        "fedavg": FedAvg(),
        "fedmedian": FedMedian(),
        "trimmed": FedTrimmedAvg(beta=0.2),
        "krum": Krum(num_malicious_nodes=max(0, (n - 3) // 2)),
        "gm": gm,
        "bgmd": bgmd,
    }


def _aggregate(name: str, rows: np.ndarray, order: list[int], weights: list[int]) -> np.ndarray:
    aggs = _aggregators(len(rows))
    strategy = aggs[name]
    if hasattr(strategy, "set_reference"):
        zero = ArrayRecord({"w": Array(np.zeros(rows.shape[1], dtype=np.float32))})
        strategy.set_reference(zero)  # type: ignore[attr-defined]
    out, _ = strategy.aggregate_train(1, _replies(rows, order, weights))  # type: ignore[attr-defined]
    assert out is not None
    return out["w"].numpy()


AGGREGATORS = ["fedavg", "fedmedian", "trimmed", "krum", "gm", "bgmd"]


@settings(max_examples=25, deadline=None)
@given(
    data=arrays(np.float32, st.tuples(st.integers(4, 7), st.integers(1, 5)), elements=finite),
    name=st.sampled_from(AGGREGATORS),
    perm_seed=st.integers(0, 2**31 - 1),
)
def test_aggregators_are_permutation_invariant(data: np.ndarray, name: str, perm_seed: int) -> None:
    n = len(data)
    if name == "bgmd":  # columns of equal norm: either is a top-k block; rounding decides
        norms = np.sort(np.linalg.norm(data.astype(np.float64), axis=0))
        assume(bool((np.diff(norms) > 1e-6 * (norms[1:] + 1.0)).all()))
    weights = [10] * n  # equal weights: Krum and the medians are unweighted
    a = _aggregate(name, data, list(range(n)), weights)
    order = [int(i) for i in np.random.default_rng(perm_seed).permutation(n)]
    b = _aggregate(name, data, order, weights)
    scale = float(np.abs(data).max()) + 1.0
    assert np.isfinite(a).all() and np.isfinite(b).all()
    # GM/BGMD iterate to a tolerance from a start that depends on summation order: equal to the
    # solver's precision; the others are exact up to float summation order
    tol = 1e-3 if name in ("gm", "bgmd") else 1e-5
    if name == "krum":  # rows with tied scores: Krum may pick either, but picks a tied best row
        rows = {tuple(r) for r in data.tolist()}
        assert tuple(a.tolist()) in rows and tuple(b.tolist()) in rows
        assert _krum_score(data, a) == pytest.approx(_krum_score(data, b), rel=1e-5, abs=1e-6)
        return
    assert np.abs(a - b).max() <= tol * scale


def _krum_score(data: np.ndarray, chosen: np.ndarray) -> float:
    """Krum's score of a row: the sum of squared distances to its n − f − 2 nearest others."""
    n = len(data)
    f = max(0, (n - 3) // 2)
    d = np.sort(((data.astype(np.float64) - chosen) ** 2).sum(axis=1))[1:]  # drop itself
    return float(d[: max(1, n - f - 2)].sum())


@settings(max_examples=25, deadline=None)
@given(
    row=arrays(np.float32, st.integers(1, 6), elements=finite),
    n=st.integers(4, 7),
    name=st.sampled_from(AGGREGATORS),
)
def test_robust_aggregators_equal_the_mean_when_all_updates_agree(
    row: np.ndarray, n: int, name: str
) -> None:
    rows = np.stack([row] * n)
    out = _aggregate(name, rows, list(range(n)), [3 + i for i in range(n)])
    tol = 1e-5 * (float(np.abs(row).max()) + 1.0)
    if name == "bgmd":  # β = 0.5: the block gets the common update, the rest waits in memory
        applied = np.isclose(out, row, atol=tol)
        assert (applied | np.isclose(out, 0.0, atol=tol)).all()
        assert applied.sum() >= max(1, int(0.5 * len(row)))  # k = max(1, ⌊β·d⌋)
    else:
        assert np.allclose(out, row, atol=tol)


@settings(max_examples=30, deadline=None)
@given(
    data=arrays(np.float64, st.tuples(st.integers(2, 8), st.integers(1, 6)),
                elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
    beta=st.sampled_from([0.1, 0.5, 1.0]),
)  # fmt: skip
def test_bgmd_output_is_finite_for_finite_input(data: np.ndarray, beta: float) -> None:
    strategy = BlockGeometricMedian(beta=beta)
    strategy.set_reference(ArrayRecord({"w": Array(np.zeros(data.shape[1]))}))
    out, _ = strategy.aggregate_train(1, _replies(data, list(range(len(data))), [1] * len(data)))
    assert out is not None and np.isfinite(out["w"].numpy()).all()


@settings(max_examples=60, deadline=None)
@given(
    latency=st.dictionaries(
        st.integers(1, 2**64 - 1), st.floats(0, 1e4, allow_nan=False), min_size=0, max_size=30
    ),
    m=st.integers(1, 6),
    method=st.sampled_from(["quantile", "histogram"]),
)
def test_tiering_is_a_partition_ordered_by_latency(
    latency: dict[int, float], m: int, method: str
) -> None:
    tiers = split_tiers(latency, m, method)
    assert len(tiers) == m
    flat = [n for t in tiers for n in t]
    assert sorted(flat) == sorted(latency) and len(set(flat)) == len(flat)
    for fast, slow in itertools.pairwise(tiers):
        if fast and slow:
            assert max(latency[n] for n in fast) <= min(latency[n] for n in slow)


op = st.one_of(
    st.tuples(st.just("push"), st.lists(st.integers(0, 5), min_size=1, max_size=4)),
    st.tuples(st.just("pull"), st.integers(0, 3)),
    st.tuples(st.just("advance"), st.floats(0, 50)),
    st.tuples(st.just("send"), st.floats(0.5, 30)),
)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=25), seed=st.integers(0, 1000))
def test_clock_never_goes_back_and_every_message_gets_one_outcome(
    ops: list[tuple[str, object]], seed: int
) -> None:
    def app(msg: Message, context: Context) -> Message:
        if int(context.node_config["partition-id"]) == 5:
            raise RuntimeError("crash")
        metrics = MetricRecord({"num-examples": 1, "work-flops": 1e7})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    devices = [
        DeviceProfile(
            flops_per_s=1e6 * (i + 1),
            down_bps=1e7,
            up_bps=1e7,
            availability=OnOff(20.0, 10.0, seed=(seed, i)),
            failure_prob=0.2 if i == 4 else 0.0,
            compute_jitter=0.5,
        )
        for i in range(6)
    ]
    grid = VirtualGrid(app, devices, seed=seed)
    pushed: list[str] = []
    answered: list[str] = []
    last = grid.now
    for kind, arg in ops:
        if kind == "push":
            msgs = [Message(RecordDict(), grid.node_id(i), "train", ttl=40.0) for i in arg]  # type: ignore[union-attr]
            pushed += grid.push_messages(msgs)
        elif kind == "pull":
            waiting = [m for m in pushed if m not in answered]
            got = grid.pull_messages(waiting[: int(arg) + 1])  # type: ignore[call-overload]
            answered += [r.metadata.reply_to_message_id for r in got]
        elif kind == "advance":
            grid.advance(float(arg))  # type: ignore[arg-type]
        else:
            msgs = [Message(RecordDict(), grid.node_id(i), "train", ttl=40.0) for i in range(6)]
            before = set(grid.outcomes)
            grid.send_and_receive(msgs, timeout=float(arg))  # type: ignore[arg-type]
            assert all(o.status != PENDING for k, o in grid.outcomes.items() if k not in before)
        assert grid.now >= last
        last = grid.now
    assert len(answered) == len(set(answered))  # never twice
    grid.advance(1e6)
    rest = [m for m in pushed if m not in answered]
    for reply in grid.pull_messages(rest):
        answered.append(reply.metadata.reply_to_message_id)
    assert sorted(answered) == sorted(pushed)  # exactly one outcome each (reply or error)
    assert all(o.status != PENDING for o in grid.outcomes.values())
    assert all(math.isfinite(o.arrives_at) for o in grid.outcomes.values())


away_from_zero = st.floats(1.0, 1e3, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    magnitudes=arrays(np.float32, st.integers(1, 8), elements=away_from_zero),
    signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=8, max_size=8),
    n=st.integers(4, 7),
    beta=st.sampled_from([0.1, 0.3, 0.5, 0.75, 1.0]),
)
def test_bgmd_applies_exactly_k_coordinates_when_all_updates_agree(
    magnitudes: np.ndarray, signs: list[float], n: int, beta: float
) -> None:
    # Every coordinate of the common update is ≥ 1 in size, so "applied" (≈ the update) and
    # "held in memory" (exactly 0) cannot both hold: exactly k = max(1, ⌊β·d⌋) are applied.
    row = (magnitudes * np.asarray(signs[: len(magnitudes)], dtype=np.float32)).astype(np.float32)
    d = len(row)
    k = max(1, int(beta * d))
    strategy = BlockGeometricMedian(beta=beta)
    strategy.set_reference(ArrayRecord({"w": Array(np.zeros(d, dtype=np.float32))}))
    rows = np.stack([row] * n)
    out, _ = strategy.aggregate_train(1, _replies(rows, list(range(n)), [3 + i for i in range(n)]))
    assert out is not None
    got = out["w"].numpy()
    applied = np.isclose(got, row, rtol=1e-5, atol=0)
    held = got == 0.0
    assert not (applied & held).any() and (applied | held).all()
    assert int(applied.sum()) == k == strategy.last_round_info["block_size"]
    assert strategy.memory is not None
    np.testing.assert_allclose(strategy.memory.numpy()[held], row[held], rtol=1e-5)
    assert (strategy.memory.numpy()[applied] == 0).all()
