"""FLeet on CPU: AdaSGD against the asynchronous baselines, and I-Prof against simpler profilers.

(a) Straggler holds a rare class (`straggler.toml`): 19 nodes hold two of the classes 1-9 each,
    the last node holds all of class 0 and computes 10x slower. AdaSGD, DynSGD, async SGD,
    FedAsync, FedBuff and synchronous FedAvg, each for the same virtual-time budget, several
    seeds: accuracy, class-0 recall, model updates and virtual time to the target accuracy.
    Plus two controls with IID data and no straggler, where AdaSGD's boost should stay silent:
    identical devices, and devices with (a)'s compute jitter.
(b) Heterogeneous non-IID MNIST over the `mobile` population (`mobile.toml`): Dirichlet(0.3)
    labels over 50 phones whose speeds span two orders of magnitude.
(c) I-Prof on the `mobile` population: a global model fitted on a device lab (100 phones, 3
    measurements each), then 20 requests on each of 200 new phones: prediction error, SLO hits
    and batch sizes of I-Prof, the global-only model and a fixed batch size.

Writes results/fleet[-quick]/{a,b,c}/..., summary CSVs, table.md and plots (a_straggler.png,
b_mobile.png: accuracy, and in (a) class-0 recall, against virtual time, one line per strategy,
the mean over seeds with a ± std band, the target accuracy dashed and where each line reaches it
marked). `--report` redraws the plots and rewrites table.md from OUT/summary.csv and the run
folders without rerunning ((c) needs no runs: it is recomputed, in seconds).

Usage: python simulations/fleet/run.py [--quick] [--parts a b c] [--seeds 0 1 2] [--workers N]
       [--ray] [--resume] [--out DIR] [--set key=value ...] [--report]

Each finished run is recorded in OUT/sweep_done.jsonl: after an interruption, a rerun with
--resume skips the finished runs (without it, everything reruns); --ray runs each run as a Ray
task.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from fl.experiment.sweep import (
    add_sweep_options,
    run_jobs,
    sweep_options,
    write_report,
    write_summary,
)

HERE = Path(__file__).parent
STRATEGIES_A = ["adasgd", "dynsgd", "asyncsgd", "fedasync", "fedbuff", "fedavg"]
STRATEGIES_B = ["adasgd", "dynsgd", "asyncsgd", "fedbuff", "fedavg"]
# Synchronous FedAvg runs rounds of `clients_per_round` nodes; it is evaluated more often.
SYNC_OVERRIDES = ["evaluation.every=5"]
# Controls for (a): IID data, no rare class, no straggler; on identical devices (no straggler
# of any kind), and with (a)'s compute jitter (whose lognormal tail makes rare transient ones).
_IID = ["data.partition=iid", "data.outlier_class=-1", "devices.stragglers=[]"]
CONTROLS = {"iid": [*_IID, "devices.compute_jitter=0.0"], "iid-jitter": _IID}
QUICK_A = [
    "data.name=digits",
    "data.max_samples=none",
    "time_budget_s=25",
    "evaluation.every=25",
    "evaluation.target_accuracy=0.7",
]
QUICK_B = ["data.max_samples=6000", "time_budget_s=300", "num_nodes=30"]


# --------------------------------------------------------------------------- (a) and (b)
def run_one(job: tuple[str, str, int, list[str], str]) -> dict[str, Any]:
    """One (config, strategy, seed) run; returns its summary row."""
    import torch

    from fl.experiment import run_experiment
    from fl.experiment.config import load_config
    from fl.loops.common import first_time_reaching

    torch.set_num_threads(1)
    config, strategy, seed, overrides, out = job
    sync = [] if strategy in _async_names() else SYNC_OVERRIDES
    cfg = load_config(
        HERE / config,
        [f"name={strategy}", f"seed={seed}", f"strategy.name={strategy}", *overrides, *sync],
    )
    result = run_experiment(cfg, Path(out) / strategy / f"seed{seed}")
    evals = [r for r in result.rows if "central_accuracy" in r]
    tail = evals[-3:]  # the last evaluations, averaged: single evaluations are noisy
    target = cfg.evaluation.target_accuracy
    t, rnd = first_time_reaching(result.rows, "central_accuracy", target)
    rare = cfg.data.outlier_class
    row: dict[str, Any] = {
        "config": config,
        "strategy": strategy,
        "seed": seed,
        "accuracy": statistics.fmean(r["central_accuracy"] for r in tail),
        "updates": int(result.rows[-1]["round"]),
        "virtual_time_s": float(result.rows[-1]["virtual_time"]),
        "updates_to_target": rnd if rnd >= 0 else math.inf,
        "time_to_target_s": t,
        "wall_s": result.wall_s,
    }
    if rare >= 0:
        row["rare_recall"] = statistics.fmean(r[f"central_recall_{rare}"] for r in tail)
    boosts = [r.get("boost", 1.0) for r in result.rows if "boost" in r]
    if boosts:
        row["boosted_updates"] = sum(1 for r in result.rows if r.get("boosted", 0) > 0)
        row["max_boost"] = max(boosts)
    return row


def _async_names() -> tuple[str, ...]:
    from fl.strategies.registry import ASYNC_STRATEGIES

    return ASYNC_STRATEGIES


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per (config, strategy)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["config"], r["strategy"]), []).append(r)
    out = []
    for (config, strategy), rs in cells.items():
        cell: dict[str, Any] = {"config": config, "strategy": strategy, "seeds": len(rs)}
        for key in ("accuracy", "rare_recall", "updates", "virtual_time_s", "boosted_updates"):
            if key in rs[0]:
                cell[key] = statistics.fmean(r[key] for r in rs)
        for key in ("updates_to_target", "time_to_target_s"):
            vals = [r[key] for r in rs]
            cell[key] = statistics.fmean(vals) if all(math.isfinite(v) for v in vals) else math.inf
            cell[f"{key}_reached"] = sum(math.isfinite(v) for v in vals)
        if "max_boost" in rs[0]:
            cell["max_boost"] = max(r["max_boost"] for r in rs)
        out.append(cell)
    return out


def _fmt(v: float, spec: str) -> str:
    return "never" if isinstance(v, float) and math.isinf(v) else format(v, spec)


def table_ab(cells: list[dict[str, Any]], config: str) -> str:
    """Markdown table of one scenario."""
    cs = [c for c in cells if c["config"] == config]
    rare = "rare_recall" in cs[0]
    head = "| strategy | accuracy | " + ("class-0 recall | " if rare else "")
    head += "updates to target | virtual s to target | updates in budget | boosted (max ×) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cs:
        reached = f" ({c['updates_to_target_reached']}/{c['seeds']})"
        boosted = f"{c['boosted_updates']:.1f} ({c['max_boost']:.2f})" if "max_boost" in c else "–"
        lines.append(
            f"| {c['strategy']} | {100 * c['accuracy']:.2f} | "
            + (f"{100 * c['rare_recall']:.2f} | " if rare else "")
            + f"{_fmt(c['updates_to_target'], '.0f')}{reached} | "
            + f"{_fmt(c['time_to_target_s'], '.0f')} | {c['updates']:.0f} | {boosted} |"
        )
    return "\n".join(lines)


def checks_a(cells: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The issue's targets for scenario (a) and the IID control."""
    get = {(c["config"], c["strategy"]): c for c in cells}
    out: list[tuple[str, bool, str]] = []
    ada, dyn = get.get(("straggler.toml", "adasgd")), get.get(("straggler.toml", "dynsgd"))
    if ada and dyn:
        out.append(
            (
                "AdaSGD class-0 recall ≥ DynSGD's + 0.15",
                ada["rare_recall"] >= dyn["rare_recall"] + 0.15,
                f"{ada['rare_recall']:.4f} vs {dyn['rare_recall']:.4f}",
            )
        )
        out.append(
            (
                "AdaSGD accuracy ≥ DynSGD's − 0.01",
                ada["accuracy"] >= dyn["accuracy"] - 0.01,
                f"{ada['accuracy']:.4f} vs {dyn['accuracy']:.4f}",
            )
        )
        out.append(
            (
                "AdaSGD reaches the target in no more updates than DynSGD",
                ada["updates_to_target"] <= dyn["updates_to_target"]
                and math.isfinite(ada["updates_to_target"]),
                f"{_fmt(ada['updates_to_target'], '.0f')} vs "
                f"{_fmt(dyn['updates_to_target'], '.0f')}",
            )
        )
    iid_ada, iid_dyn = get.get(("iid", "adasgd")), get.get(("iid", "dynsgd"))
    if iid_ada and iid_dyn:
        out.append(
            (
                "IID, identical devices: AdaSGD's boost never fires",
                iid_ada["boosted_updates"] == 0,
                f"{iid_ada['boosted_updates']:.0f} boosted updates per run, "
                f"max boost {iid_ada['max_boost']:.4f}",
            )
        )
        out.append(
            (
                "IID, identical devices: AdaSGD accuracy ≥ DynSGD's − 0.01",
                iid_ada["accuracy"] >= iid_dyn["accuracy"] - 0.01,
                f"{iid_ada['accuracy']:.4f} vs {iid_dyn['accuracy']:.4f}",
            )
        )
    return out


