"""Aggregation cost of robust aggregators, measured side by side in one run.

For n client updates of dimension d (float32 rows, 20% of them bit-flipped ×(−5)), times one
aggregation of: mean, coordinate-wise median, Krum, geometric median (smoothed Weiszfeld,
tol 1e-6, ≤ 100 iterations) and BGMD (β = 0.05 / 0.1 / 0.2, same solver settings, memory on),
and the peak memory each needs (measured in a fresh subprocess: max RSS above the process's
baseline). Prints the BGMD/GM speed-up at each size.

Usage: python benchmarks/aggregators.py [--quick]   (quick: n = 32, d = 10^6 only)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

METHODS = ("mean", "median", "krum", "gm", "bgmd-0.05", "bgmd-0.1", "bgmd-0.2")


def updates(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Heavy-tailed honest updates (a few large coordinates, like DNN gradients), 20% flipped."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(d, generator=gen) ** 4
    G = torch.randn(n, d, generator=gen) * scale
    G[: n // 5] *= -5.0
    return G


def krum(G: torch.Tensor, f: int) -> torch.Tensor:
    """Krum (Blanchard et al. 2017): the row with the smallest sum of squared distances to its
    n − f − 2 nearest neighbours."""
    dist = torch.cdist(G, G) ** 2
    k = max(1, G.shape[0] - f - 2)
    scores = dist.sort(dim=1).values[:, 1 : k + 1].sum(dim=1)
    return G[int(scores.argmin())]


def aggregate(method: str, G: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """One aggregation with `method`."""
    from fl.robust.bgmd import block_geometric_median

    from fl.robust.geomedian import geometric_median

    if method == "mean":
        return G.mean(dim=0)
    if method == "median":
        return G.median(dim=0).values
    if method == "krum":
        return krum(G, G.shape[0] // 5)
    if method == "gm":
        return geometric_median(G, tol=1e-6, max_iter=100).median
    beta = float(method.split("-")[1])
    return block_geometric_median(G, memory, beta, gm_kwargs={"tol": 1e-6, "max_iter": 100}).step


def time_one(method: str, n: int, d: int, reps: int) -> float:
    """Median seconds of `reps` aggregations (after one warm-up)."""
    G = updates(n, d)
    memory = torch.zeros(d)
    aggregate(method, G, memory)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        aggregate(method, G, memory)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory_mib(method: str, n: int, d: int) -> float:
    """Extra peak RSS (MiB) of one aggregation, measured in a fresh process."""
    code = (
        f"import resource, torch, sys; sys.path.insert(0, {os.getcwd()!r});"
        "from benchmarks.aggregators import updates, aggregate;"
        f"G = updates({n}, {d}); m = torch.zeros({d});"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"aggregate({method!r}, G, m);"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=str, default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [(32, 10**6)] if args.quick else [(n, d) for d in (10**5, 10**6) for n in (10, 32, 100)]
    print(
        f"torch {torch.__version__}, 1 thread; {os.cpu_count()} cores; times: median of {args.reps}"
    )
    print(f"{'n':>4} {'d':>8} " + " ".join(f"{m:>18}" for m in METHODS) + "   GM / BGMD-0.1")
    rows = []
    for n, d in sizes:
        cells = {}
        for m in METHODS:
            cells[m] = (time_one(m, n, d, args.reps), peak_memory_mib(m, n, d))
        ratio = cells["gm"][0] / cells["bgmd-0.1"][0]
        print(
            f"{n:4d} {d:8d} "
            + " ".join(f"{1e3 * t:9.1f}ms {mem:5.0f}MiB" for t, mem in cells.values())
            + f"   {ratio:5.2f}x"
        )
        rows.append(
            {
                "n": n,
                "d": d,
                "ratio_gm_over_bgmd01": ratio,
                **{m: {"s": t, "mib": mem} for m, (t, mem) in cells.items()},
            }
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
