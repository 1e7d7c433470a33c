"""BGMD's Table 2 regime on CPU: each row is one mini-batch gradient, SGD momentum after
aggregation.

The authors' Fashion-MNIST experiments (research/algorithms.md §3.4): b = 32 rows per
aggregation, each row ONE mini-batch gradient (batch 16), the aggregate loaded into ``.grad``
of ``torch.optim.SGD`` (lr 0.01, momentum 0.9, Nesterov, weight decay 1e-5). Here: 32 IID nodes
all train every round, each ONE local SGD step on 16 examples at client lr 1.0, so its delta is
minus its mini-batch gradient; `RobustAggregation` (strategy "robust") aggregates the deltas
and steps `ServerSGD` with the authors' optimizer settings. The attacks act on the deltas, i.e.
on the gradients, as the authors' attacks act on G: bit flip ×(−5) (``sign_flip``, scale 5) and
additive N(0, 10²) (``additive``, std 10), on 20% and 40% of the nodes (6 and 13 of 32 — the
authors' int(0.4·32) is 12; the same nodes every round, as the authors corrupt the same rows).
Folding the lr into the server optimizer changes nothing: top-k by column norm and the GM are
scale-equivariant, the memory scales with them, and the authors' GM already runs on G/lr, i.e.
on gradient-scale points (tests/test_bgmd_paper.py checks it step by step).

Differences from the paper: MNIST, not Fashion-MNIST (Fashion-MNIST is not available offline);
the small CNN (8 and 16 channels, 9 098 parameters) instead of the 1.16M-parameter LeNet; far
fewer steps: 150 rounds (4 800 mini-batch gradients, 1.3 epochs; the paper: 50 epochs, 5 850
aggregations) and no step schedule. Aggregators: mean, coordinate-wise median, GM and BGMD
(β = 0.1, top-k, faithful mean memory), both GMs with the authors' solver: Vardi–Zhang, eps
1e-5, at most 50 iterations (the authors return a zero step when 50 do not converge; this
solver returns the last iterate; here 98–100% of the solves converge, in 7–15 iterations).

Cost: a round takes ~0.7 s on one of two shared cores (32 clients, a 10 000-image evaluation
every 25 rounds ~3 s); the 60 runs of the full table take ~1 h on 2 workers.

Writes <out>/<attack>/<aggregator>/seed<k>/ (each run's folder), <out>/summary.csv, table.md
(accuracy mean ± std per attack × aggregator, aggregation time, the checks) and
accuracy_vs_round.png (one panel per attack, one line per aggregator: mean ± std over seeds);
<out> is results/bgmd-paper[-quick]. `--report` redraws the plot and rewrites table.md from
<out>/summary.csv and the run folders without rerunning (attacks, aggregators and seeds default
to those in summary.csv).

Usage: python simulations/bgmd/paper.py [--quick] [--workers N] [--seeds 0 1 2] [--out DIR]
       [--attacks ...] [--aggregators ...] [--set key=value ...] [--report]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
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
}
VARDI = 'method="vardi", tol=1e-5, max_iter=50'  # the authors' GM solver
AGGREGATORS = {
    "mean": ["strategy.options.aggregator=mean", "strategy.options.aggregator_options={}"],
    "median": ["strategy.options.aggregator=median", "strategy.options.aggregator_options={}"],
    "gm": [
        "strategy.options.aggregator=geomedian",
        f"strategy.options.aggregator_options={{{VARDI}}}",
    ],
    "bgmd": [
        "strategy.options.aggregator=bgmd",
        f"strategy.options.aggregator_options={{beta=0.1, {VARDI}}}",
    ],
}
QUICK = {
    "overrides": ["data.name=digits", "rounds=100", "evaluation.every=25"],
    "attacks": ["none", "bitflip-40"],
    "aggregators": ["mean", "gm", "bgmd"],
    "seeds": [0],
}
CHANCE = 0.1
ATTACK_TITLES = {"none": "no attack", "bitflip": "bit flip ×(−5)", "additive": "additive N(0, 10²)"}


def run_one(job: tuple[str, str, int, list[str], str]) -> dict[str, Any]:
    """Run one (attack, aggregator, seed); its row, with the accuracy curve under "curve"."""
    import torch

    from fl.experiment import run_experiment
    from fl.experiment.config import load_config

    torch.set_num_threads(1)
    attack, aggregator, seed, overrides, out = job
    cfg = load_config(HERE / "paper.toml", [f"name={aggregator}", f"seed={seed}", *overrides])
    result = run_experiment(cfg, Path(out) / attack / aggregator / f"seed{seed}")
    agg = [r["aggregation_wall_s"] for r in result.rows if "aggregation_wall_s" in r]
    rule = [r["rule_wall_s"] for r in result.rows if "rule_wall_s" in r]
    converged = [r["gm_converged"] for r in result.rows if "gm_converged" in r]
    iters = [r["gm_iterations"] for r in result.rows if "gm_iterations" in r]
    return {
        "attack": attack,
        "aggregator": aggregator,
        "seed": seed,
        "rounds": max(int(r["round"]) for r in result.rows),
        "final_accuracy": result.final_accuracy,
        "aggregation_s": sum(agg) / len(agg),
        "rule_s": sum(rule) / len(rule),
        "gm_converged_fraction": statistics.fmean(converged) if converged else "",
        "gm_iterations_mean": statistics.fmean(iters) if iters else "",
        "wall_s": result.wall_s,
        "curve": [
            (int(r["round"]), float(r["central_accuracy"]))
            for r in result.rows
            if "central_accuracy" in r
        ],
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
                "rule_ms": 1e3 * statistics.fmean(r["rule_s"] for r in rs),
            }
        )
    return out


def table(cells: list[dict[str, Any]], attacks: list[str], aggregators: list[str]) -> str:
    """Markdown: rows = attacks, columns = aggregators, entries = accuracy mean ± std (%)."""
    get = {(c["attack"], c["aggregator"]): c for c in cells}
    lines = ["| attack | " + " | ".join(aggregators) + " |", "|" + "---|" * (len(aggregators) + 1)]
    for a in attacks:
        vals = [get[(a, g)] for g in aggregators]
        lines.append(
            f"| {a} | "
            + " | ".join(
                f"{100 * v['accuracy_mean']:.2f} ± {100 * v['accuracy_std']:.2f}" for v in vals
            )
            + " |"
        )
    for label, key in (("aggregation time (ms)", "aggregation_ms"), ("rule time (ms)", "rule_ms")):
        lines.append(
            f"| {label} | "
            + " | ".join(
                f"{statistics.fmean(get[(a, g)][key] for a in attacks):.1f}" for g in aggregators
            )
            + " |"
        )
    return "\n".join(lines)


def checks(cells: list[dict[str, Any]], attacks: list[str]) -> list[tuple[str, bool, str]]:
    """The paper's claims on these runs: (claim, met, numbers)."""
    get = {(c["attack"], c["aggregator"]): c["accuracy_mean"] for c in cells}
    out = []
    for a in attacks:
        if (a, "bgmd") in get and (a, "gm") in get:
            diff = get[(a, "bgmd")] - get[(a, "gm")]
            out.append((f"{a}: BGMD within 2 points of GM", abs(diff) <= 0.02, f"{diff:+.4f}"))
    if ("bitflip-40", "gm") in get and ("none", "gm") in get:
        gap = get[("bitflip-40", "gm")] - get[("none", "gm")]
        out.append(("bit flip 40%: GM within 2 points of clean GM", gap >= -0.02, f"{gap:+.4f}"))
    for a in attacks:
        if a.startswith("bitflip") and (a, "mean") in get:
            acc = get[(a, "mean")]
            out.append((f"{a}: mean ≤ chance + 5 points", acc <= CHANCE + 0.05, f"{acc:.4f}"))
    return out


