"""The client executors side by side: the same experiment with each, in one run.

For each workload, runs the experiment with the sequential, batched and process-pool executors
(interleaved, best of `--repeats`) and prints the wall time, the time spent running clients,
the speed-up over sequential, which executor "auto" picks, and how far each final model is from
the sequential one (batched: float tolerance; processes: exactly 0).

Usage: python benchmarks/executors.py [--repeats 2] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import torch

from fl import client
from fl.executors import choose_executor
from fl.experiment import run_experiment
from fl.experiment.config import load_dict

WORKLOADS: dict[str, dict[str, Any]] = {
    "digits MLP, 50 nodes, 1 epoch": {
        "num_nodes": 50,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [64]},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.1},
    },
    "digits MLP, 20 nodes, 5 epochs": {
        "num_nodes": 20,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [64]},
        "train": {"epochs": 5, "batch_size": 16, "lr": 0.1},
    },
    "quickstart: MNIST MLP, Dirichlet, 10 of 50": {
        "num_nodes": 50,
        "data": {"name": "mnist", "partition": "dirichlet", "alpha": 0.3, "max_samples": 15000},
        "model": {"name": "mlp", "hidden": [64]},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "strategy": {"name": "fedavg", "clients_per_round": 10},
    },
    "digits CNN, 20 nodes": {
        "num_nodes": 20,
        "data": {"name": "digits"},
        "model": {"name": "cnn", "cnn_channels": [8, 16]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.1},
    },
    "MNIST CNN, 20 nodes": {
        "num_nodes": 20,
        "data": {"name": "mnist", "max_samples": 6000},
        "model": {"name": "cnn", "cnn_channels": [8, 16]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.1},
    },
}


def config(workload: str, rounds: int) -> Any:
    return load_dict(
        {
            "name": "executors",
            "seed": 0,
            "rounds": rounds,
            "strategy": {"name": "fedavg"},
            "evaluation": {"central": False},
            **WORKLOADS[workload],
        }
    )


def delta(finals: dict[str, dict[str, torch.Tensor]], executor: str) -> float:
    """Largest absolute difference between `executor`'s final model and the sequential one."""
    ref = finals["sequential"]
    return max(float((finals[executor][k] - ref[k]).abs().max()) for k in ref)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the first two workloads only")
    args = parser.parse_args(argv)
    from throughput import machine

    torch.set_num_threads(1)
    print(machine())
    print("| workload | auto picks | sequential (s) | batched (s) | processes (s) "
          "| batched ÷ seq | processes ÷ seq | max abs Δ model, batched / processes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    names = list(WORKLOADS)[:2] if args.quick else list(WORKLOADS)
    for workload in names:
        cfg = config(workload, args.rounds)
        ws = client.workspace(cfg.to_run_config())
        run_experiment(dataclasses.replace(cfg, rounds=1, executor="processes"))  # warm-up
        best: dict[str, float] = {}
        finals: dict[str, dict[str, torch.Tensor]] = {}
        for _ in range(args.repeats):
            for ex in ("sequential", "batched", "processes"):
                t0 = time.perf_counter()
                r = run_experiment(dataclasses.replace(cfg, executor=ex))
                best[ex] = min(best.get(ex, float("inf")), time.perf_counter() - t0)
                finals[ex] = r.arrays.to_torch_state_dict()

        seq = best["sequential"]
        print(
            f"| {workload} | {choose_executor(cfg, ws)} | {seq:.2f} | {best['batched']:.2f} | "
            f"{best['processes']:.2f} | {seq / best['batched']:.2f}× | "
            f"{seq / best['processes']:.2f}× | {delta(finals, 'batched'):.1e} / "
            f"{delta(finals, 'processes'):.0e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
