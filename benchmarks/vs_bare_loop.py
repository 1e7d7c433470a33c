"""Per-client-update cost of the simulator against a bare torch loop doing the same arithmetic.

The bare loop is the practical floor: for the same (node, round) tasks it loads the global
weights into one model, runs the same local SGD (`fl.training.train_local`, same seeds and
batches) and averages the resulting weights, with no Flower messages, no grid, no strategy and
no time model. Both are timed side by side in one run; the ratio is the simulator's overhead.

Usage: python benchmarks/vs_bare_loop.py [--nodes 50] [--rounds 5] [--epochs 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from fl import client
from fl.config import load_dict
from fl.experiment import run_experiment
from fl.training import derive_seed, train_local


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from throughput import machine

    torch.set_num_threads(1)
    cfg = load_dict(
        {
            "name": "bare",
            "seed": 0,
            "num_nodes": args.nodes,
            "rounds": args.rounds,
            "data": {"name": "digits"},
            "model": {"name": "mlp", "hidden": [64]},
            "train": {"epochs": args.epochs, "batch_size": 16, "lr": 0.1},
            "evaluation": {"central": False},
        }
    )
    ws = client.workspace(cfg.to_run_config())
    hp = client.local_training(cfg, None)
    updates = args.nodes * args.rounds
    print(machine())
    print(f"FedAvg, digits MLP, {args.nodes} nodes x {args.rounds} rounds = {updates} updates, "
          f"{args.epochs} local epoch(s); best of {args.repeats}")  # fmt: skip

    def simulator() -> float:
        t0 = time.perf_counter()
        run_experiment(cfg)
        return time.perf_counter() - t0

    def bare() -> float:
        t0 = time.perf_counter()
        model = ws.model
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        for rnd in range(1, args.rounds + 1):
            total: dict[str, torch.Tensor] = {}
            n_sum = 0
            for node in range(args.nodes):
                model.load_state_dict(weights)
                x, y, _, _ = ws.data.node(node)
                train_local(model, x, y, hp, derive_seed(cfg.seed, node, rnd, rnd - 1), 10)
                for k, v in model.state_dict().items():
                    total[k] = total.get(k, 0) + v * len(y)
                n_sum += len(y)
            weights = {k: v / n_sum for k, v in total.items()}
        return time.perf_counter() - t0

    sim = min(simulator() for _ in range(args.repeats))
    floor = min(bare() for _ in range(args.repeats))
    print("| path | wall (s) | per update (ms) |")
    print("|---|---|---|")
    print(f"| simulator (virtual grid, FedAvg) | {sim:.3f} | {1e3 * sim / updates:.2f} |")
    print(f"| bare torch loop | {floor:.3f} | {1e3 * floor / updates:.2f} |")
    print(f"overhead: {sim / floor:.2f}x")


if __name__ == "__main__":
    main()
