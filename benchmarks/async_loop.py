"""The asynchronous loop with and without lazy execution, on FLeet's straggler config.

AdaSGD at concurrency 10 on the straggler scenario (`simulations/fleet/straggler.toml`, MNIST,
MLP, one SGD step per update), for `--budget` virtual seconds, side by side in one process:
every task run at push time (`lazy = false`, sequential: the reference), and lazily with the
sequential executor, the process pool and the batched executor. Prints the wall time of each
run, its ratio to the reference, the mean batch of deferred tasks, and how far its final model
is from the reference's (0 for sequential and the pool: bit-identical).

Usage: python benchmarks/async_loop.py [--budget 60] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fl.experiment import run_experiment
from fl.experiment.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "simulations/fleet/straggler.toml"
VARIANTS = {
    "eager, sequential (reference)": {"lazy": False, "executor": "sequential"},
    "lazy, sequential": {"lazy": True, "executor": "sequential"},
    "lazy, process pool (2 workers)": {"lazy": True, "executor": "processes", "workers": 2},
    "lazy, batched": {"lazy": True, "executor": "batched"},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=60.0, help="virtual seconds")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(CONFIG, [f"time_budget_s={args.budget}", "evaluation.every=100000"])
    run_experiment(cfg.replace(rounds=20), None)  # warm-up: data loaded, imports done
    best: dict[str, float] = {}
    finals: dict[str, dict[str, torch.Tensor]] = {}
    batches: dict[str, float] = {}
    updates = 0
    for _ in range(args.repeats):
        for name, changes in VARIANTS.items():
            t0 = time.perf_counter()
            res = run_experiment(cfg.replace(**changes), None)
            wall = time.perf_counter() - t0
            best[name] = min(wall, best.get(name, wall))
            finals[name] = res.arrays.to_torch_state_dict()
            got = res.grid.deferred_batches  # type: ignore[attr-defined]
            batches[name] = sum(got) / len(got) if got else 1.0
            updates = len(res.rows) - 1
    ref_name = next(iter(VARIANTS))
    ref = finals[ref_name]
    print(f"FLeet straggler config, AdaSGD, concurrency 10, {args.budget:g} virtual s "
          f"({updates} model updates); best of {args.repeats}\n")  # fmt: skip
    print("| execution | wall (s) | vs reference | mean deferred batch | max |Δ| final model |")
    print("|---|---|---|---|---|")
    for name in VARIANTS:
        diff = max(float((finals[name][k] - ref[k]).abs().max()) for k in ref)
        ratio = best[ref_name] / best[name]
        print(f"| {name} | {best[name]:.2f} | {ratio:.2f}× | {batches[name]:.1f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
