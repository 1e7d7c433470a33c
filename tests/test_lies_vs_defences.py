"""Each lie of `attack.lies` does what it claims to an undefended strategy, and the documented
defence takes it back: the acceptance tests of the adversarial issue."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fl.experiment import run_experiment
from fl.experiment.config import load_dict
from fl.loops.asynchronous import AsyncSettings, run_async
from fl.loops.synchronous import LoopSettings, run_rounds
from fl.sim.attacks import AttackConfig, ByzantineClientApp, malicious_nodes
from fl.sim.devices import DeviceProfile
from fl.sim.grid import FIRST_NODE_ID, VirtualGrid
from fl.strategies import AdaSGD, GeometricMedian

D = 20
CLASSES = 10


def toy_app() -> ClientApp:
    """δ = 1 + 0.1·N(0, 1) (seeded by node), 10 examples, labels spread evenly (2 per class)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        g = msg.content["arrays"]["w"].numpy()
        rnd = int(msg.content["config"].get("server-round", 0))
        w = g + 1.0 + 0.1 * np.random.default_rng((pid, rnd)).normal(size=g.shape)
        metrics = MetricRecord(
            {
                "num-examples": 10,
                "examples-processed": 2 * CLASSES,
                "label-counts": [2] * CLASSES,
                "work-flops": 1e6,
            }
        )
        arrays = ArrayRecord({"w": Array(w.astype(np.float32))})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def toy_grid(attack: AttackConfig, n: int, slow: frozenset[int] = frozenset()) -> VirtualGrid:
    """`n` nodes; partition 0 runs `attack`; the nodes in `slow` compute 20× slower."""
    devices = [
        DeviceProfile(flops_per_s=5e7 if p in slow else 1e9, down_bps=1e9, up_bps=1e9)
        for p in range(n)
    ]
    app = toy_app()
    wrapped = {FIRST_NODE_ID: ByzantineClientApp(app, attack, 0, 0)}
    return VirtualGrid(app, devices, seed=0, client_app_for=wrapped.get)


def initial() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(D, dtype=np.float32))})


def test_inflate_examples_owns_fedavg_and_not_the_default_gm() -> None:
    n, factor = 10, 1000.0
    attack = AttackConfig(kind="sign_flip", lies=("inflate_examples",), fraction=0.1,
                          inflate_factor=factor)  # fmt: skip
    honest = np.stack(
        [1.0 + 0.1 * np.random.default_rng((p, 1)).normal(size=D) for p in range(1, n)]
    )
    liar = -5.0 * (1.0 + 0.1 * np.random.default_rng((0, 1)).normal(size=D))
    # FedAvg's weighted mean with the liar's claimed 10 · 1000 examples against 9 × 10 honest.
    expected = (10 * honest.sum(axis=0) + 10 * factor * liar) / (9 * 10 + 10 * factor)
    out = {}
    for name, strategy in (
        ("fedavg", FedAvg(fraction_evaluate=0.0, min_available_nodes=n)),
        ("gm", GeometricMedian(fraction_evaluate=0.0, min_available_nodes=n)),
    ):
        random.seed(0)
        res = run_rounds(strategy, toy_grid(attack, n), initial(), LoopSettings(num_rounds=1))
        out[name] = res.arrays["w"].numpy().astype(np.float64)
    np.testing.assert_allclose(out["fedavg"], expected, rtol=1e-5)
    assert np.abs(out["fedavg"] - liar).max() < 0.1  # the liar's flipped update, nearly alone
    spread = float((honest.max(axis=0) - honest.min(axis=0)).max())
    assert np.abs(out["gm"] - np.median(honest, axis=0)).max() <= spread


