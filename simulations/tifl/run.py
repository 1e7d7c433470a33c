"""TiFL's experiment: policies × data settings on a 5-group heterogeneous population.

For each data setting (IID; non-IID with 2 classes per node; quantity skew) it runs vanilla
FedAvg sampling and the TiFL policies uniform, fast, slow, random, adaptive (equal credits) and
adaptive with credits skewed towards fast tiers (40/25/15/12/8 % of the rounds), then writes

  results/tifl[-quick]/<setting>/<policy>/     each run's results folder
  results/tifl[-quick]/<setting>/accuracy_vs_time.png, accuracy_vs_round.png
  results/tifl[-quick]/summary.csv, table.md   training time (profiling excluded, reported
                                               apart), time to target, final accuracy (mean of
                                               the last 5 evaluations)

and prints the table and the checks of the issue's targets. Runs go to a pool of processes (one
per core); each run is deterministic, so the pool changes nothing but wall time.

Usage: python simulations/tifl/run.py [--quick] [--workers N] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from fl.experiment.sweep import run_jobs, write_report, write_summary

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


def main(argv: list[str] | None = None) -> list[tuple[str, bool, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 rounds on 15 000 images (~2 min)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra config override for every run, e.g. --set executor=sequential",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("results/tifl-quick" if args.quick else "results/tifl")
    extra = QUICK if args.quick else []
    jobs = [
        (s, p, [*SETTINGS[s], *POLICIES[p], *extra, *args.overrides], str(out))
        for s in args.settings
        for p in POLICIES
    ]
    rows = run_jobs(run_one, jobs, args.workers)
    write_summary(out, rows)
    from fl.experiment.config import load_config
    from fl.experiment.plots import plot_runs

    target = load_config(HERE / "tifl.toml").evaluation.target_accuracy
    md = table(rows, target)
    for s in args.settings:
        plot_runs([out / s / p for p in POLICIES], out / s, log_time=True)
    results = checks(rows) if {"iid", "noniid"} <= set(args.settings) else []
    write_report(out, [md, ""], results)
    return results


if __name__ == "__main__":
    main()