def attack_title(attack: str) -> str:
    """A panel title: "bitflip-40" → "bit flip ×(−5), 40 % of nodes"."""
    kind, _, frac = attack.partition("-")
    return ATTACK_TITLES.get(kind, kind) + (f", {frac} % of nodes" if frac else "")


def curves_from_folders(out: Path, rows: list[dict[str, Any]]) -> None:
    """Give each row its accuracy curve ("curve": [(round, accuracy), ...]) from its run's
    rounds.csv, as `run_one` returns it."""
    from fl.experiment.plots import curve, load_run

    for r in rows:
        run = load_run(out / r["attack"] / r["aggregator"] / f"seed{r['seed']}")
        x, y = curve(run, "round", "central_accuracy")
        r["curve"] = [(int(a), float(b)) for a, b in zip(x, y, strict=True)]


def plot_curves(rows: list[dict[str, Any]], attacks: list[str], path: Path) -> None:
    """Test accuracy against round, one panel per attack, one line per aggregator (the mean
    over seeds, the band ± one std; its own colour, line style and marker), chance and the
    clean GM's accuracy − 2 points (the paper's claim for GM under attack) as reference lines,
    and one legend under the panels."""
    import numpy as np

    from fl.experiment.plots import TARGET_STYLE, draw_line, finish_panels, mean_band, panel_grid
    from fl.experiment.plots import style as line_style

    def seeds_of(attack: str, g: str) -> list[tuple[np.ndarray, np.ndarray]]:
        runs = [r["curve"] for r in rows if r["attack"] == attack and r["aggregator"] == g]
        return [(np.array([x for x, _ in c], float), np.array([a for _, a in c])) for c in runs]

    clean = seeds_of("none", "gm")
    clean_gm = float(np.mean([y[-1] for _, y in clean])) if clean else None
    seeds = sorted({r["seed"] for r in rows})
    fig, axes = panel_grid(len(attacks), ncols=min(5, len(attacks)), width=3.3, height=3.2)
    for ax, attack in zip(axes, attacks, strict=True):
        for i, g in enumerate(AGGREGATORS):
            curves = seeds_of(attack, g)
            if curves:
                x, y, band = mean_band(curves)
                draw_line(ax, x, 100 * y, None if band is None else 100 * band, line_style(i), g, i)
        ax.axhline(100 * CHANCE, color="0.5", ls=":", lw=1.0, label="chance (10 %)", zorder=1)
        if attack != "none" and clean_gm is not None:
            ax.axhline(100 * clean_gm - 2, label="target: clean GM − 2 points", **TARGET_STYLE)
        ax.set_title(attack_title(attack), fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    over = f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    finish_panels(fig, axes, path, f"test accuracy against round ({over})",
                  "round (one server step)", "test accuracy (%)", legend_cols=6)  # fmt: skip


def footer_timing(out: Path, runs: int, rows: list[dict[str, Any]]) -> str:
    """The "N runs in X min on W worker(s)" of a report: the sweep's own figure from the
    table.md it wrote (wall-clock, not stored elsewhere), else the runs' summed wall time."""
    old = out / "table.md"
    text = old.read_text() if old.is_file() else ""
    m = re.search(r"(\d+) runs in ([\d.]+) min on (\d+) worker", text)
    if m and int(m.group(1)) == runs:
        return f"{runs} runs in {m.group(2)} min on {m.group(3)} worker(s)."
    total = sum(float(r["wall_s"]) for r in rows) / 60
    return f"{runs} runs, {total:.1f} min of run wall time in all."


def read_rows(
    out: Path, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[str], list[str], list[int]]:
    """The rows of OUT/summary.csv for --report, and the attacks, aggregators and seeds they
    cover (those given on the command line, else all in the file, in this script's order)."""
    from fl.experiment.tables import read_csv

    if not (out / "summary.csv").is_file():
        raise SystemExit(f"--report: {out / 'summary.csv'} not found; run without --report first")
    rows = read_csv(out / "summary.csv")
    attacks = args.attacks or [a for a in ATTACKS if any(r["attack"] == a for r in rows)]
    aggregators = args.aggregators or [
        g for g in AGGREGATORS if any(r["aggregator"] == g for r in rows)
    ]
    seeds = args.seeds or sorted({int(r["seed"]) for r in rows})
    keep = [
        r
        for r in rows
        if r["attack"] in attacks and r["aggregator"] in aggregators and r["seed"] in seeds
    ]
    return keep, attacks, aggregators, seeds


def main(argv: list[str] | None = None) -> list[tuple[str, bool, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="digits, 100 rounds, none + bitflip-40, mean/gm/bgmd, 1 seed (~1.5 min)",
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--aggregators", nargs="+", default=None, choices=list(AGGREGATORS))
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
        help="redraw the plot and rewrite table.md from OUT/summary.csv without rerunning",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("results/bgmd-paper-quick" if args.quick else "results/bgmd-paper")
    if args.report:
        rows, attacks, aggregators, seeds = read_rows(out, args)
        curves_from_folders(out, rows)
        timing = footer_timing(out, len(rows), rows)
    else:
        attacks = args.attacks or (QUICK["attacks"] if args.quick else list(ATTACKS))
        aggregators = args.aggregators or (
            QUICK["aggregators"] if args.quick else list(AGGREGATORS)
        )
        seeds = args.seeds or (QUICK["seeds"] if args.quick else [0, 1, 2])
        base = [*(QUICK["overrides"] if args.quick else []), *args.overrides]
        jobs = [
            (a, g, s, [*base, *ATTACKS[a], *AGGREGATORS[g]], str(out))
            for a in attacks
            for g in aggregators
            for s in seeds
        ]
        started = time.perf_counter()
        rows = run_jobs(run_one, jobs, args.workers)
        elapsed = time.perf_counter() - started
        curves = [r.pop("curve") for r in rows]
        write_summary(out, rows)
        for r, c in zip(rows, curves, strict=True):
            r["curve"] = c
        timing = f"{len(jobs)} runs in {elapsed / 60:.1f} min on {args.workers} worker(s)."
    cells = summarise(rows)
    plot_curves(rows, attacks, out / "accuracy_vs_round.png")
    results = checks(cells, attacks)
    rounds = sorted({r["rounds"] for r in rows})
    footer = (
        f"Final central test accuracy (%) after {', '.join(map(str, rounds))} rounds, mean ± std "
        f"over seeds {', '.join(map(str, seeds))}; aggregation time: mean wall-clock ms of one "
        f"aggregate_train (stacking the 32 replies, the rule, the optimizer step); rule time: the "
        f"rule alone. {timing}"
    )
    write_report(out, [table(cells, attacks, aggregators), "", footer, ""], results)
    return results


if __name__ == "__main__":
    main()
