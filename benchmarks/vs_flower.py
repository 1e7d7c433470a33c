"""The same FedAvg workload through Flower's Simulation Engine (Ray, `flwr run`) and through the
virtual grid, measured side by side in one run: wall time of each, the ratio, and whether the
final accuracies agree.

Ray's wall time includes what a user waits for with `flwr run` (starting the local SuperLink and
Ray, building and installing the app, loading the data in each worker); the virtual grid's
includes loading the data (its per-process cache is cleared before each run).

The virtual grid runs its clients with the executor `--executor` names (default "auto": batched
for the MLP, a process pool for the CNN; see the README's "Executors").

Usage: python benchmarks/vs_flower.py [--quick] [--nodes 20 100 500] [--rounds 5] [--executor auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from fl import client
from fl.experiment import run_experiment
from fl.experiment.config import load_dict
from fl.flower.engines import run_on_flower

WORKLOADS: dict[str, dict[str, Any]] = {
    "digits MLP": {"data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [64]}},
    "MNIST CNN": {
        "data": {"name": "mnist", "max_samples": 6000},
        "model": {"name": "cnn", "cnn_channels": [8, 16]},
    },
}


def config(workload: str, nodes: int, participation: float, rounds: int) -> Any:
    """FedAvg, 2 local epochs, central evaluation after the last round only."""
    return load_dict(
        {
            "name": "bench",
            "seed": 0,
            "num_nodes": nodes,
            "rounds": rounds,
            **WORKLOADS[workload],
            "train": {"epochs": 2, "batch_size": 16, "lr": 0.1},
            "strategy": {"name": "fedavg", "clients_per_round": round(participation * nodes)},
            "evaluation": {"every": rounds},
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="digits MLP, 20 nodes, full")
    parser.add_argument("--nodes", type=int, nargs="+", default=[20, 100, 500])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--executor", default="auto")
    args = parser.parse_args(argv)
    from throughput import machine

    print(machine())
    cells = (
        [("digits MLP", 20, 1.0)]
        if args.quick
        else [(w, n, p) for w in WORKLOADS for n in args.nodes for p in (1.0, 0.1)]
    )
    # One-time process warm-up (imports, first allocations), which `flwr run` pays in its own
    # processes on every run but a study of many runs on the virtual grid pays once.
    run_experiment(config("digits MLP", 4, 1.0, 1))
    print("| workload | nodes | participation | Flower Ray (s) | virtual grid (s) | executor "
          "| ratio | accuracy Ray / virtual |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for workload, nodes, part in cells:
        cfg = dataclasses.replace(
            config(workload, nodes, part, args.rounds), executor=args.executor
        )
        with tempfile.TemporaryDirectory() as tmp:
            client.clear_workspaces()  # each virtual run loads its data, as Ray does
            t0 = time.perf_counter()
            virtual = run_experiment(cfg, Path(tmp) / "virtual")
            t_virtual = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = run_on_flower(cfg, Path(tmp) / "ray")
            t_ray = time.perf_counter() - t0
            ray_acc = json.loads((out / "summary.json").read_text())["final_accuracy"]
        print(
            f"| {workload} | {nodes} | {part:.0%} | {t_ray:.1f} | {t_virtual:.1f} | "
            f"{virtual.grid.executor.name} | {t_ray / t_virtual:.1f}× | "  # type: ignore[attr-defined]
            f"{ray_acc:.4f} / {virtual.final_accuracy:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
