"""TiFL's experiment: policies × data settings on a 5-group heterogeneous population.

For each data setting (IID; non-IID with 2 classes per node; quantity skew) it runs vanilla
FedAvg sampling and the TiFL policies uniform, fast, slow, random, adaptive (equal credits) and
adaptive with credits skewed towards fast tiers (40/25/15/12/8 % of the rounds), then writes

  results/tifl[-quick]/<setting>/<policy>/     each run's results folder
  results/tifl[-quick]/<setting>/accuracy_vs_time.png   two panels on a linear time axis: the
                                               static policies, and uniform vs adaptive; the
                                               profiling period shaded, the target dashed
  results/tifl[-quick]/<setting>/accuracy_vs_round.png  the same against rounds
  results/tifl[-quick]/summary.csv, table.md   training time (profiling excluded, reported
                                               apart), time to target, final accuracy (mean of
                                               the last 5 evaluations)

and prints the table and the checks of the issue's targets. Runs go to a pool of processes (one
per core); each run is deterministic, so the pool changes nothing but wall time.

`--report` redraws the plots and rewrites the table from OUT/summary.csv and the run folders,
without rerunning.

Usage: python simulations/tifl/run.py [--quick] [--workers N] [--ray] [--resume] [--out DIR]
       [--report]

Each finished run is recorded in OUT/sweep_done.jsonl: after an interruption, a rerun with
--resume skips the finished runs (without it, everything reruns); --ray runs each run as a Ray
task.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from fl.experiment.sweep import (
    add_sweep_options,
    run_jobs,
    sweep_options,
    write_report,
    write_summary,
)

HERE = Path(__file__).parent
SETTINGS = {
    "iid": ["data.partition=iid"],
    "noniid": ["data.partition=shards", "data.classes_per_node=2"],
    "skew": ["data.partition=size", "data.size_skew=1.0"],
}
POLICIES = {
    "vanilla": ["strategy.options.policy=vanilla"],
    "uniform": ["strategy.options.policy=uniform"],
    "fast": ["strategy.options.policy=fast"],
    "slow": ["strategy.options.policy=slow"],
    "random": ["strategy.options.policy=random"],
    "adaptive": ["strategy.options.policy=adaptive"],
    "adaptive-skewed": [
        "strategy.options.policy=adaptive",
        "strategy.options.credit_fractions=[0.4, 0.25, 0.15, 0.12, 0.08]",
    ],
}
QUICK = ["rounds=100", "data.max_samples=15000", "evaluation.every=2"]
SETTING_TITLES = {
    "iid": "IID",
    "noniid": "non-IID (2 classes per node)",
    "skew": "quantity skew (node size ∝ rank)",
}
# Noisy curves (non-IID: each round trains one tier's 5 nodes) are drawn as a trailing mean of
# SMOOTH evaluations, the raw curve faint behind, when the median jump between evaluations
# exceeds ROUGH.
SMOOTH, ROUGH = 10, 0.01
# The figure's two panels: TiFL's static policies against vanilla, and the adaptive policies
# against vanilla and uniform (which adaptive with equal credits should match in time).
PANELS = {
    "static policies": ["vanilla", "uniform", "fast", "slow", "random"],
    "uniform vs adaptive": ["vanilla", "uniform", "adaptive", "adaptive-skewed"],
}


def run_one(job: tuple[str, str, list[str], str]) -> dict[str, Any]:
    """Run one (setting, policy) and return its summary row."""
    import torch

    from fl.experiment import run_experiment
    from fl.experiment.config import load_config
    from fl.experiment.results import summary

    torch.set_num_threads(1)
    setting, policy, overrides, out = job
    cfg = load_config(HERE / "tifl.toml", [f"name={policy}", *overrides])
    result = run_experiment(cfg, Path(out) / setting / policy)
    s = summary(result)
    accs = [r["central_accuracy"] for r in result.rows if "central_accuracy" in r]
    tiers = [r["tier"] for r in result.rows if r["round"] > 0]
    return {
        "setting": setting,
        "policy": policy,
        "rounds": s["rounds_completed"],
        "training_time_s": s.get("training_time_s", s["virtual_time_s"]),
        "profiling_time_s": s.get("profiling_time_s", 0.0),
        "time_to_target_s": s.get("time_to_target_s"),
        "final_accuracy": sum(accs[-5:]) / len(accs[-5:]),
        "tier_use": " ".join(str(tiers.count(t)) for t in range(5)) if policy != "vanilla" else "",
        "wall_s": s["wall_time_s"],
    }


def table(rows: list[dict[str, Any]], target: float) -> str:
    """Markdown table of the runs, grouped by setting."""
    vanilla = {r["setting"]: r["training_time_s"] for r in rows if r["policy"] == "vanilla"}
    lines = [
        "| setting | policy | training time (s) | vs vanilla | profiling (s) "
        f"| time to {target} (s, incl. profiling) | final acc | rounds per tier (fast→slow) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ttt = r["time_to_target_s"]
        lines.append(
            f"| {r['setting']} | {r['policy']} | {r['training_time_s']:.0f} | "
            f"{r['training_time_s'] / vanilla[r['setting']]:.2f} | {r['profiling_time_s']:.0f} | "
            f"{'never' if ttt is None else f'{ttt:.0f}'} | {r['final_accuracy']:.4f} | "
            f"{r['tier_use']} |"
        )
    return "\n".join(lines)


def checks(rows: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The issue's targets, evaluated on these runs: (claim, met, numbers)."""
    get = {(r["setting"], r["policy"]): r for r in rows}

    def t(s: str, p: str) -> float:
        return float(get[(s, p)]["training_time_s"])

    def a(s: str, p: str) -> float:
        return float(get[(s, p)]["final_accuracy"])

    out = []
    ratio = t("iid", "uniform") / t("iid", "vanilla")
    out.append(("IID: uniform time ≤ 0.6 × vanilla", ratio <= 0.6, f"{ratio:.3f}"))
    ratio = t("iid", "fast") / t("iid", "vanilla")
    out.append(("IID: fast time ≤ 0.2 × vanilla", ratio <= 0.2, f"{ratio:.3f}"))
    for p in ("uniform", "adaptive"):
        gap = a("iid", "vanilla") - a("iid", p)
        out.append(
            (f"IID: {p} accuracy within 2 points of vanilla", abs(gap) <= 0.02, f"{gap:+.4f}")
        )
    gap_iid = a("iid", "vanilla") - a("iid", "fast")
    gap_non = a("noniid", "vanilla") - a("noniid", "fast")
    out.append(
        (
            "non-IID gap (vanilla − fast) > IID gap",
            gap_non > gap_iid,
            f"{gap_non:+.4f} vs {gap_iid:+.4f}",
        )
    )
    ratio = t("iid", "adaptive-skewed") / t("iid", "uniform")
    out.append(("IID: skewed-credit adaptive time ≤ 0.8 × uniform", ratio <= 0.8, f"{ratio:.3f}"))
    gap = a("iid", "vanilla") - a("iid", "adaptive-skewed")
    out.append(
        ("IID: skewed-credit adaptive within 2 points of vanilla", abs(gap) <= 0.02, f"{gap:+.4f}")
    )
    return out