def plot_ab(
    run_root: Path, strategies: list[str], seeds: list[int], path: Path, title: str
) -> None:
    """Accuracy (and, when the runs have a rare class, its recall) against virtual time, one line
    per strategy: the mean over `seeds` with a ± std band, interpolated onto a common time grid.
    A strategy keeps its colour, line style and marker in every panel and in (a) and (b); the
    target accuracy is dashed and each line's first crossing marked and given in the legend."""
    from fl.experiment.plots import (
        draw_panel,
        finish_panels,
        line_labels,
        load_run,
        panel_grid,
        style,
    )

    groups, shown = [], []
    for s in strategies:
        folders = [run_root / s / f"seed{k}" for k in seeds]
        runs = [load_run(f) for f in folders if (f / "rounds.csv").is_file()]
        if runs:
            groups.append(runs)
            shown.append(s)
    if not groups:
        return
    # Synchronous FedAvg is evaluated more often (SYNC_OVERRIDES): not what tells lines apart.
    labels = line_labels(groups, seeds_note=False, ignore=("evaluation.every",))
    styles = [style(STRATEGIES_A.index(s) if s in STRATEGIES_A else i) for i, s in enumerate(shown)]
    has_recall = any("central_recall_0" in r for g in groups for r in g[0].rows)
    panels = [("central_accuracy", "test accuracy")]
    if has_recall and "straggler" in title:
        panels.append(("central_recall_0", "class-0 recall (the straggler's class)"))
    fig, axes = panel_grid(len(panels), ncols=2, width=5.6, height=4.0)
    for i, (ax, (key, label)) in enumerate(zip(axes, panels, strict=True)):
        names = labels if i == 0 else [f"_{lab}" for lab in labels]  # one legend entry per line
        draw_panel(ax, groups, names, "virtual_time", key, styles)
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.yaxis.set_tick_params(labelleft=True)
    n = len({r.seed for g in groups for r in g})
    over = f"mean ± std over {n} seeds" if n > 1 else f"seed {seeds[0]}"
    finish_panels(fig, axes, path, f"{title} ({over})", "virtual time (s)", None,
                  legend_cols=3)  # fmt: skip


