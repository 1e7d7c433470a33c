"""Adversaries that lie: strategies × attacks at 20 % malicious nodes, seeds 0–2.

Attacks: none; sign flip (δ' = −5δ); each lie of `attack.lies` alone (inflate_examples ×1000,
forge_labels, fast_lane, stale_replay) and each combined with sign flip. Strategies: FedAvg;
GM; GM weighted by the reported counts, unclipped (the control for inflate_examples); BGMD;
TiFL fast / adaptive (FedAvg aggregation); AdaSGD; FedBuff; and robust compositions: TiFL × GM
with pools widened against f = 10 malicious nodes, and AdaSGD / FedBuff × GM over windows of
25 with a per-node rate limit (once per 25 replies) and the replay check.
Every run has the same virtual-time budget (adversarial.toml).

Per cell: final test accuracy (mean ± std over seeds), the share of malicious rows among the
rows that were aggregated (sync: replies that passed the checks; async: the applied windows,
including updates `max_staleness` dropped, unset here) — a share of rows, not of weight — and
the server's rejections by reason.

Writes results/adversarial[-quick]/<attack>/<strategy>/seed<k>/ (each run's folder),
summary.csv, cells.csv, table.md, accuracy.png and malicious_share.png.

Usage: python simulations/adversarial/run.py [--quick] [--workers N] [--ray] [--resume]
       [--seeds 0 1 2] [--out DIR] [--strategies ...] [--attacks ...] [--set key=value ...]

Each finished run is recorded in OUT/sweep_done.jsonl: after an interruption, a rerun with
--resume skips the finished runs (without it, everything reruns); --ray runs each run as a Ray
task.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from fl.experiment.sweep import (
    add_sweep_options,
    run_jobs,
    sweep_options,
    write_report,
    write_summary,
)
from fl.experiment.tables import read_csv, write_csv

HERE = Path(__file__).parent
FLIP = ["attack.kind=sign_flip", "attack.scale=5.0"]
LIES = ["inflate_examples", "forge_labels", "fast_lane", "stale_replay"]
ATTACKS: dict[str, list[str]] = {
    "none": [],
    "sign_flip": FLIP,
    **{lie: [f'attack.lies=["{lie}"]'] for lie in LIES},
    **{f"{lie}+flip": [*FLIP, f'attack.lies=["{lie}"]'] for lie in LIES},
}
F = 10  # malicious nodes at 20 % of 50: the f robust compositions are told
_TIFL = [
    "strategy.name=tifl",
    "strategy.options.num_tiers=5",
    "strategy.options.profiling_rounds=1",
    "strategy.options.t_max=60.0",
    "evaluation.free=true",
]
_ROBUST_TIFL = [
    "strategy.options.aggregator=geomedian",
    f"strategy.options.num_malicious_nodes={F}",
]
_ROBUST_ASYNC = [
    "strategy.options.buffer_size=25",
    "strategy.options.aggregator=geomedian",
    "strategy.options.rate_limit=1",
    "strategy.options.rate_window=25",
    "strategy.options.replay_check=true",
]
STRATEGIES: dict[str, list[str]] = {
    "fedavg": ["strategy.name=fedavg"],
    "gm": ["strategy.name=geomedian"],
    "gm-trusting": [  # weights = reported num-examples, unclipped: RFA's weighting
        "strategy.name=geomedian",
        "strategy.options.weighted=true",
        "strategy.options.weight_clip=inf",
    ],
    "bgmd": ["strategy.name=bgmd"],
    "tifl-fast": [*_TIFL, "strategy.options.policy=fast"],
    "tifl-adaptive": [*_TIFL, "strategy.options.policy=adaptive"],
    "tifl-fast+gm+pool": [*_TIFL, "strategy.options.policy=fast", *_ROBUST_TIFL],
    "tifl-adaptive+gm+pool": [*_TIFL, "strategy.options.policy=adaptive", *_ROBUST_TIFL],
    "adasgd": ["strategy.name=adasgd"],
    "adasgd+gm+limits": ["strategy.name=adasgd", *_ROBUST_ASYNC],
    "fedbuff": ["strategy.name=fedbuff", "strategy.options.buffer_size=10"],
    "fedbuff+gm+limits": ["strategy.name=fedbuff", *_ROBUST_ASYNC],
}
QUICK = {  # the full run's seed-0 cells of the synchronous strategies (same budget)
    "overrides": [],
    "attacks": ["none", "sign_flip", "inflate_examples+flip", "fast_lane", "fast_lane+flip"],
    "strategies": ["fedavg", "gm", "gm-trusting", "tifl-fast", "tifl-fast+gm+pool"],
    "seeds": [0],
}
REASONS = {  # rejection text → short reason
    "replayed": "replay",
    "label-counts": "label counts",
    "model-version": "version",
    "max_staleness": "stale",
    "NaN": "nan",
    "window of": "window too small",
}


def reason_of(text: str) -> str:
    """A rejection's short reason (its first matching keyword; "other" if none)."""
    for key, short in REASONS.items():
        if key in text:
            return short
    return "other"


