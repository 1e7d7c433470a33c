"""Quickstart: FedAvg and FedProx on non-IID MNIST over a 5-tier heterogeneous population.

Three runs of the same config (simulations/quickstart/fedavg.toml):
  fedavg-wait      FedAvg, the server waits for every selected node (no deadline)
  fedavg           FedAvg with a 60 s round deadline: stragglers past it are dropped
  fedprox          FedProx (mu = 0.1) with the same deadline

Writes results/quickstart/<run>/ (tables, model, plots), an overlay plot of all three
(accuracy_vs_time.png, accuracy_vs_round.png: one line per run, named by the config keys that
differ, the target accuracy dashed and where each run reaches it marked), and prints a table.
`--report` redraws the plots and reprints the table from the results folders without rerunning.

Usage: python simulations/quickstart/run.py [--rounds N] [--out DIR] [--report]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fl.experiment import run_experiment
from fl.experiment.config import load_config
from fl.experiment.plots import plot_runs
from fl.experiment.results import summary
from fl.experiment.tables import read_csv

HERE = Path(__file__).parent
RUNS = {
    "fedavg-wait": ["name=fedavg-wait", "round_timeout_s=3600.0"],
    "fedavg": [],
    "fedprox": ["name=fedprox", "strategy.name=fedprox", "strategy.options.proximal_mu=0.1"],
}


def table_line(name: str, s: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """One printed table line from a run's summary (summary.json) and round rows."""
    t = s.get("time_to_target_s")
    dropped = sum(int(r.get("num_dropped") or 0) for r in rows)
    return (
        f"{name:12} {s['final_accuracy']:9.4f} {s['virtual_time_s']:10.0f} "
        f"{(f'{t:.0f}' if t is not None else 'never'):>12} {dropped:8d} {s['wall_time_s']:7.1f}"
    )


def report(out: Path, lines: list[str], target: float) -> list[Path]:
    """Print the table and draw the overlay plots of the runs in `out`; return the PNGs."""
    print(
        f"{'run':12} {'final acc':>9} {'virtual s':>10} {f'to {target} (s)':>12} "
        f"{'dropped':>8} {'wall s':>7}"
    )
    print("\n".join(lines))
    paths = plot_runs([out / name for name in RUNS], out)
    for path in paths:
        print(f"plot: {path}")
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/quickstart"))
    parser.add_argument(
        "--report",
        action="store_true",
        help="redraw the plots and reprint the table from OUT/<run>/ without rerunning",
    )
    args = parser.parse_args(argv)
    extra = [f"rounds={args.rounds}"] if args.rounds else []
    lines = []
    for name, overrides in RUNS.items():
        cfg = load_config(HERE / "fedavg.toml", [*overrides, *extra])
        if args.report:
            folder = args.out / name
            if not (folder / "summary.json").is_file():
                parser.error(f"--report: {folder} has no summary.json; run without --report")
            s = json.loads((folder / "summary.json").read_text())
            rows = read_csv(folder / "rounds.csv")
        else:
            result = run_experiment(cfg, args.out / name, progress=True)
            s, rows = summary(result), result.rows
        lines.append(table_line(name, s, rows))
    return report(args.out, lines, cfg.evaluation.target_accuracy)


if __name__ == "__main__":
    main()
