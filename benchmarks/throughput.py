"""Client updates per second of wall time: FedAvg on digits with 20, 100 and 1000 nodes.

Prints the machine's details and, per population size, the wall time of the rounds, the
client updates per second, and how much of the wall time was spent inside ClientApps (the
rest is the grid, the strategy and central evaluation).

Usage: python benchmarks/throughput.py [--rounds 3] [--nodes 20 100 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import flwr
import torch

from fl.experiment import run_experiment
from fl.experiment.config import load_dict


def machine() -> str:
    """One line describing where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__} (runs use torch_threads=1); "
        f"flwr {flwr.__version__}; python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nodes", type=int, nargs="+", default=[20, 100, 1000])
    args = parser.parse_args()
    print(machine())
    print(f"{'nodes':>6} {'updates':>8} {'wall s':>8} {'updates/s':>10} {'in ClientApp':>13}")
    for n in args.nodes:
        cfg = load_dict(
            {
                "name": f"bench-{n}",
                "num_nodes": n,
                "rounds": args.rounds,
                "data": {"name": "digits", "partition": "iid", "local_test_fraction": 0.0},
                "model": {"name": "mlp", "hidden": [64]},
                "train": {"epochs": 1, "batch_size": 16},
                "evaluation": {"central": False},
            }
        )
        run_experiment(cfg.replace(rounds=1))  # warm-up: data load, torch init
        t0 = time.perf_counter()
        result = run_experiment(cfg)
        wall = time.perf_counter() - t0
        updates = sum(int(r.get("num_replied", 0)) for r in result.rows)
        share = result.grid.client_wall_s / wall
        print(f"{n:6d} {updates:8d} {wall:8.2f} {updates / wall:10.0f} {share:12.0%}")


if __name__ == "__main__":
    main()
