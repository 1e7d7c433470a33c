"""The client executors side by side: the same experiment with each, in one run.

For each workload, runs the experiment with the sequential, batched and process-pool executors
(interleaved, best of `--repeats`) and prints the wall time, the time spent running clients,
the speed-up over sequential, which executor "auto" picks, and how far each final model is from
the sequential one (batched: float tolerance; processes: exactly 0).

`--ray` instead runs the Ray executor against the process pool on the MNIST CNN with 100
nodes (1 and 2 Ray workers, a local Ray), and a sweep of 8 short runs on a local process pool
and as Ray tasks (1 and 2 workers each): the scaling on this machine, measured side by side.

Usage: python benchmarks/executors.py [--repeats 2] [--quick] [--ray [--table PATH]]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import time
from pathlib import Path
from typing import Any

import torch

from fl import client
from fl.executors import choose_executor
from fl.experiment import run_experiment
from fl.experiment.config import load_dict

WORKLOADS: dict[str, dict[str, Any]] = {
    "digits MLP, 50 nodes, 1 epoch": {
        "num_nodes": 50,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [64]},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.1},
    },
    "digits MLP, 20 nodes, 5 epochs": {
        "num_nodes": 20,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [64]},
        "train": {"epochs": 5, "batch_size": 16, "lr": 0.1},
    },
    "quickstart: MNIST MLP, Dirichlet, 10 of 50": {
        "num_nodes": 50,
        "data": {"name": "mnist", "partition": "dirichlet", "alpha": 0.3, "max_samples": 15000},
        "model": {"name": "mlp", "hidden": [64]},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "strategy": {"name": "fedavg", "clients_per_round": 10},
    },
    "digits CNN, 20 nodes": {
        "num_nodes": 20,
        "data": {"name": "digits"},
        "model": {"name": "cnn", "cnn_channels": [8, 16]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.1},
    },
    "MNIST CNN, 20 nodes": {
        "num_nodes": 20,
        "data": {"name": "mnist", "max_samples": 6000},
        "model": {"name": "cnn", "cnn_channels": [8, 16]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.1},
    },
}


def config(workload: str, rounds: int) -> Any:
    return load_dict(
        {
            "name": "executors",
            "seed": 0,
            "rounds": rounds,
            "strategy": {"name": "fedavg"},
            "evaluation": {"central": False},
            **WORKLOADS[workload],
        }
    )


RAY_WORKLOAD: dict[str, Any] = {
    "num_nodes": 100,
    "data": {"name": "mnist", "max_samples": 20000},
    "model": {"name": "cnn", "cnn_channels": [8, 16]},
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.05},
}
SWEEP_JOB: dict[str, Any] = {  # one short run of the sweep (~4 s sequential)
    "num_nodes": 20,
    "rounds": 20,
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [64]},
    "train": {"epochs": 5, "batch_size": 16, "lr": 0.1},
    "executor": "sequential",
}


def delta(finals: dict[str, dict[str, torch.Tensor]], executor: str) -> float:
    """Largest absolute difference between `executor`'s final model and the sequential one."""
    ref = finals["sequential"]
    return max(float((finals[executor][k] - ref[k]).abs().max()) for k in ref)


def steady_s(run: Any) -> float:
    """Wall seconds of rounds 2 to the last: without the first round, which starts the pool
    or the Ray actors (they load torch and map the data once per run)."""
    rows = [r for r in run.rows if r["round"] > 0]
    return float(rows[-1]["wall_time"] - rows[0]["wall_time"])


def sweep_job(seed: int) -> dict[str, Any]:
    """One run of the sweep benchmark; its final accuracy."""
    torch.set_num_threads(1)
    cfg = load_dict({"name": f"sweep{seed}", "seed": seed, **SWEEP_JOB})
    return {"seed": seed, "final_accuracy": run_experiment(cfg).final_accuracy}


