"""Run every benchmark, one after another, and write their tables to docs/benchmarks.md and a
figure of the Flower comparison to docs/benchmark_vs_flower.png (what the README quotes).

Each benchmark runs in its own process and measures its ratios side by side within that run;
nothing else should run on the machine meanwhile. About 20 minutes on 2 cores (most of it
Flower's Ray simulation); `--quick` runs the short variant of each (about 3 minutes).

Usage: python benchmarks/all.py [--quick]     (make bench)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"

FULL = [
    ["throughput.py"],
    ["executors.py"],
    ["vs_bare_loop.py"],
    ["vs_bare_loop.py", "--nodes", "20", "--epochs", "5"],
    ["vs_bare_loop.py", "--data", "mnist", "--epochs", "2", "--batch-size", "32"],
    ["scale.py"],
    ["aggregators.py"],
    ["vs_flower.py"],
]
QUICK = [
    ["throughput.py", "--rounds", "1"],
    ["executors.py", "--quick", "--repeats", "1"],
    ["vs_bare_loop.py", "--repeats", "1"],
    ["scale.py", "--sizes", "10", "1000", "--rounds", "2"],
    ["aggregators.py", "--quick", "--no-memory"],
    ["vs_flower.py", "--quick"],
]


def run(args: list[str]) -> str:
    """Run one benchmark script; its stdout (it fails loudly if the script fails)."""
    out = subprocess.run(
        [sys.executable, str(HERE / args[0]), *args[1:]],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def plot_vs_flower(table: str, path: Path) -> None:
    """Bar chart of the Ray ÷ virtual-grid wall-time ratios in vs_flower's table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ") and re.search(r"\d+(\.\d+)?×", line)
    ]
    if not rows:
        return
    labels = [f"{r[0]}\n{r[1]} nodes, {r[2]}" for r in rows]
    ratios = [float(r[6].rstrip("×")) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    ax.bar(range(len(rows)), ratios, color="tab:blue")
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("Flower Ray wall time ÷ virtual grid wall time")
    for target, name in ((20, "MLP target 20×"), (5, "CNN target 5×")):
        ax.axhline(target, ls="--", lw=0.8, color="gray")
        ax.text(len(rows) - 0.5, target * 1.05, name, ha="right", fontsize=7, color="gray")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    DOCS.mkdir(exist_ok=True)
    sections = [
        "# Benchmarks",
        "",
        "Regenerate with `make bench` (= `python benchmarks/all.py`).",
        "",
    ]
    for cmd in QUICK if args.quick else FULL:
        t0 = time.perf_counter()
        text = run(cmd)
        print(f"python benchmarks/{' '.join(cmd)}  ({time.perf_counter() - t0:.0f} s)\n{text}")
        sections += [f"## `python benchmarks/{' '.join(cmd)}`", "", text.strip(), ""]
        (DOCS / "benchmarks.md").write_text("\n".join(sections))  # as it goes: a long run
        if cmd[0] == "vs_flower.py":
            plot_vs_flower(text, DOCS / "benchmark_vs_flower.png")
    print(f"wrote {DOCS / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
