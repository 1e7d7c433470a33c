"""How cost grows with the population, up to a million nodes.

Each size runs in its own process (so its peak RSS is its own): FedAvg with an MLP (hidden 64),
batch 16, a fixed number of clients per round (``--selected``, default 100) or a fraction of the
population (``--participation``). Each client does ``--steps`` mini-batch steps (default 1, what
a 6-image MNIST node does in one epoch; 0: one epoch, which on Synthetic's heavy-tailed client
sizes makes local training, not the simulator, the cost of a round). Prints set-up time (config
to first round: devices, data, grid), the first round (which also pays one-off lazy imports),
wall time per later round and the peak resident memory.

Datasets (``--dataset``):

- ``synthetic-lazy`` (default): FedProx's Synthetic(1, 1) with ``synthetic_lazy = true`` and the
  ``natural`` partition: one generator client per node, each generated on first touch, so a
  million-node population costs O(nodes) small arrays (sizes, priors, partition offsets).
- ``mnist``: MNIST with the ``iid`` partition, as before; at most 60 000 nodes (one image each).

The population is ``uniform`` and always on, as the defaults; a million ``DeviceProfile`` objects
are never built (``fl.sim.fleet.DevicePopulation``: arrays, a profile per contacted node).

Usage::

    python benchmarks/scale.py  # 10 000, 100 000 and 1 000 000 nodes, 100 per round
    python benchmarks/scale.py --nodes 1000000 --rounds 3
    python benchmarks/scale.py --dataset mnist --nodes 10 100 1000 10000 --participation 0.01
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

DATASETS = {
    "synthetic-lazy": {"name": "synthetic", "partition": "natural", "synthetic_lazy": True},
    "mnist": {"name": "mnist"},
}


def one(nodes: int, rounds: int, selected: int, dataset: str, steps: int) -> dict[str, float]:
    """Run one size in this process; return set-up and per-round wall time and peak RSS."""
    t0 = time.perf_counter()
    import torch

    from fl.experiment import run_experiment
    from fl.experiment.config import load_dict

    torch.set_num_threads(1)
    cfg = load_dict(
        {
            "name": "scale",
            "seed": 0,
            "num_nodes": nodes,
            "rounds": rounds,
            "data": DATASETS[dataset],
            "model": {"name": "mlp", "hidden": [64]},
            "train": {"epochs": 1, "steps": steps, "batch_size": 16, "lr": 0.05},
            "strategy": {"name": "fedavg", "clients_per_round": selected},
            "evaluation": {"central": False},
            "executor": "sequential",
        }
    )
    t1 = time.perf_counter()
    result = run_experiment(cfg)
    total = time.perf_counter() - t1
    walls = [float(r["wall_time"]) for r in result.rows]  # cumulative, from the loop's start
    rounds_wall = walls[-1]  # the loop only, set-up excluded
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Round 1 also pays one-off lazy imports (torch's optimiser pulls in torch._dynamo, ~5 s):
    # the steady per-round time leaves it out.
    steady = (walls[-1] - walls[1]) / (rounds - 1) if rounds >= 2 else rounds_wall
    return {
        "nodes": nodes,
        "selected": selected,
        "import_s": t1 - t0,
        "setup_s": total - rounds_wall,
        "first_round_s": walls[1] if len(walls) > 1 else rounds_wall,
        "per_round_s": steady,
        "peak_rss_mib": rss_kb / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--nodes", "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--selected", type=int, default=100, help="clients per round")
    parser.add_argument(
        "--participation", type=float, default=None, help="clients per round as a fraction"
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic-lazy")
    parser.add_argument(
        "--steps", type=int, default=1, help="mini-batch steps per client and round (0: 1 epoch)"
    )
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.rounds, args.selected, args.dataset, args.steps)))
        return
    from throughput import machine

    print(machine())
    print(f"dataset {args.dataset}, {args.rounds} rounds, steps {args.steps}")
    print("| nodes | selected per round | set-up (s) | first round (s) | wall per round (s) "
          "| per selected node (ms) | peak RSS (MiB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n in args.nodes:
        k = args.selected
        if args.participation is not None:
            k = max(1, math.ceil(args.participation * n))
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--rounds", str(args.rounds),
             "--selected", str(k), "--dataset", args.dataset, "--steps", str(args.steps)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {n} | {r['selected']} | {r['setup_s']:.2f} | {r['first_round_s']:.2f} | "
            f"{r['per_round_s']:.3f} | "
            f"{1e3 * r['per_round_s'] / r['selected']:.1f} | {r['peak_rss_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