def ray_section(rounds: int, repeats: int, quick: bool) -> list[str]:
    """The Ray executor against the process pool, and a sweep on a pool and on Ray: the lines
    of its tables (printed as they come)."""
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    import ray

    from fl.executors.ray import connect
    from fl.experiment.sweep import run_jobs

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    connect()
    print(f"local Ray with 2 CPUs started in {time.perf_counter() - t0:.1f} s (once per process)\n")
    work = {**RAY_WORKLOAD, "num_nodes": 40} if quick else RAY_WORKLOAD
    cfg = load_dict(
        {"name": "ray", "seed": 0, "rounds": rounds, "evaluation": {"central": False}, **work}
    )
    variants = {
        "sequential": {"executor": "sequential"},
        "processes ×2": {"executor": "processes", "workers": 2},
        "ray ×1": {"executor": "ray", "workers": 1},
        "ray ×2": {"executor": "ray", "workers": 2},
    }
    best: dict[str, tuple[float, float]] = {}
    finals: dict[str, dict[str, torch.Tensor]] = {}
    for _ in range(repeats):
        for name, change in variants.items():
            t1 = time.perf_counter()
            r = run_experiment(dataclasses.replace(cfg, **change))
            whole = time.perf_counter() - t1
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], whole), min(old[1], steady_s(r)))
            finals[name] = r.arrays.to_torch_state_dict()
    n = work["num_nodes"]
    out(f"MNIST CNN, {n} nodes, all of them each round, {rounds} rounds (best of {repeats}):\n")
    out("| executor | whole run (s) | rounds 2-last (s) | ÷ sequential (rounds 2-last) "
        "| ÷ processes ×2 | max abs Δ model vs sequential |")  # fmt: skip
    out("|---|---|---|---|---|---|")
    seq, pool = best["sequential"][1], best["processes ×2"][1]
    for name, (whole, steady) in best.items():
        out(
            f"| {name} | {whole:.2f} | {steady:.2f} | {seq / steady:.2f}× | {pool / steady:.2f}× "
            f"| {delta(finals, name) if name != 'sequential' else 0.0:.0e} |"
        )
    jobs = list(range(4 if quick else 8))
    what = "digits MLP, 20 nodes, 20 rounds of 5 epochs each, executor sequential"
    out(f"\nA sweep of {len(jobs)} short runs ({what}):\n")
    out("| sweep | wall (s) | ÷ 1 local process | same accuracies |")
    out("|---|---|---|---|")
    times: dict[str, float] = {}
    ref: list[Any] = []
    for name, workers, on_ray in [
        ("local pool ×1", 1, False),
        ("local pool ×2", 2, False),
        ("ray tasks ×1", 1, True),
        ("ray tasks ×2", 2, True),
    ]:
        t1 = time.perf_counter()
        rows = run_jobs(sweep_job, jobs, workers, ray=on_ray, stream=io.StringIO())
        times[name] = time.perf_counter() - t1
        acc = [r["final_accuracy"] for r in rows]
        ref = ref or acc
        out(
            f"| {name} | {times[name]:.2f} | {times['local pool ×1'] / times[name]:.2f}× "
            f"| {acc == ref} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the first two workloads only")
    parser.add_argument("--ray", action="store_true", help="the Ray executor and Ray sweeps")
    parser.add_argument(
        "--table", type=Path, default=None, help="--ray: also write its tables here"
    )
    args = parser.parse_args(argv)
    from throughput import machine

    torch.set_num_threads(1)
    print(machine())
    if args.ray:
        lines = ray_section(
            3 if args.quick else args.rounds, 1 if args.quick else args.repeats, args.quick
        )
        if args.table is not None:
            args.table.write_text("\n".join(lines) + "\n")
        return
    print("| workload | auto picks | sequential (s) | batched (s) | processes (s) "
          "| batched ÷ seq | processes ÷ seq | max abs Δ model, batched / processes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    names = list(WORKLOADS)[:2] if args.quick else list(WORKLOADS)
    for workload in names:
        cfg = config(workload, args.rounds)
        ws = client.workspace(cfg.to_run_config())
        run_experiment(dataclasses.replace(cfg, rounds=1, executor="processes"))  # warm-up
        best: dict[str, float] = {}
        finals: dict[str, dict[str, torch.Tensor]] = {}
        for _ in range(args.repeats):
            for ex in ("sequential", "batched", "processes"):
                t0 = time.perf_counter()
                r = run_experiment(dataclasses.replace(cfg, executor=ex))
                best[ex] = min(best.get(ex, float("inf")), time.perf_counter() - t0)
                finals[ex] = r.arrays.to_torch_state_dict()

        seq = best["sequential"]
        print(
            f"| {workload} | {choose_executor(cfg, ws)} | {seq:.2f} | {best['batched']:.2f} | "
            f"{best['processes']:.2f} | {seq / best['batched']:.2f}× | "
            f"{seq / best['processes']:.2f}× | {delta(finals, 'batched'):.1e} / "
            f"{delta(finals, 'processes'):.0e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
