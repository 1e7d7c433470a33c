"""fl against pfl-research (Apple's `pfl`, the fastest published FL simulator) on one FedAvg
workload, both measured side by side in one run.

Workload: sklearn digits, IID shards (fl's `data.partition = "iid"`, seed 0, no local test split),
MLP 64→64→10, local SGD lr 0.05, batch 16, one local epoch, every node in every round, central
evaluation of the initial and the final model on the 360 held-out digits. Both frameworks get
the same shards, the same initial weights and the same mini-batches (pfl's user datasets are put
in the order fl's per-task seed shuffles them; pfl iterates a user's data in order), FedAvg
weighted by examples (pfl: `WeightByDatapoints`), one intra-op torch thread; so both compute the
same model, and the final test loss and accuracy are printed to check it.

Two times per run, each run a fresh process:
- whole process: from just before the interpreter is started to the end of the final
  evaluation (imports, data loading and partitioning, set-up, the rounds, evaluation);
- loop only: the timer around the rounds inside the process (fl: the wall time its round loop
  records, from the initial evaluation to the final one; pfl: the same span around
  `FederatedAveraging.run`).
fl runs with the sequential and the batched executor; runs are paired per repetition (fl
sequential, fl batched, pfl), the order reversed every other repetition, and each ratio is the
median over repetitions of the ratio within a repetition (so drifts in machine load cancel).

pfl is not a dependency of fl: it lives in the `bench` extra, installed by `make bench` into a
venv of its own (`.venv/pfl`), because `pfl` 0.6.0 pins `attrs<24` (through dp-accounting) and
would downgrade fl's environment. This script runs pfl with the interpreter `--pfl-python` or
the environment variable FL_BENCH_PFL_PYTHON names (default: `.venv/pfl/bin/python` if it exists,
else this interpreter when it has pfl).

The full run writes its table to docs/benchmark_vs_pfl_table.md (`--out` elsewhere).

Usage: python benchmarks/vs_pfl.py [--quick] [--nodes 20 100 500] [--repeats 3]
                                   [--pfl-python PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TABLE = ROOT / "docs" / "benchmark_vs_pfl_table.md"
ROUNDS = {20: 20, 100: 10, 500: 5}  # rounds per population size (fewer for more nodes)
QUICK = [(20, 5)]  # unequal shards (71, 72): the weighting is checked too
SEED, LR, BATCH, EPOCHS, HIDDEN = 0, 0.05, 16, 1, 64
PATHS = ("fl sequential", "fl batched", "pfl")

# ---------------------------------------------------------------------------------------------
# Workers: one run each, in a fresh process. The pfl worker imports nothing from fl (it runs in
# pfl's own venv); it reproduces the two pieces of fl it needs: the digits split and the seeds.
# ---------------------------------------------------------------------------------------------


def digits_arrays() -> tuple[Any, Any, Any, Any]:
    """fl's digits split (fl/data/digits.py): pixels / 16, a stratified 20% test set, seed 0."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


def derive_seed(*parts: int) -> int:
    """fl.client.training.derive_seed (a copy: the pfl worker cannot import fl)."""
    import numpy as np

    words: list[int] = []
    for p in map(int, parts):
        words.append(p & 0xFFFFFFFF)
        while p >= 1 << 32:
            p >>= 32
            words.append(p & 0xFFFFFFFF)
    state = np.random.SeedSequence(words).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def fl_config(nodes: int, rounds: int, executor: str) -> Any:
    from fl.experiment.config import load_dict

    return load_dict(
        {
            "name": "vs-pfl",
            "seed": SEED,
            "num_nodes": nodes,
            "rounds": rounds,
            "torch_threads": 1,
            "executor": executor,
            "data": {"name": "digits", "partition": "iid", "local_test_fraction": 0.0},
            "model": {"name": "mlp", "hidden": [HIDDEN]},
            "train": {"epochs": EPOCHS, "batch_size": BATCH, "lr": LR},
            "strategy": {"name": "fedavg", "clients_per_round": 0},
            "evaluation": {"central": True, "every": rounds},
        }
    )


def worker_fl(nodes: int, rounds: int, executor: str) -> dict[str, Any]:
    import torch

    from fl.experiment import run_experiment

    # The first torch.optim optimizer a process builds imports torch._dynamo (~1.5 s on an idle
    # core). pfl builds one (its central optimizer) before its loop; so does this, so that
    # neither loop-only time includes that import (both whole-process times do).
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    result = run_experiment(fl_config(nodes, rounds, executor))
    end = time.time()
    first, last = result.rows[0], result.rows[-1]
    assert int(last["round"]) == rounds and int(last["num_replied"]) == nodes, last
    return {
        "end": end,
        "loop_s": float(last["wall_time"]),
        "loss0": float(first["central_loss"]),
        "loss": float(last["central_loss"]),
        "accuracy": float(last["central_accuracy"]),
        "executor": result.grid.executor.name,  # type: ignore[attr-defined]
    }


