"""The results folder of a run: resolved config, tidy tables, final model, summary, plots.

Layout (one directory per run):
    config.toml     the resolved config (rerun it with `fl-sim run config.toml`)
    rounds.csv      one row per round: virtual time, wall time, selected/replied/failed/dropped
                    nodes, aggregated client metrics, central accuracy and loss
    messages.csv    one row per message: node, type, sent/arrival time, download/compute/upload
                    seconds, bytes, FLOPs, outcome and error text
    summary.json    final accuracy, virtual and wall time, stop reason, time to target accuracy
    model.pt        the final global model (a torch state_dict)
    status.json     the run's state (running, finished, failed, interrupted), position and ETA
    accuracy_vs_time.png, accuracy_vs_round.png   (unless the run was told not to plot)

rounds.csv, messages.csv and status.json are kept current while the run goes
(`fl.experiment.live`); `write_results` writes the final tables once the run is over.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fl.experiment.config import ExperimentConfig
from fl.experiment.tables import write_csv
from fl.loops.common import first_time_reaching
from fl.schema import to_toml


@dataclass
class RunResult:
    """What a run produced: rows of the round table, the final model, where it was written."""

    config: ExperimentConfig
    rows: list[dict[str, Any]]
    arrays: ArrayRecord
    grid: Grid  # a VirtualGrid, unless the run was on one of Flower's engines
    stop_reason: str
    wall_s: float
    out_dir: Path | None

    @property
    def final_accuracy(self) -> float:
        """Central test accuracy after the last evaluated round (nan if never evaluated)."""
        for row in reversed(self.rows):
            if "central_accuracy" in row:
                return float(row["central_accuracy"])
        return float("nan")


MESSAGE_COLUMNS = [
    "message_id",
    "node_id",
    "message_type",
    "group_id",
    "sent_at",
    "arrives_at",
    "status",
    "download_s",
    "compute_s",
    "upload_s",
    "down_bytes",
    "up_bytes",
    "work_flops",
    "error",
]


def summary(run: RunResult) -> dict[str, Any]:
    """Headline numbers of a run."""
    cfg = run.config
    last = run.rows[-1] if run.rows else {}
    out: dict[str, Any] = {
        "name": cfg.name,
        "strategy": cfg.strategy.name,
        "seed": cfg.seed,
        "rounds_completed": max((int(r["round"]) for r in run.rows), default=0),
        "final_accuracy": run.final_accuracy,
        "virtual_time_s": float(last.get("virtual_time", 0.0)),
        "wall_time_s": run.wall_s,
        "client_wall_s": getattr(run.grid, "client_wall_s", None),  # virtual grid only
        "executor": getattr(getattr(run.grid, "executor", None), "name", None),
        # workers of the ray executor that died and were replaced (their tasks rerun)
        "worker_restarts": getattr(getattr(run.grid, "executor", None), "restarts", None),
        "stop_reason": run.stop_reason,
        "engine": "virtual" if hasattr(run.grid, "outcomes") else "flower",
        "messages": len(getattr(run.grid, "outcomes", {})),
    }
    if "profiling_time" in last:
        out["profiling_time_s"] = float(last["profiling_time"])
        out["training_time_s"] = out["virtual_time_s"] - out["profiling_time_s"]
    if cfg.evaluation.target_accuracy > 0:
        t, r = first_time_reaching(run.rows, "central_accuracy", cfg.evaluation.target_accuracy)
        out["target_accuracy"] = cfg.evaluation.target_accuracy
        out["time_to_target_s"] = t if math.isfinite(t) else None
        out["rounds_to_target"] = r if r >= 0 else None
    return out


def write_results(run: RunResult, *, plots: bool = True) -> Path:
    """Write the run's folder (see module docstring) and return its path; without `plots`, no
    PNGs (matplotlib is not even imported; `fl-sim plot` draws them later)."""
    assert run.out_dir is not None
    out = run.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(to_toml(run.config.to_dict()))
    write_csv(out / "rounds.csv", run.rows)
    outcomes = getattr(run.grid, "outcomes", {})  # Flower's own grids keep no outcomes
    msgs = sorted(outcomes.values(), key=lambda o: o.seq)
    write_csv(out / "messages.csv", [vars(o) for o in msgs], MESSAGE_COLUMNS)
    (out / "summary.json").write_text(json.dumps(summary(run), indent=2) + "\n")
    torch.save(run.arrays.to_torch_state_dict(), out / "model.pt")
    if plots:
        from fl.experiment.plots import plot_runs  # matplotlib: ~0.5 s to import

        plot_runs([out], out)
    return out
