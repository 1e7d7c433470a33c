"""BGMD's robustness table on CPU: attacks × aggregators × seeds.

Attacks (on 20% and 40% of the nodes, fixed for the run): scaled bit flip (update × −5),
additive noise N(0, 10²), label flip, ALIE; plus no attack. Aggregators: mean (FedAvg),
coordinate-wise median (FedMedian), Krum, geometric median (RFA), BGMD (β = 0.1, faithful mean
memory), BGMD with median memory (a robust deviation). Each cell: final test accuracy, mean ±
std over seeds, and the mean wall-clock time of one aggregation.

Writes results/bgmd[-quick]/<attack>/<aggregator>/seed<k>/ (each run's folder),
results/bgmd[-quick]/summary.csv, table.md and accuracy_vs_aggregation_time.png.

Usage: python simulations/bgmd/run.py [--quick] [--workers N] [--seeds 0 1 2] [--out DIR]
       [--attacks ...] [--aggregators ...] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

from fl.experiment.sweep import run_jobs, write_report, write_summary

HERE = Path(__file__).parent
ATTACKS = {
    "none": [],
    "bitflip-20": ["attack.kind=sign_flip", "attack.scale=5.0", "attack.fraction=0.2"],
    "bitflip-40": ["attack.kind=sign_flip", "attack.scale=5.0", "attack.fraction=0.4"],
    "additive-20": ["attack.kind=additive", "attack.std=10.0", "attack.fraction=0.2"],
    "additive-40": ["attack.kind=additive", "attack.std=10.0", "attack.fraction=0.4"],
    "labelflip-20": ["attack.kind=label_flip", "attack.fraction=0.2"],
    "labelflip-40": ["attack.kind=label_flip", "attack.fraction=0.4"],
    "alie-20": ["attack.kind=alie", "attack.fraction=0.2"],
    "alie-40": ["attack.kind=alie", "attack.fraction=0.4"],
}
AGGREGATORS = {
    "mean": ["strategy.name=fedavg", "strategy.options={}"],
    "median": ["strategy.name=fedmedian", "strategy.options={}"],
    "krum": ["strategy.name=krum", "strategy.options={}"],  # f set per attack below
    "gm": ["strategy.name=geomedian", "strategy.options={}"],
    "bgmd": ["strategy.name=bgmd", "strategy.options.beta=0.1"],
    "bgmd-median-memory": [
        "strategy.name=bgmd",
        "strategy.options.beta=0.1",
        "strategy.options.memory_reduce=median",
    ],
}
QUICK = {
    "overrides": [
        "data.name=digits",
        "model.cnn_channels=[8, 16]",
        "num_nodes=16",
        "strategy.clients_per_round=16",
        "data.max_samples=none",
        "rounds=50",
        "train.steps=8",
        "train.batch_size=16",
        "train.lr=0.1",
        "evaluation.every=10",
    ],
    "attacks": ["none", "bitflip-20", "bitflip-40"],
    "seeds": [0],
}


def job_overrides(attack: str, aggregator: str, num_nodes: int) -> list[str]:
    """The config overrides of one cell (Krum is told how many nodes are malicious)."""
    extra = []
    if aggregator == "krum":
        frac = float(attack.split("-")[1]) / 100 if "-" in attack else 0.0
        extra = [f"strategy.options.num_malicious_nodes={round(frac * num_nodes)}"]
    return [*ATTACKS[attack], *AGGREGATORS[aggregator], *extra]


def run_one(job: tuple[str, str, int, list[str], str]) -> dict[str, Any]:
    """Run one (attack, aggregator, seed) and return its row."""
    import torch

    from fl.experiment import run_experiment
    from fl.experiment.config import load_config

    torch.set_num_threads(1)
    attack, aggregator, seed, overrides, out = job
    cfg = load_config(HERE / "bgmd.toml", [f"name={aggregator}", f"seed={seed}", *overrides])
    result = run_experiment(cfg, Path(out) / attack / aggregator / f"seed{seed}")
    agg = [r["aggregation_wall_s"] for r in result.rows if "aggregation_wall_s" in r]
    return {
        "attack": attack,
        "aggregator": aggregator,
        "seed": seed,
        "final_accuracy": result.final_accuracy,
        "aggregation_s": sum(agg) / len(agg),
        "wall_s": result.wall_s,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (attack, aggregator)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["attack"], r["aggregator"]), []).append(r)
    out = []
    for (attack, agg), rs in cells.items():
        accs = [r["final_accuracy"] for r in rs]
        out.append(
            {
                "attack": attack,
                "aggregator": agg,
                "seeds": len(rs),
                "accuracy_mean": statistics.fmean(accs),
                "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "aggregation_ms": 1e3 * statistics.fmean(r["aggregation_s"] for r in rs),
            }
        )
    return out


def table(cells: list[dict[str, Any]], attacks: list[str], aggregators: list[str]) -> str:
    """Markdown: rows = attacks, columns = aggregators, entries = accuracy mean ± std (%)."""
    get = {(c["attack"], c["aggregator"]): c for c in cells}
    head = "| attack | " + " | ".join(aggregators) + " |"
    lines = [head, "|" + "---|" * (len(aggregators) + 1)]
    for a in attacks:
        vals = [get[(a, g)] for g in aggregators]
        lines.append(
            f"| {a} | "
            + " | ".join(
                f"{100 * v['accuracy_mean']:.2f} ± {100 * v['accuracy_std']:.2f}" for v in vals
            )
            + " |"
        )
    lines.append(
        "| aggregation time (ms) | "
        + " | ".join(
            f"{statistics.fmean(get[(a, g)]['aggregation_ms'] for a in attacks):.1f}"
            for g in aggregators
        )
        + " |"
    )
    return "\n".join(lines)


def checks(cells: list[dict[str, Any]], chance: float = 0.1) -> list[tuple[str, bool, str]]:
    """The issue's robustness targets on these runs: (claim, met, numbers)."""
    get = {(c["attack"], c["aggregator"]): c["accuracy_mean"] for c in cells}
    out = []
    for frac in ("20", "40"):
        key = f"bitflip-{frac}"
        if (key, "mean") not in get or ("none", "gm") not in get:
            continue
        acc = get[(key, "mean")]
        out.append(
            (
                f"bit flip {frac}%: FedAvg collapses (≤ chance + 5 points)",
                acc <= chance + 0.05,
                f"{acc:.4f}",
            )
        )
        gap = get[("none", "gm")] - get[(key, "gm")]
        out.append(
            (
                f"bit flip {frac}%: GM within 2 points of its clean accuracy",
                gap <= 0.02,
                f"{gap:+.4f}",
            )
        )
    return out


