"""BGMD's robustness table on CPU: attacks × aggregators × seeds.

Attacks (on 20% and 40% of the nodes, fixed for the run): scaled bit flip (update × −5),
additive noise N(0, 10²), label flip, ALIE; plus no attack. Aggregators: mean (FedAvg),
coordinate-wise median (FedMedian), Krum, geometric median (RFA), BGMD (β = 0.1, faithful mean
memory), BGMD with median memory (a robust deviation). Each cell: final test accuracy, mean ±
std over seeds, and the mean wall-clock time of one aggregation.

Writes results/bgmd[-quick]/<attack>/<aggregator>/seed<k>/ (each run's folder),
results/bgmd[-quick]/summary.csv, table.md, accuracy_vs_aggregation_time.png (one panel per
attack: each aggregator's final accuracy, mean ± std over seeds, against its aggregation time)
and accuracy_vs_round.png (one panel per attack: test accuracy against round, mean ± std over
seeds). `--report` redraws both and rewrites table.md from OUT/summary.csv and the run folders,
without rerunning.

Usage: python simulations/bgmd/run.py [--quick] [--workers N] [--ray] [--resume] [--seeds 0 1 2]
       [--out DIR] [--attacks ...] [--aggregators ...] [--set key=value ...] [--report]

Each finished run is recorded in OUT/sweep_done.jsonl: after an interruption, a rerun with
--resume skips the finished runs (without it, everything reruns); --ray runs each run as a Ray
task.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
ATTACK_TITLES = {
    "none": "no attack",
    "bitflip": "bit flip ×(−5)",
    "additive": "additive N(0, 10²)",
    "labelflip": "label flip",
    "alie": "ALIE",
}
CHANCE = 0.1
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


def attack_title(attack: str) -> str:
    """A panel title: "bitflip-20" → "bit flip ×(−5), 20 % of nodes"."""
    kind, _, frac = attack.partition("-")
    return ATTACK_TITLES.get(kind, kind) + (f", {frac} % of nodes" if frac else "")


def read_rows(
    out: Path, attacks: list[str], aggregators: list[str], seeds: list[int]
) -> list[dict[str, Any]]:
    """The per-run rows of OUT/summary.csv (what a run wrote) for these cells and seeds."""
    from fl.experiment.tables import read_csv

    if not (out / "summary.csv").is_file():
        raise SystemExit(f"--report: {out / 'summary.csv'} not found; run without --report first")
    return [
        r
        for r in read_csv(out / "summary.csv")
        if r["attack"] in attacks and r["aggregator"] in aggregators and r["seed"] in seeds
    ]


def main(argv: list[str] | None = None) -> list[tuple[str, bool, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="digits, 16 nodes, bit flip only, 1 seed (~1 min)"
    )
    add_sweep_options(parser, workers=min(2, os.cpu_count() or 1))
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
    parser.add_argument(
        "--report",
        action="store_true",
        help="redraw the plots and rewrite table.md from OUT/summary.csv without rerunning",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("results/bgmd-quick" if args.quick else "results/bgmd")
    attacks = args.attacks or (QUICK["attacks"] if args.quick else list(ATTACKS))
    seeds = QUICK["seeds"] if args.quick else args.seeds
    if args.report:
        rows = read_rows(out, attacks, args.aggregators, seeds)
        attacks = [a for a in attacks if any(r["attack"] == a for r in rows)]
    else:
        base = [*(QUICK["overrides"] if args.quick else []), *args.overrides]
        n = 16 if args.quick else 20
        jobs = [
            (a, g, s, [*base, *job_overrides(a, g, n)], str(out))
            for a in attacks
            for g in args.aggregators
            for s in seeds
        ]
        rows = run_jobs(run_one, jobs, args.workers, **sweep_options(args, out))
        write_summary(out, rows)
    cells = summarise(rows)
    aggregators = [g for g in args.aggregators if any(c["aggregator"] == g for c in cells)]
    plot_time_vs_accuracy(cells, attacks, aggregators, out / "accuracy_vs_aggregation_time.png")
    plot_curves(out, attacks, aggregators, seeds, out / "accuracy_vs_round.png")
    results = checks(cells)
    write_report(out, [table(cells, attacks, aggregators), ""], results)
    return results


def _reference_lines(ax: Any, attack: str, clean_gm: float | None) -> None:
    """Chance, and on attacked panels the issue's target for GM: its clean accuracy − 2
    points."""
    from fl.experiment.plots import TARGET_STYLE

    ax.axhline(100 * CHANCE, color="0.5", ls=":", lw=1.0, label="chance (10 %)", zorder=1)
    if attack != "none" and clean_gm is not None:
        ax.axhline(100 * clean_gm - 2, label="target: clean GM − 2 points", **TARGET_STYLE)


def plot_time_vs_accuracy(
    cells: list[dict[str, Any]], attacks: list[str], aggregators: list[str], path: Path
) -> None:
    """One panel per attack: each aggregator's final accuracy (mean ± std over seeds, as an
    error bar) against the mean wall-clock time of one of its aggregations, on a linear time
    axis (its range is within one decade, so a log axis would leave most of it unlabelled).
    Markers, not text labels, name the aggregators, in one legend under the panels."""
    from fl.experiment.plots import finish_panels, panel_grid, style

    get = {(c["attack"], c["aggregator"]): c for c in cells}
    clean_gm = get[("none", "gm")]["accuracy_mean"] if ("none", "gm") in get else None
    fig, axes = panel_grid(len(attacks))
    for ax, attack in zip(axes, attacks, strict=True):
        for i, g in enumerate(AGGREGATORS):
            if g not in aggregators or (attack, g) not in get:
                continue
            c, st = get[(attack, g)], style(i)
            ax.errorbar([c["aggregation_ms"]], [100 * c["accuracy_mean"]],
                        yerr=[100 * c["accuracy_std"]], ls="none", marker=st.marker, ms=7,
                        color=st.color, mec="black", mew=0.5, capsize=3, label=g,
                        alpha=0.9)  # fmt: skip
        _reference_lines(ax, attack, clean_gm)
        ax.set_title(attack_title(attack), fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    title = "final accuracy (mean ± std over seeds) against aggregation time"
    finish_panels(fig, axes, path, title, "one aggregation (wall-clock ms)",
                  "final test accuracy (%)")  # fmt: skip


def plot_curves(
    out: Path, attacks: list[str], aggregators: list[str], seeds: list[int], path: Path
) -> None:
    """One panel per attack: test accuracy against round for each aggregator, the mean over
    seeds with a ± std band, read from the runs' folders."""
    from fl.experiment.plots import (
        curve,
        draw_line,
        finish_panels,
        load_run,
        mean_band,
        panel_grid,
        style,
    )

    clean: float | None = None
    fig, axes = panel_grid(len(attacks))
    for ax, attack in zip(axes, attacks, strict=True):
        for i, g in enumerate(AGGREGATORS):
            folders = [out / attack / g / f"seed{s}" for s in seeds]
            runs = [load_run(f) for f in folders if (f / "rounds.csv").is_file()]
            if g not in aggregators or not runs:
                continue
            x, y, band = mean_band([curve(r, "round", "central_accuracy") for r in runs])
            draw_line(ax, x, 100 * y, None if band is None else 100 * band, style(i), g, i)
            if attack == "none" and g == "gm":
                clean = float(y[-1])
        _reference_lines(ax, attack, clean)
        ax.set_title(attack_title(attack), fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    over = f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    finish_panels(fig, axes, path, f"test accuracy against round ({over})", "round",
                  "test accuracy (%)")  # fmt: skip


if __name__ == "__main__":
    main()
