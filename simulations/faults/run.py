"""Fault injection: what a run does when clients crash, drop out, or send NaN, truncated or
malformed replies, and when the run itself is killed and resumed.

For FedAvg (synchronous) and AdaSGD (asynchronous) on MNIST (an MLP, 20 nodes), each fault is
injected on its own and then all together; then the all-faults run is killed with SIGKILL at
three random moments and resumed from its last checkpoint. For every run: rounds (or model
updates) completed out of those asked for, replies failed / rejected, final accuracy, and
whether the resumed run equals the uninterrupted one bit for bit.

Writes results/faults[-quick]/<strategy>/<fault>/ (each run's folder), summary.csv (one row
per table line) and table.md. `--report` rewrites table.md (and reprints it) from summary.csv
without rerunning. The script draws no figure: the table is its result.

Usage: python simulations/faults/run.py [--quick] [--out DIR] [--workers N] [--ray] [--resume]
       [--report]

Each finished run is recorded in OUT/sweep_done.jsonl: after an interruption, a rerun with
--resume skips the finished runs (without it, everything reruns); --ray runs each run as a Ray
task.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl.experiment import resume_experiment, run_experiment
from fl.experiment.config import ExperimentConfig, load_dict
from fl.experiment.sweep import add_sweep_options, run_jobs, sweep_options
from fl.experiment.tables import read_csv, write_csv
from fl.loops.checkpoint import CHECKPOINT_FILE, load
from fl.schema import to_toml

FAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "crash 20%": {"faults": {"crash_prob": 0.2}},
    "dropout (on 5 min / off 5 min)": {
        "devices": {"availability": "onoff", "mean_online_s": 300.0, "mean_offline_s": 300.0}
    },
    "device failure 10%": {"devices": {"failure_prob": 0.1}},
    "NaN replies 10%": {"faults": {"nan_prob": 0.1}},
    "truncated payloads 10%": {"faults": {"corrupt_prob": 0.1}},
    "bad metrics 10%": {"faults": {"bad_metrics_prob": 0.1}},
    "all of the above": {
        "faults": {"crash_prob": 0.2, "nan_prob": 0.1, "corrupt_prob": 0.1,
                   "bad_metrics_prob": 0.1},
        "devices": {"availability": "onoff", "mean_online_s": 300.0, "mean_offline_s": 300.0,
                    "failure_prob": 0.1},
    },
}  # fmt: skip
STRATEGIES = {
    "fedavg": {"name": "fedavg", "clients_per_round": 10},
    "adasgd": {"name": "adasgd", "clients_per_round": 10},
}


def config(strategy: str, fault: str, quick: bool) -> ExperimentConfig:
    """The run of one (strategy, fault) cell."""
    rounds = 20 if strategy == "fedavg" else 200
    tree: dict[str, Any] = {
        "name": "faults",
        "seed": 0,
        "num_nodes": 20,
        "rounds": rounds // 2 if quick else rounds,
        "round_timeout_s": 600.0,
        "checkpoint_every": 1,
        "data": {"name": "digits" if quick else "mnist", "partition": "dirichlet", "alpha": 1.0,
                 "max_samples": None if quick else 10000},
        "model": {"name": "mlp", "hidden": [64]},
        "devices": {"kind": "tiers", "flops_per_s": 5e6, "compute_jitter": 0.2},
        "train": {"steps": 5, "batch_size": 32, "lr": 0.05},
        "strategy": STRATEGIES[strategy],
        "evaluation": {"every": 5 if strategy == "fedavg" else 50},
    }  # fmt: skip
    for section, values in FAULTS[fault].items():
        tree[section] = {**tree.get(section, {}), **values}
    return load_dict(tree)


def summarise(cfg: ExperimentConfig, result: Any) -> dict[str, Any]:
    """One table row from a finished run."""
    rows = result.rows[1:]
    return {
        "completed": int(result.rows[-1]["round"]),
        "asked": cfg.rounds,
        "failed": sum(int(r.get("num_failed", 0)) for r in rows),
        "rejected": sum(int(r.get("num_rejected", 0)) for r in rows),
        "not_aggregated": sum(1 for r in rows if r.get("aggregated") is False),
        "accuracy": result.final_accuracy,
        "stop": result.stop_reason,
    }


def kill_and_resume(cfg: ExperimentConfig, out: Path, reference: Path, seed: int) -> str:
    """SIGKILL the run at three random rounds (resuming each time); compare with `reference`."""
    rng = np.random.default_rng(seed)
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a previous one's checkpoint
    cfg_file = out.parent / f"{out.name}.toml"
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(to_toml(cfg.to_dict()))
    targets = sorted(int(t) for t in rng.choice(np.arange(1, cfg.rounds), 3, replace=False))
    killed = []
    for target in targets:
        cmd = [sys.executable, "-m", "fl.cli", "run", str(cfg_file), "--out", str(out), "--quiet"]
        if (out / CHECKPOINT_FILE).exists():
            cmd = [sys.executable, "-m", "fl.cli", "resume", str(out), "--quiet"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reached = load(out / CHECKPOINT_FILE).loop.next_round
            except (FileNotFoundError, ValueError, EOFError):
                reached = 0
            if reached > target:
                break
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            at = load(out / CHECKPOINT_FILE).loop.next_round
            killed.append(str(at) if at <= cfg.rounds else "after the last round")
    resume_experiment(out)
    a, b = torch.load(out / "model.pt"), torch.load(reference / "model.pt")
    same_model = all(torch.equal(a[k], b[k]) for k in a)
    wall = ("wall_time", "aggregation_wall_s")
    ra = [{k: v for k, v in r.items() if k not in wall} for r in read_csv(out / "rounds.csv")]
    rb = [{k: v for k, v in r.items() if k not in wall} for r in read_csv(reference / "rounds.csv")]
    same = same_model and ra == rb
    return f"killed with checkpoints at {', '.join(killed) or '(none: it finished first)'}; " + (
        "resumed run identical (model bytes and every row)" if same else "DIFFERENT"
    )


HEADER = [
    "| strategy | fault | completed / asked | failed | rejected | rounds not aggregated "
    "| final accuracy | stop |",
    "|---|---|---|---|---|---|---|---|",
]


def render(rows: list[dict[str, Any]]) -> tuple[str, list[tuple[str, bool, str]]]:
    """The table and the checks from the summary rows: one per (strategy, fault) run, and one
    per strategy for the kill-and-resume run (fault "kill", its verdict under "verdict")."""
    lines = list(HEADER)
    checks: list[tuple[str, bool, str]] = []
    for s in rows:
        strategy, fault = s["strategy"], s["fault"]
        if fault == "kill":
            verdict = str(s["verdict"])
            lines.append(f"| {strategy} | all + SIGKILL ×3, resumed | {verdict} |||||||")
            checks.append((f"{strategy}: kill and resume", "identical" in verdict, verdict))
            continue
        lines.append(
            f"| {strategy} | {fault} | {s['completed']} / {s['asked']} | {s['failed']} | "
            f"{s['rejected']} | {s['not_aggregated']} | {float(s['accuracy']):.4f} | {s['stop']} |"
        )
        checks.append(
            (
                f"{strategy}, {fault}: every round completed",
                s["completed"] == s["asked"],
                f"{s['completed']} / {s['asked']}",
            )
        )
    return "\n".join(lines), checks


def run_one(job: tuple[str, str, bool, str]) -> dict[str, Any]:
    """One line of the table: a fault injected into a run, or ("kill") the all-faults run
    killed three times and resumed."""
    strategy, fault, quick, out_dir = job
    torch.set_num_threads(1)
    out = Path(out_dir)
    if fault == "kill":
        cfg = config(strategy, "all of the above", quick)
        verdict = kill_and_resume(cfg, out / strategy / "killed", out / strategy / "all", 7)
        return {"strategy": strategy, "fault": "kill", "verdict": verdict}
    cfg = config(strategy, fault, quick)
    folder = out / strategy / fault.split(" ")[0].lower().replace("(", "")
    return {"strategy": strategy, "fault": fault, **summarise(cfg, run_experiment(cfg, folder))}


def main(argv: list[str] | None = None) -> list[tuple[str, bool, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="digits, half the rounds (~1 min)")
    parser.add_argument("--out", type=Path, default=None)
    add_sweep_options(parser, workers=1)
    parser.add_argument(
        "--report",
        action="store_true",
        help="rewrite table.md from OUT/summary.csv without rerunning",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or Path("results/faults-quick" if args.quick else "results/faults")
    if args.report:
        if not (out / "summary.csv").is_file():
            parser.error(f"--report: {out / 'summary.csv'} not found; run without --report first")
        rows = read_csv(out / "summary.csv")
    else:
        opts = sweep_options(args, out)
        faults = [(st, fault, args.quick, str(out)) for st in STRATEGIES for fault in FAULTS]
        rows = run_jobs(run_one, faults, args.workers, **opts)
        # then the kills: each compares with its strategy's all-faults run, now finished
        kills = [(st, "kill", args.quick, str(out)) for st in STRATEGIES]
        killed = run_jobs(run_one, kills, args.workers, **opts)
        kill_rows = dict(zip(STRATEGIES, killed, strict=True))
        n = len(FAULTS)
        rows = [r for i, st in enumerate(STRATEGIES) for r in [*rows[i * n:(i + 1) * n],
                kill_rows[st]]]  # fmt: skip
        write_csv(out / "summary.csv", rows)
    text, checks = render(rows)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return checks


if __name__ == "__main__":
    main()