# ------------------------------------------------------------------------------- (c) I-Prof
def iprof_experiment(
    seed: int = 0,
    lab_devices: int = 100,
    lab_samples: int = 3,
    test_devices: int = 200,
    requests: int = 20,
    warm: int = 5,
    compute_jitter: float = 0.1,
    slo_s: float = 1.0,
    flops_per_example: float = 3e5,
) -> dict[str, Any]:
    """I-Prof vs global-only vs a fixed batch on `mobile` phones, timed by the device model.

    Each request: the profiler picks a batch n for the phone, the phone's compute time for n
    examples is drawn from its DeviceProfile (the grid's time model), the profiler learns from
    it. Errors and SLO hits are counted on requests made after `warm` observations of the phone.
    """
    from fl.profiling.iprof import IProf, Observation
    from fl.sim.devices import PopulationConfig, make_population

    pop = PopulationConfig(kind="mobile", compute_jitter=compute_jitter)
    lab = make_population(pop, lab_devices, seed + 1000)  # other phones than the test ones
    test = make_population(pop, test_devices, seed)
    rng = np.random.default_rng((seed, 1))

    def compute_s(dev: Any, n: int, r: np.random.Generator) -> float:
        return float(dev.latency(0, 0, n * flops_per_example, r).compute)

    measured = []
    for d in lab:
        for _ in range(lab_samples):
            n = int(rng.integers(16, 257))
            measured.append(Observation(d.features, n, compute_s(d, n, rng)))

    out: dict[str, Any] = {"compute_jitter": compute_jitter, "slo_s": slo_s}
    variants = {"iprof": True, "global-only": False}
    fixed_batch = 0
    for name, personal in variants.items():
        prof = IProf(slo_s=slo_s, personal=personal, refit_every=0).fit_global(measured)
        errs, hits, hits_all, batches, per_dev = [], [], [], [], {}
        for j, d in enumerate(test):
            r = np.random.default_rng((seed, 2, j))  # the same draws for every variant
            for k in range(requests):
                n = prof.batch_size(j, d.features)
                pred = prof.predict(j, d.features, n)
                t = compute_s(d, n, r)
                hits_all.append(t <= slo_s)
                if k >= warm:
                    errs.append(abs(pred - t) / t)
                    hits.append(t <= slo_s)
                    batches.append(n)
                    per_dev.setdefault(j, []).append(abs(pred - t) / t)
                prof.update(j, d.features, n, t)
        # Phones whose true speed the population model misses by more than 2x.
        deviating = [
            j
            for j, d in enumerate(test)
            if abs(math.log(flops_per_example / d.flops_per_s) - prof.global_log_slope(d.features))
            > math.log(2)
        ]
        out[name] = {
            "mare": float(np.mean(errs)),
            "slo_hit": float(np.mean(hits)),
            "slo_hit_from_first": float(np.mean(hits_all)),
            "mean_batch": float(np.mean(batches)),
            "mare_deviating": float(np.mean([np.mean(per_dev[j]) for j in deviating])),
            "deviating_devices": len(deviating),
        }
        if name == "global-only":
            # Fixed batch: what meets the SLO on the median lab phone (a one-size setting).
            median_slope = float(np.median([o.compute_s / o.examples for o in measured]))
            fixed_batch = max(1, int(slo_s / median_slope))
    fixed_hits = []
    for j, d in enumerate(test):
        r = np.random.default_rng((seed, 2, j))
        fixed_hits.extend(compute_s(d, fixed_batch, r) <= slo_s for _ in range(requests))
    out["fixed"] = {"batch": fixed_batch, "slo_hit": float(np.mean(fixed_hits))}
    return out