def rejections(rows: list[dict[str, Any]]) -> Counter[str]:
    """How many replies the run rejected, by reason (from the rows' `rejected` column)."""
    out: Counter[str] = Counter()
    for row in rows:
        text = str(row.get("rejected") or "")
        for part in filter(None, (p.strip() for p in text.split("; "))):
            out[reason_of(part.split(": ", 1)[-1])] += 1
    return out


def _ids(text: Any) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", str(text or ""))]


def aggregated_nodes(row: dict[str, Any]) -> list[int]:
    """The nodes whose rows one model update aggregated: an async window's nodes, or a sync
    round's replies minus the rejected ones."""
    if "nodes" in row and row.get("window") is not None:
        return _ids(row["nodes"])
    if not row.get("aggregated"):
        return []
    rejected = {int(p.split(":")[0]) for p in str(row.get("rejected") or "").split("; ") if p}
    return [n for n in _ids(row.get("replied")) if n not in rejected]


def malicious_share(rows: list[dict[str, Any]], malicious: set[int]) -> float:
    """Share of malicious rows among all aggregated rows of a run (nan if none)."""
    total = bad = 0
    for row in rows:
        nodes = aggregated_nodes(row)
        total += len(nodes)
        bad += sum(n in malicious for n in nodes)
    return bad / total if total else float("nan")


