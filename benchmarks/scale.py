"""How cost grows with the population: 10, 100, 1 000 and 10 000 nodes at 1% participation.

Each size runs in its own process (so its peak RSS is its own): FedAvg on MNIST with an MLP,
ceil(1% of nodes) clients per round, one local epoch. Prints wall time per round and the peak
resident memory; a 10 000-node population holds one model per process and, per node, only data
indices, a device profile and (once contacted) a small Context.

Usage: python benchmarks/scale.py [--sizes 10 100 1000 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time


def one(nodes: int, rounds: int) -> dict[str, float]:
    """Run one size in this process; return wall per round (after set-up) and peak RSS."""
    import torch

    from fl.experiment import run_experiment
    from fl.experiment.config import load_dict

    torch.set_num_threads(1)
    k = max(1, math.ceil(0.01 * nodes))
    cfg = load_dict(
        {
            "name": "scale",
            "seed": 0,
            "num_nodes": nodes,
            "rounds": rounds,
            "data": {"name": "mnist"},
            "model": {"name": "mlp", "hidden": [64]},
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.05},
            "strategy": {"name": "fedavg", "clients_per_round": k},
            "evaluation": {"central": False},
        }
    )
    t0 = time.perf_counter()
    result = run_experiment(cfg)
    total = time.perf_counter() - t0
    rounds_wall = result.rows[-1]["wall_time"]  # the loop only, set-up excluded
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "nodes": nodes,
        "selected": k,
        "setup_s": total - rounds_wall,
        "per_round_s": rounds_wall / rounds,
        "peak_rss_mib": rss_kb / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.rounds)))
        return
    from throughput import machine

    print(machine())
    print("| nodes | selected per round | set-up (s) | wall per round (s) | per selected node (ms) "
          "| peak RSS (MiB) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--rounds", str(args.rounds)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {n} | {r['selected']} | {r['setup_s']:.1f} | {r['per_round_s']:.3f} | "
            f"{1e3 * r['per_round_s'] / r['selected']:.1f} | {r['peak_rss_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