def worker_pfl(nodes: int, rounds: int, setup: str) -> dict[str, Any]:
    import dataclasses

    import numpy as np
    import torch
    import torch.nn.functional as F
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Weighted
    from pfl.model.pytorch import PyTorchModel

    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in digits_arrays())
    saved = np.load(setup)
    bounds = saved["offsets"]
    order = torch.from_numpy(saved["indices"])
    shards = [order[bounds[i] : bounds[i + 1]] for i in range(nodes)]

    class MLP(torch.nn.Module):
        """fl's `mlp` with hidden [64] (same parameter names), with pfl's loss and metrics."""

        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.train()
            return F.cross_entropy(self(x), y)

        @torch.no_grad()
        def metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
            self.eval()
            out = self(x)
            loss = float(F.cross_entropy(out, y, reduction="sum"))
            correct = int((out.argmax(dim=1) == y).sum())
            return {"loss": Weighted(loss, len(y)), "accuracy": Weighted(correct, len(y))}

    net = MLP()
    net.load_state_dict({k[2:]: torch.from_numpy(saved[k]) for k in saved.files if k[:2] == "w:"})
    model = PyTorchModel(
        model=net,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
    )
    tasks = [0] * nodes

    def make_dataset(user: int) -> Dataset:
        """User `user`'s shard in the order of fl's batches for this task (its round)."""
        tasks[user] += 1
        rnd = tasks[user]
        gen = torch.Generator().manual_seed(derive_seed(SEED, user, rnd, rnd - 1))
        rows = shards[user][torch.randperm(len(shards[user]), generator=gen)]
        return Dataset((x_tr[rows], y_tr[rows]), user_id=user)

    train_data = FederatedDataset(make_dataset, get_user_sampler("minimize_reuse", range(nodes)))
    backend = SimulatedBackend(
        training_data=train_data, val_data=None, postprocessors=[WeightByDatapoints()]
    )

    class FedAvg(FederatedAveraging):
        """pfl's FedAvg without its per-user evaluation before and after local training in
        round 0 (fl does none; the central evaluations below are the ones both do)."""

        def get_next_central_contexts(self, *args: Any, **kwargs: Any) -> Any:
            contexts, mdl, metrics = super().get_next_central_contexts(*args, **kwargs)
            if contexts is not None:
                contexts = tuple(dataclasses.replace(c, do_evaluation=False) for c in contexts)
            return contexts, mdl, metrics

    test = Dataset((x_te, y_te))
    eval_params = NNEvalHyperParams(local_batch_size=None)

    def evaluate() -> tuple[float, float]:
        m = model.evaluate(test, eval_params=eval_params)
        return float(m["loss"].overall_value), float(m["accuracy"].overall_value)

    t0 = time.perf_counter()
    loss0, _ = evaluate()
    FedAvg().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=rounds,
            evaluation_frequency=rounds,
            train_cohort_size=nodes,
            val_cohort_size=None,
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(
            local_num_epochs=EPOCHS, local_learning_rate=LR, local_batch_size=BATCH
        ),
        model_eval_params=eval_params,
        callbacks=[],
    )
    loss, accuracy = evaluate()
    loop_s = time.perf_counter() - t0
    end = time.time()
    assert tasks == [rounds] * nodes, "pfl did not train every user once per round"
    return {"end": end, "loop_s": loop_s, "loss0": loss0, "loss": loss, "accuracy": accuracy}


# ---------------------------------------------------------------------------------------------
# The driver (fl's venv).
# ---------------------------------------------------------------------------------------------


def export_setup(nodes: int, path: Path) -> None:
    """fl's shards (indices into the digits training split) and initial weights, for pfl."""
    import numpy as np

    from fl import client
    from fl.models import build_model

    cfg = fl_config(nodes, 1, "sequential")
    ws = client.workspace(cfg.to_run_config(), client.ClientConfig.of(cfg))
    parts = ws.data.node_train
    assert all(len(t) == 0 for t in ws.data.node_test)
    model = build_model(cfg.model, ws.data.input_shape, ws.data.num_classes, seed=cfg.seed)
    np.savez(
        path,
        indices=np.concatenate(parts).astype(np.int64),
        offsets=np.cumsum([0, *map(len, parts)]),
        **{f"w:{k}": v.detach().numpy() for k, v in model.state_dict().items()},
    )
    client.clear_workspaces()