def run_one(job: tuple[str, str, int, list[str], str]) -> dict[str, Any]:
    """Run one (attack, strategy, seed) and return its row."""
    import torch

    from fl.experiment import run_experiment
    from fl.experiment.config import load_config
    from fl.sim.attacks import malicious_nodes
    from fl.sim.grid import FIRST_NODE_ID

    torch.set_num_threads(1)
    attack, strategy, seed, overrides, out = job
    cfg = load_config(HERE / "adversarial.toml", [f"name={strategy}", f"seed={seed}", *overrides])
    result = run_experiment(cfg, Path(out) / attack / strategy / f"seed{seed}")
    bad = {FIRST_NODE_ID + i for i in malicious_nodes(cfg.attack, cfg.num_nodes, cfg.seed)}
    reasons = rejections(result.rows)
    return {
        "attack": attack,
        "strategy": strategy,
        "seed": seed,
        "final_accuracy": result.final_accuracy,
        "malicious_share": malicious_share(result.rows, bad) if bad else 0.0,
        "updates": len(result.rows) - 1,
        "rejected": sum(reasons.values()),
        "reasons": " ".join(f"{k}={v}" for k, v in sorted(reasons.items())),
        "wall_s": result.wall_s,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (attack, strategy); reasons summed."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["attack"], r["strategy"]), []).append(r)
    out = []
    for (attack, strategy), rs in cells.items():
        accs = [float(r["final_accuracy"]) for r in rs]
        reasons: Counter[str] = Counter()
        for r in rs:
            for part in str(r["reasons"] or "").split():
                key, value = part.split("=")
                reasons[key] += int(value)
        out.append(
            {
                "attack": attack,
                "strategy": strategy,
                "seeds": len(rs),
                "accuracy_mean": statistics.fmean(accs),
                "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "malicious_share": statistics.fmean(float(r["malicious_share"]) for r in rs),
                "updates": statistics.fmean(int(r["updates"]) for r in rs),
                "reasons": " ".join(f"{k}={v}" for k, v in sorted(reasons.items())),
            }
        )
    return out


def tables(cells: list[dict[str, Any]], attacks: list[str], strategies: list[str]) -> str:
    """Markdown: accuracy (mean ± std, %), malicious share of aggregated rows, rejections."""
    get = {(c["attack"], c["strategy"]): c for c in cells}
    head = "| strategy | " + " | ".join(attacks) + " |"
    rule = "|" + "---|" * (len(attacks) + 1)

    def block(title: str, fmt: Any) -> list[str]:
        lines = [f"**{title}**", "", head, rule]
        for s in strategies:
            vals = [fmt(get[(a, s)]) if (a, s) in get else "" for a in attacks]
            lines.append(f"| {s} | " + " | ".join(vals) + " |")
        return [*lines, ""]

    acc = block(
        "Final test accuracy (%, mean ± std over seeds)",
        lambda c: f"{100 * c['accuracy_mean']:.1f} ± {100 * c['accuracy_std']:.1f}",
    )
    share = block(
        "Malicious share of the aggregated rows (20 % of the nodes are malicious)",
        lambda c: f"{c['malicious_share']:.2f}",
    )
    why = block("Rejected replies by reason (summed over seeds)", lambda c: c["reasons"] or "–")
    return "\n".join([*acc, *share, *why])


def checks(cells: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The claims the table is read for: (claim, holds, numbers)."""
    get = {(c["attack"], c["strategy"]): c for c in cells}

    def acc(a: str, s: str) -> float | None:
        return get[(a, s)]["accuracy_mean"] if (a, s) in get else None

    def share(a: str, s: str) -> float | None:
        return get[(a, s)]["malicious_share"] if (a, s) in get else None

    out: list[tuple[str, bool, str]] = []

    def claim(text: str, values: list[float | None], test: Any, show: str) -> None:
        if all(v is not None for v in values):
            out.append((text, bool(test(*values)), show.format(*values)))

    # A lie a defence neutralises costs nothing beyond the sign flip it rides on.
    claim("inflate_examples+flip: FedAvg collapses (≤ 20 %)",
          [acc("inflate_examples+flip", "fedavg")], lambda a: a <= 0.2, "{:.3f}")  # fmt: skip
    claim("inflate_examples+flip: a GM weighted by the reports collapses (≤ 20 %)",
          [acc("inflate_examples+flip", "gm-trusting")], lambda a: a <= 0.2, "{:.3f}")  # fmt: skip
    claim("inflate_examples+flip: the default (unweighted) GM keeps ≥ 20 points more",
          [acc("inflate_examples+flip", "gm"), acc("inflate_examples+flip", "gm-trusting")],
          lambda a, c: a >= c + 0.2, "{:.3f} vs {:.3f}")  # fmt: skip
    claim("fast_lane: TiFL fast aggregates a malicious majority",
          [share("fast_lane", "tifl-fast")], lambda s: s > 0.5, "share {:.2f}")  # fmt: skip
    claim("fast_lane: widened pools bring it to ≤ 0.3",
          [share("fast_lane", "tifl-fast+gm+pool")], lambda s: s <= 0.3, "{:.2f}")  # fmt: skip
    claim("fast_lane+flip: TiFL fast collapses (≤ 20 %)",
          [acc("fast_lane+flip", "tifl-fast")], lambda a: a <= 0.2, "{:.3f}")  # fmt: skip
    claim("fast_lane+flip: TiFL fast × GM with widened pools within 5 points of GM's flip",
          [acc("fast_lane+flip", "tifl-fast+gm+pool"), acc("sign_flip", "gm")],
          lambda a, c: a >= c - 0.05, "{:.3f} vs {:.3f}")  # fmt: skip
    claim("fast_lane: attackers over-represented in FedBuff's windows (> 0.2)",
          [share("fast_lane", "fedbuff")], lambda s: s > 0.2, "share {:.2f}")  # fmt: skip
    claim("fast_lane+flip: FedBuff × GM with limits within 5 points of its flip alone",
          [acc("fast_lane+flip", "fedbuff+gm+limits"), acc("sign_flip", "fedbuff+gm+limits")],
          lambda a, c: a >= c - 0.05, "{:.3f} vs {:.3f}")  # fmt: skip
    if ("stale_replay", "fedbuff+gm+limits") in get:
        n = get[("stale_replay", "fedbuff+gm+limits")]["reasons"]
        out.append(("stale_replay: the replay check rejects replays", "replay=" in n, n or "none"))
    return out


def _family(name: str, kind: str) -> str:
    """The block a strategy or attack belongs to in the heat maps (blocks are separated by
    lines): plain / TiFL / asynchronous strategies; no lie / a lie alone / a lie + flip."""
    if kind == "strategy":
        return "tifl" if name.startswith("tifl") else "sync" if name in _SYNC_PLAIN else "async"
    return "base" if name in ("none", "sign_flip") else "flip" if name.endswith("+flip") else "lie"


_SYNC_PLAIN = ("fedavg", "gm", "gm-trusting", "bgmd")


def plot(cells: list[dict[str, Any]], attacks: list[str], strategies: list[str],
         key: str, title: str, path: Path) -> None:  # fmt: skip
    """A strategy × attack heat map of `key`, each cell annotated; blocks of strategies
    (plain, TiFL, asynchronous) and of attacks (none and the flip, lies alone, lies + flip) are
    separated by lines. Accuracy: red (chance) to green, cells "mean ± std" over seeds in %.
    Malicious share: a diverging scale centred on the malicious nodes' share of the population
    (20 %), so green means under-represented and red over-represented."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.ticker import FuncFormatter

    get = {(c["attack"], c["strategy"]): c for c in cells}

    def value(a: str, s: str, k: str) -> float:
        return float(get[(a, s)][k]) if (a, s) in get else np.nan

    accuracy = key == "accuracy_mean"
    # Without an attack there are no malicious nodes, so no share to show (grey, "–").
    grid = np.array(
        [[value(a, s, key) if accuracy or a != "none" else np.nan for a in attacks]
         for s in strategies],
        dtype=float,
    )  # fmt: skip
    fig, ax = plt.subplots(
        figsize=(0.95 * len(attacks) + 3.2, 0.48 * len(strategies) + 2.0), dpi=110
    )
    cmap = plt.get_cmap("RdYlGn" if accuracy else "RdYlGn_r").copy()
    cmap.set_bad("0.88")
    # Malicious share: F of the 50 nodes are malicious, the neutral colour is their share.
    norm = Normalize(0, 1) if accuracy else TwoSlopeNorm(vmin=0.0, vcenter=F / 50, vmax=1.0)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(len(attacks)), attacks, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(strategies)), strategies, fontsize=8)
    for i, s in enumerate(strategies):
        for j, a in enumerate(attacks):
            if np.isnan(grid[i, j]):
                ax.text(j, i, "–", ha="center", va="center", fontsize=7, color="0.4")
                continue
            r, g, b, _ = im.cmap(im.norm(grid[i, j]))
            color = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.45 else "black"
            if accuracy:
                text = f"{100 * grid[i, j]:.0f} ± {100 * value(a, s, 'accuracy_std'):.0f}"
            else:
                text = f"{grid[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    for names, kind, line in (
        (strategies, "strategy", ax.axhline),
        (attacks, "attack", ax.axvline),
    ):
        for k in range(1, len(names)):
            if _family(names[k], kind) != _family(names[k - 1], kind):
                line(k - 0.5, color="black", lw=1.2)
    ax.set_title(title, fontsize=9)
    bar = fig.colorbar(im, ax=ax, fraction=0.03)
    bar.set_label("test accuracy" if accuracy else "malicious share of aggregated rows", fontsize=8)
    if accuracy:
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f} %"))
    else:
        bar.set_ticks([0.0, 0.1, F / 50, 0.5, 1.0])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[tuple[str, bool, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="5 attacks × 4 strategies, 1 seed (~1 min)"
    )
    add_sweep_options(parser, workers=min(2, os.cpu_count() or 1))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--strategies", nargs="+", default=None, choices=list(STRATEGIES))
    parser.add_argument("--attacks", nargs="+", default=None, choices=list(ATTACKS))
    parser.add_argument("--report", action="store_true",
                        help="re-render tables, plots, checks from OUT/summary.csv")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override for every run")  # fmt: skip
    args = parser.parse_args(argv)
    out = args.out or Path("results/adversarial-quick" if args.quick else "results/adversarial")
    attacks = args.attacks or (QUICK["attacks"] if args.quick else list(ATTACKS))
    strategies = args.strategies or (QUICK["strategies"] if args.quick else list(STRATEGIES))
    seeds = QUICK["seeds"] if args.quick else args.seeds
    base = [*(QUICK["overrides"] if args.quick else []), *args.overrides]
    jobs = [
        (a, s, seed, [*base, *ATTACKS[a], *STRATEGIES[s]], str(out))
        for a in attacks
        for s in strategies
        for seed in seeds
    ]
    if args.report:
        rows = [r for r in read_csv(out / "summary.csv") if (r["attack"], r["strategy"], r["seed"])
                in {(a, s, seed) for a, s, seed, *_ in jobs}]  # fmt: skip
    else:
        rows = run_jobs(run_one, jobs, args.workers, **sweep_options(args, out))
        done = {(r["attack"], r["strategy"], r["seed"]) for r in rows}
        if (out / "summary.csv").is_file():  # a rerun of some cells keeps the others
            old = read_csv(out / "summary.csv")
            rows = [r for r in old if (r["attack"], r["strategy"], r["seed"]) not in done] + rows
        write_summary(out, rows)
        keep = {(a, s) for a, s, *_ in jobs}
        rows = [r for r in rows if (r["attack"], r["strategy"]) in keep]
    cells = summarise(rows)
    write_csv(out / "cells.csv", cells)
    title = "final test accuracy (%, mean ± std over seeds)"
    plot(cells, attacks, strategies, "accuracy_mean", title, out / "accuracy.png")
    title = "malicious share of the aggregated rows (20 % of the nodes are malicious)"
    plot(cells, attacks, strategies, "malicious_share", title, out / "malicious_share.png")
    results = checks(cells)
    write_report(out, [tables(cells, attacks, strategies)], results)
    return results


if __name__ == "__main__":
    main()
