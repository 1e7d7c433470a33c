"""Aggregation cost of robust aggregators, measured side by side in one run.

For n client updates of dimension d (float32 rows, 20% of them bit-flipped ×(−5)), times one
aggregation of: mean, coordinate-wise median, Krum, geometric median (smoothed Weiszfeld,
tol 1e-6, ≤ 100 iterations) and BGMD (β = 0.05 / 0.1 / 0.2, same solver settings, memory on),
each GM with the two solvers (`gram`: one n×n Gram matrix, then O(n²) per iteration — the
default; `gemv`: O(nd) per iteration, the classic form the paper's cost model assumes), and the
peak memory each needs (measured in a fresh subprocess: max RSS above the baseline). Prints the
GM/BGMD(β=0.1) time ratio per solver. `--fixed-iters N` forces exactly N solver iterations
(tolerance 0), the paper's "fixed GM iteration budget" comparison.

Usage: python benchmarks/aggregators.py [--quick]   (quick: n = 32, d = 10^6 only)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent  # so `benchmarks.aggregators` imports anywhere

METHODS = (
    "mean",
    "median",
    "krum",
    "gm/gram",
    "gm/gemv",
    "bgmd-0.05/gram",
    "bgmd-0.1/gram",
    "bgmd-0.2/gram",
    "bgmd-0.1/gemv",
)
SOLVER_KW: dict[str, object] = {"tol": 1e-6, "max_iter": 100}


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
    name, _, solver = method.partition("/")
    kw = {**SOLVER_KW, "solver": solver}
    if name == "gm":
        return geometric_median(G, **kw).median  # type: ignore[arg-type]
    beta = float(name.split("-")[1])
    return block_geometric_median(G, memory, beta, gm_kwargs=kw).step


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
    """Extra peak RSS (MiB) of one aggregation above the memory of its inputs, measured in a
    fresh process. On Linux the peak is reset once the inputs exist (`clear_refs` 5), so the
    temporaries of generating them do not hide the aggregation's own peak; elsewhere the
    process-lifetime peak is used, which can under-report."""
    code = (
        f"import resource, torch, sys; sys.path.insert(0, {str(REPO)!r});"
        "from benchmarks.aggregators import updates, aggregate, rss_peak_kib, reset_peak;"
        f"G = updates({n}, {d}); m = torch.zeros({d});"
        "reset_peak(); base = rss_peak_kib();"
        f"aggregate({method!r}, G, m);"
        "print((rss_peak_kib() - base) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def reset_peak() -> None:
    """Reset this process's peak RSS to its current RSS (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def rss_peak_kib() -> float:
    """This process's peak RSS in KiB (VmHWM on Linux, else ru_maxrss)."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=str, default="")
    parser.add_argument("--fixed-iters", type=int, default=0)
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the peak-memory subprocesses"
    )
    args = parser.parse_args()
    if args.fixed_iters:
        SOLVER_KW.update({"tol": 1e-300, "max_iter": args.fixed_iters})
    torch.set_num_threads(1)
    sizes = [(32, 10**6)] if args.quick else [(n, d) for d in (10**5, 10**6) for n in (10, 32, 100)]
    print(
        f"torch {torch.__version__}, 1 thread; {os.cpu_count()} cores; times: median of {args.reps}"
    )
    budget = (
        f"exactly {args.fixed_iters} iterations"
        if args.fixed_iters
        else "tol 1e-6, ≤ 100 iterations"
    )
    print(f"GM solver: {budget}; cells: time (ms) / extra peak RSS (MiB)")
    print(f"{'n':>4} {'d':>8} " + " ".join(f"{m:>15}" for m in METHODS) + "  GM/BGMD gram, gemv")
    rows = []
    for n, d in sizes:
        cells = {}
        for m in METHODS:
            mem = 0.0 if args.no_memory else peak_memory_mib(m, n, d)
            cells[m] = (time_one(m, n, d, args.reps), mem)
        ratio = cells["gm/gram"][0] / cells["bgmd-0.1/gram"][0]
        ratio_gemv = cells["gm/gemv"][0] / cells["bgmd-0.1/gemv"][0]
        print(
            f"{n:4d} {d:8d} "
            + " ".join(f"{1e3 * t:8.1f}/{mem:<6.0f}" for t, mem in cells.values())
            + f"  {ratio:5.2f}x, {ratio_gemv:5.2f}x"
        )
        rows.append(
            {
                "n": n,
                "d": d,
                "ratio_gm_over_bgmd01": ratio,
                "ratio_gm_over_bgmd01_gemv": ratio_gemv,
                **{m: {"s": t, "mib": mem} for m, (t, mem) in cells.items()},
            }
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