def roughness(runs: list[Any]) -> float:
    """How much the runs' accuracy jumps between consecutive evaluations late in training (the
    median absolute change over their second halves): above `ROUGH` the curves are smoothed."""
    import numpy as np

    from fl.experiment.plots import curve

    curves = [curve(r, "round", "central_accuracy")[1] for r in runs]
    jumps = [np.abs(np.diff(y[len(y) // 2 :])) for y in curves]
    jumps = [j for j in jumps if len(j)]
    return float(np.median(np.concatenate(jumps))) if jumps else 0.0


def accuracy_floor(runs: list[Any]) -> float:
    """The bottom of the accuracy axis: the curves spend nearly all their time near their final
    accuracy, so the axis starts just below the lowest of the runs' lower-quartile accuracies
    and the target (a multiple of 0.05); the early rise enters from below."""
    import numpy as np

    from fl.experiment.plots import curve

    quartiles = [
        np.quantile(y, 0.25) for r in runs if len(y := curve(r, "round", "central_accuracy")[1])
    ]
    target = max(r.target for r in runs)
    low = min([*quartiles, target]) - 0.03
    return float(max(0.0, np.floor(low / 0.05) * 0.05))


def plot_setting(folder: Path, title: str) -> list[Path]:
    """The setting's figures (accuracy against virtual time and against rounds), one panel per
    `PANELS` entry; a policy keeps its colour, line style and marker in both panels. The time
    axis is linear, each curve starts at its first evaluation after profiling and the profiling
    period is shaded; the accuracy axis is zoomed on where the curves spend their time, and
    noisy curves are smoothed (see `SMOOTH`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fl.experiment.plots import (
        draw_panel,
        line_labels,
        load_run,
        ordered_legend_entries,
        style,
    )

    runs = {p: load_run(folder / p) for p in POLICIES if (folder / p / "rounds.csv").is_file()}
    if not runs:
        return []
    bottom = accuracy_floor(list(runs.values()))
    smooth = SMOOTH if roughness(list(runs.values())) > ROUGH else 1
    names = dict(zip(runs, line_labels([[r] for r in runs.values()]), strict=True))
    styles = {p: style(i) for i, p in enumerate(POLICIES)}
    written = []
    for x_key, fname in (
        ("virtual_time", "accuracy_vs_time.png"),
        ("round", "accuracy_vs_round.png"),
    ):
        fig, axes = plt.subplots(1, len(PANELS), figsize=(6.2 * len(PANELS), 5.2), dpi=110)
        for ax, (panel, policies) in zip(axes, PANELS.items(), strict=True):
            shown = [p for p in policies if p in runs]
            draw_panel(
                ax,
                [[runs[p]] for p in shown],
                [names[p].removeprefix("tifl: ") for p in shown],
                x_key,
                styles=[styles[p] for p in shown],
                smooth=smooth,
            )
            ax.set_ylim(bottom, 1.0)
            ax.set_title(panel, fontsize=10)
            if smooth > 1:
                ax.set_ylabel(f"test accuracy (trailing mean of {smooth} evaluations)")
            entries = ordered_legend_entries([ax])
            ax.legend(list(entries.values()), list(entries), fontsize=7.5, loc="upper center",
                      bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)  # fmt: skip
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        path = folder / fname
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def read_rows(out: Path, settings: list[str]) -> list[dict[str, Any]]:
    """The summary rows of `settings` from OUT/summary.csv (what a run wrote), in run order,
    with "never reached" read back as None."""
    from fl.experiment.tables import read_csv

    if not (out / "summary.csv").is_file():
        raise SystemExit(f"--report: {out / 'summary.csv'} not found; run without --report first")
    rows = [r for r in read_csv(out / "summary.csv") if r["setting"] in settings]
    for r in rows:
        if r["time_to_target_s"] == "":
            r["time_to_target_s"] = None
        r["tier_use"] = str(r["tier_use"])
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, bool, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 rounds on 15 000 images (~2 min)")
    add_sweep_options(parser, workers=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra config override for every run, e.g. --set executor=sequential",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="redraw the plots and rewrite table.md from OUT/summary.csv without rerunning",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("results/tifl-quick" if args.quick else "results/tifl")
    extra = QUICK if args.quick else []
    if args.report:
        rows = read_rows(out, args.settings)
    else:
        jobs = [
            (s, p, [*SETTINGS[s], *POLICIES[p], *extra, *args.overrides], str(out))
            for s in args.settings
            for p in POLICIES
        ]
        rows = run_jobs(run_one, jobs, args.workers, **sweep_options(args, out))
        write_summary(out, rows)
    from fl.experiment.config import load_config

    target = load_config(HERE / "tifl.toml").evaluation.target_accuracy
    md = table(rows, target)
    for s in args.settings:
        plot_setting(out / s, f"TiFL on {SETTING_TITLES[s]} MNIST, 50 nodes in 5 tiers")
    results = checks(rows) if {"iid", "noniid"} <= set(args.settings) else []
    write_report(out, [md, ""], results)
    return results


if __name__ == "__main__":
    main()
