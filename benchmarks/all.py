"""Run every benchmark, one after another, and write their tables to docs/benchmarks.md and a
figure of the Flower comparison to docs/benchmark_vs_flower.png (what the README quotes).

Each benchmark runs in its own process and measures its ratios side by side within that run;
nothing else should run on the machine meanwhile. About 20 minutes on 2 cores (most of it
Flower's Ray simulation); `--quick` runs the short variant of each (about 3 minutes).
vs_pfl.py also needs pfl-research: `make bench` installs it (the bench extra) into .venv/pfl.

Usage: python benchmarks/all.py [--quick] [--only SCRIPT ...]     (make bench)

`--only vs_pfl.py scale.py` reruns those scripts' entries of the full list and replaces only
their sections of docs/benchmarks.md, keeping the others as they were written; an entry may
also be named by its whole command (`--only "executors.py --ray"` matches the entry that
starts with it).
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
    ["executors.py", "--ray", "--table", "docs/ray_executor_table.md"],
    ["vs_bare_loop.py"],
    ["vs_bare_loop.py", "--nodes", "20", "--epochs", "5"],
    ["vs_bare_loop.py", "--data", "mnist", "--epochs", "2", "--batch-size", "32"],
    ["scale.py"],
    ["aggregators.py"],
    ["vs_flower.py"],
    ["vs_pfl.py"],
    ["startup.py"],
    ["async_loop.py"],
]
QUICK = [
    ["throughput.py", "--rounds", "1"],
    ["executors.py", "--quick", "--repeats", "1"],
    ["executors.py", "--ray", "--quick"],
    ["vs_bare_loop.py", "--repeats", "1"],
    ["scale.py", "--sizes", "10", "1000", "--rounds", "2"],
    ["aggregators.py", "--quick", "--no-memory"],
    ["vs_flower.py", "--quick"],
    ["vs_pfl.py", "--quick"],
    ["startup.py", "--repeats", "1"],
    ["async_loop.py", "--budget", "15"],
]


def _named(cmd: list[str], names: list[str]) -> bool:
    """Whether `--only NAMES` selects `cmd`: a name is its script or the start of its command."""
    line = " ".join(cmd)
    return any(line == n or line.startswith(n + " ") for n in names)


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
    ax.set_ylabel("Ray ÷ virtual grid, wall time")
    for target, name, style in ((20, "MLP target 20×", "--"), (5, "CNN target 5×", ":")):
        ax.axhline(target, ls=style, lw=0.9, color="gray", label=name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", default=None, metavar="SCRIPT")
    args = parser.parse_args(argv)
    DOCS.mkdir(exist_ok=True)
    cmds = QUICK if args.quick else FULL
    done: dict[str, str] = {}  # section title → its body
    if args.only:
        unknown = {o for o in args.only if not any(_named(c, [o]) for c in cmds)}
        if unknown:
            raise SystemExit(f"--only: no benchmark named {', '.join(sorted(unknown))}")
        done = read_sections(DOCS / "benchmarks.md")
    for cmd in cmds:
        title = f"## `python benchmarks/{' '.join(cmd)}`"
        if args.only and not _named(cmd, args.only):
            continue
        t0 = time.perf_counter()
        text = run(cmd)
        print(f"python benchmarks/{' '.join(cmd)}  ({time.perf_counter() - t0:.0f} s)\n{text}")
        done[title] = text.strip()
        write_sections(DOCS / "benchmarks.md", cmds, done)  # as it goes: a long run
        if cmd[0] == "vs_flower.py":
            plot_vs_flower(text, DOCS / "benchmark_vs_flower.png")
    print(f"wrote {DOCS / 'benchmarks.md'}")


def read_sections(path: Path) -> dict[str, str]:
    """The sections of an earlier benchmarks.md, by their `## ` title."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    title = None
    for line in path.read_text().splitlines():
        if line.startswith("## `python benchmarks/"):
            title = line
            out[title] = ""
        elif title is not None:
            out[title] += line + "\n"
    return {k: v.strip() for k, v in out.items()}


def write_sections(path: Path, cmds: list[list[str]], done: dict[str, str]) -> None:
    """benchmarks.md: the sections of `cmds` that have output, in the order of `cmds`."""
    lines = ["# Benchmarks", "", "Regenerate with `make bench` (= `python benchmarks/all.py`).", ""]
    for cmd in cmds:
        title = f"## `python benchmarks/{' '.join(cmd)}`"
        if title in done:
            lines += [title, "", done[title], ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