def checks_c(res: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The issue's I-Prof targets."""
    ip, gl = res["iprof"], res["global-only"]
    ratio = gl["mare_deviating"] / ip["mare_deviating"]
    return [
        ("I-Prof MARE ≤ 15% after 5 observations", ip["mare"] <= 0.15, f"{ip['mare']:.4f}"),
        ("≥ 90% of requests meet the SLO", ip["slo_hit"] >= 0.90, f"{ip['slo_hit']:.4f}"),
        (
            "per-device beats global-only ≥ 2× on deviating phones",
            ratio >= 2.0,
            f"{ratio:.1f}× ({gl['mare_deviating']:.3f} vs {ip['mare_deviating']:.3f}, "
            f"{ip['deviating_devices']} phones)",
        ),
    ]


def table_c(results: list[dict[str, Any]]) -> str:
    """Markdown table of the I-Prof runs (one row per profiler and jitter)."""
    lines = [
        "| compute jitter | profiler | MARE (after 5 obs) | MARE, deviating phones | "
        "SLO hit (after 5 / from 1st) | mean batch |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        j = res["compute_jitter"]
        for name in ("iprof", "global-only"):
            v = res[name]
            lines.append(
                f"| {j} | {name} | {100 * v['mare']:.1f}% | {100 * v['mare_deviating']:.1f}% | "
                f"{100 * v['slo_hit']:.1f}% / {100 * v['slo_hit_from_first']:.1f}% | "
                f"{v['mean_batch']:.0f} |"
            )
        f = res["fixed"]
        lines.append(
            f"| {j} | fixed batch {f['batch']} | – | – | {100 * f['slo_hit']:.1f}% | {f['batch']} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def read_rows(out: Path, configs: set[str], seeds: list[int]) -> list[dict[str, Any]]:
    """The rows of OUT/summary.csv (what a run of (a) / (b) wrote) for `configs` and `seeds`,
    in file order, with empty cells dropped (a row without a rare class has no recall)."""
    from fl.experiment.tables import read_csv

    if not (out / "summary.csv").is_file():
        raise SystemExit(f"--report: {out / 'summary.csv'} not found; run without --report first")
    rows = [{k: v for k, v in r.items() if v != ""} for r in read_csv(out / "summary.csv")]
    return [r for r in rows if r["config"] in configs and r["seed"] in seeds]


def main(argv: list[str] | None = None) -> list[tuple[str, bool, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="digits, one seed, (a) and (c)")
    parser.add_argument("--parts", nargs="+", default=None, choices=["a", "b", "c"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_sweep_options(parser, workers=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--report",
        action="store_true",
        help="redraw the plots and rewrite table.md from OUT/summary.csv without rerunning",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("results/fleet-quick" if args.quick else "results/fleet")
    parts = args.parts or (["a", "c"] if args.quick else ["a", "b", "c"])
    seeds = [0] if args.quick else args.seeds
    lines: list[str] = []
    results: list[tuple[str, bool, str]] = []

    if "a" in parts or "b" in parts:
        jobs = []
        labels: list[str] = []  # the table each job's row belongs to
        quick_a = QUICK_A if args.quick else []
        if "a" in parts:
            for s in seeds:
                for strat in STRATEGIES_A:
                    jobs.append(("straggler.toml", strat, s, [*quick_a, *args.overrides],
                                 str(out / "a")))  # fmt: skip
                    labels.append("straggler.toml")
                for control, extra in CONTROLS.items():
                    for strat in ("adasgd", "dynsgd"):
                        jobs.append(("straggler.toml", strat, s, [*quick_a, *extra,
                                     *args.overrides], str(out / f"a-{control}")))  # fmt: skip
                        labels.append(control)
        if "b" in parts:
            quick_b = QUICK_B if args.quick else []
            for s in seeds:
                for strat in STRATEGIES_B:
                    jobs.append(("mobile.toml", strat, s, [*quick_b, *args.overrides],
                                 str(out / "b")))  # fmt: skip
                    labels.append("mobile.toml")
        if args.report:
            rows = read_rows(out, set(labels), seeds)
        else:
            rows = run_jobs(run_one, jobs, args.workers, **sweep_options(args, out))
            for row, label in zip(rows, labels, strict=True):
                row["config"] = label
            write_summary(out, rows)
        cells = summarise(rows)
        if "a" in parts:
            lines += ["## (a) straggler holds class 0", "", table_ab(cells, "straggler.toml"), ""]
            lines += ["IID control, identical devices:", "", table_ab(cells, "iid"), ""]
            lines += ["IID control, compute jitter as in (a):", "", table_ab(cells, "iid-jitter")]
            lines += [""]
            plot_ab(out / "a", STRATEGIES_A, seeds, out / "a_straggler.png",
                    "(a) a 10× slower straggler holds all of class 0")  # fmt: skip
            results += checks_a(cells)
        if "b" in parts:
            lines += ["## (b) non-IID MNIST on mobile phones", "", table_ab(cells, "mobile.toml")]
            lines += [""]
            plot_ab(out / "b", STRATEGIES_B, seeds, out / "b_mobile.png",
                    "(b) Dirichlet(0.3) MNIST on mobile phones")  # fmt: skip

    if "c" in parts:
        jitters = [0.1] if args.quick else [0.1, 0.2]
        kw = {"test_devices": 60} if args.quick else {}
        res_c = [iprof_experiment(seed=seeds[0], compute_jitter=j, **kw) for j in jitters]
        lines += ["## (c) I-Prof", "", table_c(res_c), ""]
        results += checks_c(res_c[0])

    write_report(out, lines, results)
    return results


if __name__ == "__main__":
    main()
