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
accuracy_vs_round.png; <out> is results/bgmd-paper[-quick].

Usage: python simulations/bgmd/paper.py [--quick] [--workers N] [--seeds 0 1 2] [--out DIR]
       [--attacks ...] [--aggregators ...] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
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
COLORS = {"mean": "C0", "median": "C1", "gm": "C2", "bgmd": "C3"}  # the same in every plot


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


def plot_curves(rows: list[dict[str, Any]], attacks: list[str], path: Path) -> None:
    """Test accuracy against round, one panel per attack, one line per aggregator (mean over
    seeds, the band their min–max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(
        1, len(attacks), figsize=(3.1 * len(attacks), 3.2), dpi=110, sharey=True, squeeze=False
    )
    for ax, attack in zip(axes[0], attacks, strict=True):
        for g in AGGREGATORS:
            runs = [r["curve"] for r in rows if r["attack"] == attack and r["aggregator"] == g]
            if not runs:
                continue
            x = np.array([rnd for rnd, _ in runs[0]])
            acc = np.array([[a for _, a in c] for c in runs if len(c) == len(x)])
            ax.plot(x, 100 * acc.mean(0), label=g, lw=1.5, color=COLORS[g])
            ax.fill_between(x, 100 * acc.min(0), 100 * acc.max(0), color=COLORS[g], alpha=0.15)
        ax.set_title(attack, fontsize=10)
        ax.set_xlabel("round (one server step)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].set_ylim(0, 100)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
    args = parser.parse_args(argv)
    out = args.out or Path("results/bgmd-paper-quick" if args.quick else "results/bgmd-paper")
    attacks = args.attacks or (QUICK["attacks"] if args.quick else list(ATTACKS))
    aggregators = args.aggregators or (QUICK["aggregators"] if args.quick else list(AGGREGATORS))
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
    cells = summarise(rows)
    plot_curves(rows, attacks, out / "accuracy_vs_round.png")
    results = checks(cells, attacks)
    rounds = sorted({r["rounds"] for r in rows})
    footer = (
        f"Final central test accuracy (%) after {', '.join(map(str, rounds))} rounds, mean ± std "
        f"over seeds {', '.join(map(str, seeds))}; aggregation time: mean wall-clock ms of one "
        f"aggregate_train (stacking the 32 replies, the rule, the optimizer step); rule time: the "
        f"rule alone. {len(jobs)} runs in {elapsed / 60:.1f} min on {args.workers} worker(s)."
    )
    write_report(out, [table(cells, attacks, aggregators), "", footer, ""], results)
    return results


if __name__ == "__main__":
    main()
