"""Per-client-update cost of the simulator against a bare torch loop doing the same arithmetic.

The bare loop is the practical floor: for the same (node, round) tasks it loads the global
weights into one model, runs the same local SGD (`fl.client.training.train_local`, same seeds and
batches) and averages the resulting weights, with no Flower messages, no grid, no strategy and
no time model. All are timed side by side in one run: the simulator with the sequential
executor (the ratio is its overhead) and with the batched one (torch.func: all clients of a
round in one vectorised step; the ratio is its speed-up over the bare per-client loop).

Stock Flower FedAvg decodes every reply array itself (`Array.numpy()` → `np.load`); that cost
is measured on its own and printed after the table. `--strategy robust-mean` runs the project's
`RobustAggregation` (weighted mean of the deltas, unclipped: FedAvg's arithmetic) instead, which
aggregates from the round's decoded stack. `--plain-flower` builds and reads every message
through Flower's public API only (`fl.protocol.records.plain_flower`), the reference the fast
path is measured against.

Usage: python benchmarks/vs_bare_loop.py [--nodes 50] [--rounds 5] [--epochs 1] [--data digits]
       [--strategy fedavg|robust-mean] [--plain-flower]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable

import torch

from fl import client
from fl.client.training import derive_seed, train_local
from fl.executors.vmap import BatchTask, train_batched
from fl.experiment import run_experiment
from fl.experiment.config import load_dict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default="digits", help="digits or mnist (15 000 examples)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--strategy", default="fedavg", choices=["fedavg", "robust-mean"])
    parser.add_argument("--plain-flower", action="store_true", help="no message fast path")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="cpu: this process's CPU time (steadier than wall time on a shared machine)",
    )
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    strategy: dict[str, object] = {"name": "fedavg"}
    if args.strategy == "robust-mean":
        strategy = {
            "name": "robust",
            "options": {"aggregator": "mean", "weighted": True, "weight_clip": float("inf")},
        }
    from throughput import machine

    torch.set_num_threads(1)
    cfg = load_dict(
        {
            "name": "bare",
            "seed": 0,
            "num_nodes": args.nodes,
            "rounds": args.rounds,
            "data": {"name": args.data} | ({"max_samples": 15000} if args.data == "mnist" else {}),
            "model": {"name": "mlp", "hidden": [64]},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 0.1},
            "evaluation": {"central": False},
            "strategy": strategy,
        }
    )
    ws = client.workspace(cfg.to_run_config())
    hp = client.local_training(cfg, None)
    updates = args.nodes * args.rounds
    print(machine())
    plain = " (plain Flower path)" if args.plain_flower else ""
    print(f"{args.clock} clock; {args.strategy}{plain}, {args.data} MLP, {args.nodes} nodes "
          f"x {args.rounds} rounds = {updates} updates, {args.epochs} local epoch(s) of batch "
          f"{args.batch_size}; best of {args.repeats}")  # fmt: skip

    def simulator(executor: str) -> float:
        t0 = clock()
        run_experiment(dataclasses.replace(cfg, executor=executor))
        return clock() - t0

    def bare() -> float:
        t0 = clock()
        model = ws.model
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        for rnd in range(1, args.rounds + 1):
            total: dict[str, torch.Tensor] = {}
            n_sum = 0
            for node in range(args.nodes):
                model.load_state_dict(weights)
                x, y, _, _ = ws.data.node(node)
                train_local(model, x, y, hp, derive_seed(cfg.seed, node, rnd, rnd - 1), 10)
                for k, v in model.state_dict().items():
                    total[k] = total.get(k, 0) + v * len(y)
                n_sum += len(y)
            weights = {k: v / n_sum for k, v in total.items()}
        return clock() - t0

    def bare_batched() -> float:
        """The bare loop's rounds with the batched trainer: the executor's arithmetic alone."""
        t0 = clock()
        model = ws.model
        names = [n for n, _ in model.named_parameters()]
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        sizes = [len(ws.data.node(node)[1]) for node in range(args.nodes)]
        for rnd in range(1, args.rounds + 1):
            tasks = []
            for node in range(args.nodes):
                x, y, _, _ = ws.data.node(node)
                seed = derive_seed(cfg.seed, node, rnd, rnd - 1)
                tasks.append(BatchTask(x, y, weights, hp, seed, 10))
            results = train_batched(model, tasks)
            weights = {
                n: sum(r[0][n] * s for r, s in zip(results, sizes, strict=True)) / sum(sizes)
                for n in names
            }
        return clock() - t0

    paths = {
        "simulator, sequential executor": lambda: simulator("sequential"),
        "simulator, batched executor": lambda: simulator("batched"),
        "bare torch loop (per client)": bare,
        "bare loop, batched trainer": bare_batched,
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    mode: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if args.plain_flower:
        from fl.protocol import records

        mode = records.plain_flower()
    with mode:
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
            for name, fn in paths.items():
                times[name].append(fn())
    best = {k: min(v) for k, v in times.items()}
    floor = best["bare torch loop (per client)"]
    print("| path | wall (s) | per update (ms) | ÷ bare loop |")
    print("|---|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t:.3f} | {1e3 * t / updates:.2f} | {t / floor:.2f} |")
    print(f"sequential overhead: {best['simulator, sequential executor'] / floor:.2f}x; "
          f"batched speed-up over the bare loop: {floor / best['bare loop, batched trainer']:.2f}x"
          f" (training alone), {floor / best['simulator, batched executor']:.2f}x (whole "
          "simulator)")  # fmt: skip
    decode_s, stack_s = decoding_cost(ws.model, updates, args.repeats, clock)
    print(f"stock FedAvg's own decoding of the replies (Array.numpy → np.load, per array): "
          f"{1e3 * decode_s / updates:.3f} ms per update, {decode_s:.3f} s of each simulator "
          f"run; the same replies decoded into one stack: {1e3 * stack_s / updates:.3f} ms "
          "per update")  # fmt: skip


def decoding_cost(
    model: torch.nn.Module, updates: int, repeats: int, clock: Callable[[], float]
) -> tuple[float, float]:
    """(seconds FedAvg spends in np.load for `updates` replies of `model`, seconds to decode
    the same replies into one stack), best of `repeats`."""
    from flwr.app import ArrayRecord

    try:
        from fl.protocol import stack
    except ImportError:  # a version of the code before the stack
        stack = None  # type: ignore[assignment]
    replies = [ArrayRecord(model.state_dict()) for _ in range(updates)]
    layout = stack.layout_key(replies[0]) if stack is not None else ()
    best_load = best_stack = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for rec in replies:
            rec.to_numpy_ndarrays()  # what aggregate_arrayrecords calls per reply
        best_load = min(best_load, clock() - t0)
        if stack is not None:
            t0 = clock()
            stack.build(replies, layout)
            best_stack = min(best_stack, clock() - t0)
    if stack is not None:
        stack.clear()
    return best_load, best_stack


if __name__ == "__main__":
    main()