def test_forge_labels_makes_adasgd_boost_the_attacker_unless_the_boost_is_off() -> None:
    """Node 0 is a straggler (its updates are stale) that reports all its labels on one class:
    its weight is λ(τ)/BC instead of λ(τ). `max_weight` caps it at a fresh update's weight 1
    (binding only when λ/BC > 1); `boost = False` takes the lever away."""
    n = 10
    attack = AttackConfig(lies=("forge_labels",), fraction=0.1)
    liar_rows = {}
    for boost in (True, False):
        strategy = AdaSGD(concurrency=5, max_weight=float("inf"), boost=boost, seed=0)
        random.seed(0)
        grid = toy_grid(attack, n, slow=frozenset({0}))
        res = run_async(strategy, grid, initial(), AsyncSettings(max_updates=300))
        liar_rows[boost] = [r for r in res.rows if r.get("nodes") == "1001"]
        assert len(liar_rows[boost]) >= 3
    boosted = [r for r in liar_rows[True] if r["boosted"] == 1.0]
    assert len(boosted) >= 2, "the straggler's updates are stale enough to be boosted"
    for r in boosted:  # one-hot labels against ≈ uniform ones: BC = √(1/10), boost ≈ 3.16
        assert r["boost"] == pytest.approx(1 / np.sqrt(0.1), rel=0.1)
        lam = 1.0 / (r["tau_thres"] + 1)  # λ at τ ≥ τ_thres (the capped exponent)
        assert r["weight"] == pytest.approx(r["boost"] * lam)
    for r in liar_rows[False]:  # no boost: weighted as any update of its staleness
        assert r["boosted"] == 0.0 and r["weight"] <= 1.0 / (r["tau_thres"] + 1) + 1e-12


def _cfg(strategy: dict[str, object], lies: list[str], **top: object):  # type: ignore[no-untyped-def]
    return load_dict(
        {
            "seed": 0,
            "num_nodes": 50,
            "rounds": 6,
            "round_timeout_s": 1e6,
            "data": {"name": "digits"},
            "model": {"name": "logreg"},
            "devices": {"kind": "tiers", "flops_per_s": 1e6},
            "train": {"steps": 2, "batch_size": 16, "lr": 0.1},
            "strategy": strategy,
            "attack": {"fraction": 0.2, "lies": lies},
            "evaluation": {"every": 6, "free": True},
            **top,
        }
    )


def _share(rows: list[dict], bad: set[int], column: str) -> float:
    ids = [int(x) for r in rows for x in re.findall(r"\d+", str(r.get(column) or ""))]
    return sum(i in bad for i in ids) / len(ids)


@pytest.mark.parametrize("f", [0, 10])
def test_fast_lane_fills_tifls_fast_tier_and_widened_pools_dilute_it(f: int) -> None:
    options = {"policy": "fast", "num_tiers": 5, "profiling_rounds": 1, "t_max": 60.0,
               "num_malicious_nodes": f}  # fmt: skip
    cfg = _cfg({"name": "tifl", "clients_per_round": 10, "options": options}, ["fast_lane"])
    bad = {FIRST_NODE_ID + i for i in malicious_nodes(cfg.attack, 50, 0)}
    result = run_experiment(cfg)
    share = _share(result.rows[1:], bad, "replied")
    if f == 0:
        assert share == 1.0  # 10 attackers on the 10 fastest devices: the whole fast tier
    else:
        # pools of ≥ 4 · 10 nodes (tiers 0–3, 40 nodes, 10 of them malicious): share 1/4
        assert result.rows[-1]["pool_size"] == 40
        assert share == pytest.approx(10 / 40, abs=0.12)


def test_stale_replay_is_accepted_unless_the_replay_check_is_on() -> None:
    seen = {}
    for check in (False, True):
        options = {"buffer_size": 5, "replay_check": check}
        cfg = _cfg({"name": "fedbuff", "clients_per_round": 10, "options": options},
                   ["stale_replay"], rounds=30, num_nodes=20)  # fmt: skip
        bad = {FIRST_NODE_ID + i for i in malicious_nodes(cfg.attack, 20, 0)}
        rows = run_experiment(cfg).rows[1:]
        applied = [int(x) for r in rows for x in str(r["nodes"]).split()]
        replays = sum(str(r.get("rejected") or "").count("replayed") for r in rows)
        seen[check] = (max(applied.count(b) for b in bad), replays)
    assert seen[False][0] > 3 and seen[False][1] == 0  # each liar's δ₀ applied again and again
    assert seen[True][0] == 1  # only its first (honest-looking) update was applied
    assert seen[True][1] >= seen[False][0] - 1  # the rest were rejected as replays
