"""Quickstart: FedAvg and FedProx on non-IID MNIST over a 5-tier heterogeneous population.

Three runs of the same config (simulations/quickstart/fedavg.toml):
  fedavg-wait      FedAvg, the server waits for every selected node (no deadline)
  fedavg           FedAvg with a 60 s round deadline: stragglers past it are dropped
  fedprox          FedProx (mu = 0.1) with the same deadline

Writes results/quickstart/<run>/ (tables, model, plots), an overlay plot of all three, and
prints a table. Usage: python simulations/quickstart/run.py [--rounds N] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fl.experiment import run_experiment
from fl.experiment.config import load_config
from fl.experiment.plots import plot_runs
from fl.experiment.results import summary

HERE = Path(__file__).parent
RUNS = {
    "fedavg-wait": ["name=fedavg-wait", "round_timeout_s=3600.0"],
    "fedavg": [],
    "fedprox": ["name=fedprox", "strategy.name=fedprox", "strategy.options.proximal_mu=0.1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/quickstart"))
    args = parser.parse_args()
    extra = [f"rounds={args.rounds}"] if args.rounds else []
    lines = []
    for name, overrides in RUNS.items():
        cfg = load_config(HERE / "fedavg.toml", [*overrides, *extra])
        result = run_experiment(cfg, args.out / name, progress=True)
        s = summary(result)
        t = s.get("time_to_target_s")
        dropped = sum(int(r.get("num_dropped", 0)) for r in result.rows)
        lines.append(
            f"{name:12} {s['final_accuracy']:9.4f} {s['virtual_time_s']:10.0f} "
            f"{(f'{t:.0f}' if t is not None else 'never'):>12} {dropped:8d} {s['wall_time_s']:7.1f}"
        )
    target = cfg.evaluation.target_accuracy
    print(
        f"{'run':12} {'final acc':>9} {'virtual s':>10} {f'to {target} (s)':>12} "
        f"{'dropped':>8} {'wall s':>7}"
    )
    print("\n".join(lines))
    for path in plot_runs([args.out / name for name in RUNS], args.out):
        print(f"plot: {path}")


if __name__ == "__main__":
    main()
