"""Start-up: the wall time and peak memory of a short `fl-sim run`, from interpreter start.

The workload is a 3-round, 10-node FedAvg run on digits (the defaults otherwise), the kind of
run a user starts to try a config. Each repetition is a fresh process; the floor beside it is a
process that only imports torch and flwr, which every run pays. `--no-plots` shows what
drawing the two accuracy plots costs (matplotlib's import and rendering).

Usage: python benchmarks/startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """name = "small"
num_nodes = 10
rounds = 3
[data]
name = "digits"
"""


def timed(cmd: list[str]) -> float:
    """Wall seconds of one child process."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ,
                   "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "small.toml"
        cfg.write_text(CONFIG)
        cases = {
            "import torch, flwr (floor)": [py, "-c", "import torch, flwr.serverapp"],
            "fl-sim run --no-plots": [py, "-m", "fl.cli", "run", str(cfg), "--quiet",
                                      "--no-plots", "--force", "--out", f"{tmp}/a"],
            "fl-sim run": [py, "-m", "fl.cli", "run", str(cfg), "--quiet", "--force",
                           "--out", f"{tmp}/b"],
        }  # fmt: skip
        walls: dict[str, list[float]] = {k: [] for k in cases}
        peaks: dict[str, float] = {}
        for _ in range(args.repeats):  # interleaved, so load changes hit every case alike
            for name, cmd in cases.items():
                walls[name].append(timed(cmd))
        for name, cmd in cases.items():  # peak RSS: one more run each, measured alone
            peaks[name] = _peak_of(cmd)
    print("3-round, 10-node digits FedAvg (`fl-sim run`), fresh process each; median of "
          f"{args.repeats}\n")  # fmt: skip
    print("| process | wall (s) | peak RSS (MiB) |")
    print("|---|---|---|")
    for name in cases:
        print(f"| {name} | {statistics.median(walls[name]):.2f} | {peaks[name]:.0f} |")


def _peak_of(cmd: list[str]) -> float:
    """Peak RSS (MiB) of `cmd`, measured by a fresh parent that runs only it."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return int(out.stdout.strip()) / 1024


if __name__ == "__main__":
    main()