def main(argv: list[str] | None = None) -> list[tuple[str, bool, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="digits, 16 nodes, bit flip only, 1 seed (~1 min)"
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--aggregators", nargs="+", default=list(AGGREGATORS), choices=list(AGGREGATORS)
    )
    parser.add_argument("--attacks", nargs="+", default=None, choices=list(ATTACKS))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra config override for every run, e.g. --set rounds=200",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("results/bgmd-quick" if args.quick else "results/bgmd")
    attacks = args.attacks or (QUICK["attacks"] if args.quick else list(ATTACKS))
    seeds = QUICK["seeds"] if args.quick else args.seeds
    base = [*(QUICK["overrides"] if args.quick else []), *args.overrides]
    n = 16 if args.quick else 20
    jobs = [
        (a, g, s, [*base, *job_overrides(a, g, n)], str(out))
        for a in attacks
        for g in args.aggregators
        for s in seeds
    ]
    rows = run_jobs(run_one, jobs, args.workers)
    write_summary(out, rows)
    cells = summarise(rows)
    plot_time_vs_accuracy(cells, attacks, out / "accuracy_vs_aggregation_time.png")
    results = checks(cells)
    write_report(out, [table(cells, attacks, args.aggregators), ""], results)
    return results


def plot_time_vs_accuracy(cells: list[dict[str, Any]], attacks: list[str], path: Path) -> None:
    """Per aggregator: mean accuracy over the attacks against mean aggregation time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for g in AGGREGATORS:
        cs = [c for c in cells if c["aggregator"] == g and c["attack"] in attacks]
        if not cs:
            continue
        x = statistics.fmean(c["aggregation_ms"] for c in cs)
        y = statistics.fmean(c["accuracy_mean"] for c in cs)
        ax.scatter([x], [y], s=40)
        ax.annotate(g, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock time of one aggregation (ms, log)")
    ax.set_ylabel("test accuracy, mean over attacks")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
