"""Quickstart: FedAvg vs FedProx on non-IID digits over a 5-tier heterogeneous population.

Runs both, writes results/quickstart/{fedavg,fedprox}/ and an overlay plot, prints a table.
Usage: python simulations/quickstart/run.py [--rounds N] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fl.config import load_config
from fl.experiment import run_experiment
from fl.plots import plot_runs
from fl.results import summary

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/quickstart"))
    args = parser.parse_args()
    extra = [f"rounds={args.rounds}"] if args.rounds else []
    runs = {
        "fedavg": load_config(HERE / "fedavg.toml", extra),
        "fedprox": load_config(
            HERE / "fedavg.toml",
            [*extra, "name=fedprox", "strategy.name=fedprox", "strategy.options.proximal_mu=0.1"],
        ),
    }
    dirs = []
    print(f"{'run':10} {'final acc':>9} {'virtual s':>10} {'to 0.85 (s)':>12} {'wall s':>7}")
    for name, cfg in runs.items():
        result = run_experiment(cfg, args.out / name, progress=True)
        s = summary(result)
        t = s.get("time_to_target_s")
        print(
            f"{name:10} {s['final_accuracy']:9.4f} {s['virtual_time_s']:10.1f} "
            f"{(f'{t:.1f}' if t is not None else 'never'):>12} {s['wall_time_s']:7.1f}"
        )
        dirs.append(args.out / name)
    for path in plot_runs(dirs, args.out):
        print(f"plot: {path}")


if __name__ == "__main__":
    main()