def pfl_python(arg: str | None) -> str:
    """The interpreter that has pfl (see the module docstring)."""
    for candidate in (arg, os.environ.get("FL_BENCH_PFL_PYTHON")):
        if candidate:
            return candidate
    venv = ROOT / ".venv" / "pfl" / "bin" / "python"
    if venv.exists():
        return str(venv)
    if importlib.util.find_spec("pfl") is not None:
        return sys.executable
    raise SystemExit(
        "pfl is not installed: `make bench` installs it (the bench extra) into .venv/pfl, or "
        "name an interpreter that has it with --pfl-python / FL_BENCH_PFL_PYTHON"
    )


def spawn(python: str, worker: list[str]) -> dict[str, Any]:
    """One run in a fresh process; its result, with the whole-process time added."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    out = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", *worker],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"worker {' '.join(worker)} failed:\n{out.stdout}\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["whole_s"] = result["end"] - t0
    return result


def measure(
    python: str, nodes: int, rounds: int, repeats: int, setup: Path
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    commands = {
        "fl sequential": (sys.executable, ["fl", str(nodes), str(rounds), "sequential"]),
        "fl batched": (sys.executable, ["fl", str(nodes), str(rounds), "batched"]),
        "pfl": (python, ["pfl", str(nodes), str(rounds), str(setup)]),
    }
    for rep in range(repeats):
        for path in PATHS if rep % 2 == 0 else PATHS[::-1]:
            runs[path].append(spawn(*commands[path]))
    return runs


def ratio(runs: dict[str, list[dict[str, Any]]], path: str, key: str) -> float:
    """Median over repetitions of pfl's time ÷ `path`'s (> 1: fl is faster)."""
    return statistics.median(p[key] / f[key] for p, f in zip(runs["pfl"], runs[path], strict=True))


def load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N = 20, 5 rounds, once")
    parser.add_argument("--nodes", type=int, nargs="+", default=list(ROUNDS))
    parser.add_argument("--rounds", type=int, default=0, help="0: 20 / 10 / 5 for 20 / 100 / 500")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pfl-python", default=None)
    parser.add_argument("--out", type=Path, default=None, help=f"default (full run): {TABLE}")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, nodes, rounds, extra = args.worker
        fn = worker_fl if kind == "fl" else worker_pfl
        print(json.dumps(fn(int(nodes), int(rounds), extra)))
        return

    from throughput import machine

    python = pfl_python(args.pfl_python)
    version = subprocess.run(
        [python, "-c", "import pfl, torch; print(pfl.__version__, torch.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    cells = QUICK if args.quick else [(n, args.rounds or ROUNDS.get(n, 5)) for n in args.nodes]
    repeats = 1 if args.quick else args.repeats
    head = [
        machine(),
        f"pfl {version[0]} (torch {version[1]}, {python}); {load()} at the start",
        f"FedAvg, digits MLP 64→{HIDDEN}→10, lr {LR}, batch {BATCH}, {EPOCHS} local epoch, "
        f"full participation; {repeats} paired repetition(s), each run a fresh process",
        "",
        "| nodes | rounds | path | whole process (s) | loop only (s) | pfl ÷ fl, whole "
        "| pfl ÷ fl, loop | final test loss | accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(head), flush=True)
    lines, checks = list(head), []
    for nodes, rounds in cells:
        with tempfile.TemporaryDirectory() as tmp:
            setup = Path(tmp) / "setup.npz"
            export_setup(nodes, setup)
            runs = measure(python, nodes, rounds, repeats, setup)
        for path in PATHS:
            whole = statistics.median(r["whole_s"] for r in runs[path])
            loop = statistics.median(r["loop_s"] for r in runs[path])
            vs = (
                ("—", "—")
                if path == "pfl"
                else (f"{ratio(runs, path, 'whole_s'):.2f}×", f"{ratio(runs, path, 'loop_s'):.2f}×")
            )
            last = runs[path][-1]
            row = (
                f"| {nodes} | {rounds} | {path} | {whole:.2f} | {loop:.3f} | {vs[0]} | {vs[1]} "
                f"| {last['loss']:.8f} | {last['accuracy']:.4f} |"
            )
            print(row, flush=True)
            lines.append(row)
        losses = {p: (runs[p][-1]["loss0"], runs[p][-1]["loss"]) for p in PATHS}
        diff = max(abs(losses[p][1] - losses["pfl"][1]) for p in PATHS)
        same0 = len({round(v[0], 6) for v in losses.values()}) == 1
        checks.append(
            f"N = {nodes}: initial test loss {'equal' if same0 else 'DIFFERENT'} "
            f"({losses['pfl'][0]:.8f}); final test loss "
            + ", ".join(f"{p} {v[1]:.10f}" for p, v in losses.items())
            + f"; largest difference {diff:.1e}"
        )
    tail = ["", f"{load()} at the end", "", *checks]
    print("\n".join(tail))
    lines += tail
    out = args.out if args.out is not None else (None if args.quick else TABLE)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            "<!-- written by `python benchmarks/vs_pfl.py`; do not edit -->\n"
            + "\n".join(lines)
            + "\n"
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
