"""I-Prof: the global model, the per-device passive-aggressive correction, SLO batch sizes."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from fl.data import DataConfig, load_federated
from fl.experiment import run_experiment
from fl.experiment.config import load_dict
from fl.profiling.iprof import IProf, Observation
from fl.sim.devices import PopulationConfig, make_population

FPE = 3e5  # FLOPs per example


def _lab(n: int = 60, seed: int = 5, jitter: float = 0.0) -> list[Observation]:
    devices = make_population(PopulationConfig(kind="mobile", compute_jitter=jitter), n, seed)
    rng = np.random.default_rng(0)
    out = []
    for d in devices:
        for b in (32, 128):
            out.append(Observation(d.features, b, d.latency(0, 0, b * FPE, rng).compute))
    return out


def test_global_model_is_exact_when_speed_is_a_loglinear_function_of_features() -> None:
    feats = [{"a": float(a), "b": float(b)} for a in (1, 2, 4, 8) for b in (1, 3, 9)]
    slope = [2e-3 * f["a"] ** -1.0 * f["b"] ** 0.5 for f in feats]
    obs = [Observation(f, 10, 10 * s) for f, s in zip(feats, slope, strict=True)]
    prof = IProf(slo_s=1.0, ridge=0.0).fit_global(obs)
    for f, s in zip(feats, slope, strict=True):
        assert prof.predict(99, f, 50) == pytest.approx(50 * s, rel=1e-9)


def test_pa_correction_learns_a_deviating_device_within_five_observations() -> None:
    prof = IProf(slo_s=1.0, refit_every=0).fit_global(_lab())
    feats = _lab(1, seed=77)[0].features
    true_slope = 8.0 * math.exp(prof.global_log_slope(feats))  # 8x slower than the model says
    errors = []
    for _ in range(5):
        n = prof.batch_size(1, feats)
        t = n * true_slope
        errors.append(abs(prof.predict(1, feats, n) - t) / t)
        prof.update(1, feats, n, t)
    assert errors[0] == pytest.approx(7 / 8)  # the cold start misses by the deviation
    n = prof.batch_size(1, feats)
    final = abs(prof.predict(1, feats, n) - n * true_slope) / (n * true_slope)
    assert final < 0.05 < errors[0]
    assert prof.observations(1) == 5
    # the global-only model never adapts
    glob = IProf(slo_s=1.0, refit_every=0, personal=False).fit_global(_lab())
    glob.update(1, feats, 10, 10 * true_slope)
    assert glob.predict(1, feats, 10) == pytest.approx(10 * true_slope / 8)


def test_batch_size_meets_the_slo_with_margin_and_is_clipped() -> None:
    prof = IProf(slo_s=2.0, refit_every=0, min_batch=4, max_batch=10_000, multiple=8)
    prof.fit_global(_lab())
    feats = _lab(1, seed=3)[0].features
    n = prof.batch_size(0, feats)
    assert n % 8 == 0 and 4 <= n <= 10_000
    # the largest batch whose time at the 95% quantile of the (cold) log error meets the SLO
    bound = 2.0 * math.exp(-NormalDist().inv_cdf(0.95) * prof.error_sd(0))
    assert bound * (1 - 8 / n) <= prof.predict(0, feats, n) <= bound
    assert IProf(slo_s=1e-9, min_batch=4).fit_global(_lab()).batch_size(0, feats) == 4
    assert IProf(slo_s=1.0, default_batch=17).batch_size(0, feats) == 17  # no model yet


def test_online_refit_builds_the_global_model_from_observations() -> None:
    prof = IProf(slo_s=1.0, refit_every=5)
    assert not prof.fitted
    lab = _lab(30)
    for i, o in enumerate(lab):
        prof.update(i // 2, o.features, o.examples, o.compute_s)
    assert prof.fitted
    offline = IProf(slo_s=1.0).fit_global(lab)  # the same data, fitted at once
    for o in _lab(5, seed=9):
        assert prof.predict(-1, o.features, 10) == pytest.approx(
            offline.predict(-1, o.features, 10), rel=1e-9
        )


def test_non_finite_features_fall_back_instead_of_crashing() -> None:
    prof = IProf(slo_s=1.0, default_batch=24).fit_global(_lab())
    feats = dict(_lab(1, seed=3)[0].features)
    feats["ram_gb"] = float("nan")
    assert prof.batch_size(0, feats) == 24
    prof.update(0, feats, 10, 1.0)  # ignored, not learnt
    assert prof.observations(0) == 0
    with pytest.raises(ValueError, match="not finite"):
        prof.predict(0, feats, 10)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"slo_s": 0}, "slo_s"), ({"slo_s": 1, "slo_quantile": 1.0}, "slo_quantile"),
     ({"slo_s": 1, "min_batch": 0}, "min_batch"), ({"slo_s": 1, "pa_c": 0}, "pa_c")],
)  # fmt: skip
def test_bad_iprof_options_are_rejected(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        IProf(**kwargs)


def test_adasgd_with_iprof_sets_per_phone_batch_sizes_on_the_grid() -> None:
    cfg = load_dict(
        {
            "name": "iprof",
            "seed": 1,
            "num_nodes": 12,
            "rounds": 120,
            "data": {"name": "digits", "partition": "iid"},
            "model": {"name": "mlp", "hidden": [32]},
            "devices": {"kind": "mobile", "flops_per_s": 2e7, "compute_jitter": 0.05},
            "train": {"steps": 1, "batch_size": 16, "lr": 0.05},
            "strategy": {
                "name": "adasgd",
                "clients_per_round": 4,
                "options": {"profiler": {"slo_s": 0.05, "refit_every": 4, "max_batch": 512}},
            },
            "evaluation": {"every": 40},
        }
    )
    result = run_experiment(cfg)
    outs = [o for o in result.grid.outcomes.values() if o.message_type == "train"]
    queries = [o for o in result.grid.outcomes.values() if o.message_type == "query"]
    assert len(queries) == 12  # every phone was asked for its features once
    late = outs[60:]
    hit = np.mean([o.compute_s <= 0.05 for o in late])
    assert hit >= 0.8, hit
    sizes = {round(o.work_flops) for o in late}
    assert len(sizes) > 3  # batch sizes differ across phones
    assert result.final_accuracy > result.rows[0]["central_accuracy"] + 0.1


def test_outlier_class_goes_to_the_last_node_only() -> None:
    data = load_federated(
        DataConfig(name="digits", partition="shards", classes_per_node=2, outlier_class=3), 8, 0
    )
    counts = np.stack([data.label_counts(i) for i in range(8)])
    assert counts[:-1, 3].sum() == 0
    assert counts[-1, 3] > 0 and counts[-1].sum() == counts[-1, 3]
    with pytest.raises(ValueError, match="outlier_class"):
        load_federated(DataConfig(name="digits", outlier_class=10), 8, 0)


def test_stragglers_are_slowed_down() -> None:
    cfg = PopulationConfig(kind="uniform", stragglers=(-1, 0), straggler_slowdown=4.0)
    devices = make_population(cfg, 5, 0)
    assert [d.flops_per_s for d in devices] == [0.25e9, 1e9, 1e9, 1e9, 0.25e9]
    with pytest.raises(ValueError, match="does not exist"):
        make_population(PopulationConfig(stragglers=(9,)), 5, 0)


def test_a_synchronous_strategy_gets_per_phone_batch_sizes() -> None:
    from flwr.serverapp.strategy import FedAvg

    from fl.strategies import WithProfiler

    cfg = load_dict(
        {
            "name": "sync-iprof",
            "seed": 2,
            "num_nodes": 10,
            "rounds": 8,
            "data": {"name": "digits", "partition": "iid"},
            "model": {"name": "mlp", "hidden": [32]},
            "devices": {"kind": "mobile", "flops_per_s": 2e7, "compute_jitter": 0.05},
            "train": {"steps": 1, "batch_size": 16, "lr": 0.05},
        }
    )
    prof = IProf(slo_s=0.02, refit_every=4, max_batch=512)
    strategy = WithProfiler(FedAvg(fraction_train=1.0, fraction_evaluate=0.0), prof)
    result = run_experiment(cfg, strategy=strategy)
    train = [o for o in result.grid.outcomes.values() if o.message_type == "train"]
    assert sum(o.message_type == "query" for o in result.grid.outcomes.values()) == 10
    # the per-phone model learns once a global model exists (fitted online after 12 replies)
    assert all(6 <= prof.observations(n) <= 8 for n in result.grid.all_node_ids())
    late = train[40:]
    assert np.mean([o.compute_s <= 0.02 for o in late]) >= 0.8
    assert len({round(o.work_flops) for o in late}) > 3
