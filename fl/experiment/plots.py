"""Plots of one or several results folders: accuracy against virtual time and rounds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fl.experiment.tables import read_csv


def _label(run_dir: Path) -> str:
    summary = run_dir / "summary.json"
    if summary.is_file():
        return str(json.loads(summary.read_text()).get("name", run_dir.name))
    return run_dir.name


def plot_runs(
    run_dirs: Sequence[Path],
    out_dir: Path,
    metric: str = "central_accuracy",
    log_time: bool = False,
) -> list[Path]:
    """Overlay `metric` of each run against virtual time and against rounds; return the PNGs.
    `log_time` puts virtual time on a log axis (runs whose durations differ by 10×+)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series = []
    for d in run_dirs:
        rows = [r for r in read_csv(Path(d) / "rounds.csv") if r.get(metric, "") != ""]
        series.append((_label(Path(d)), rows))
    written = []
    for x_key, x_label, fname in (
        ("virtual_time", "virtual time (s)", "accuracy_vs_time.png"),
        ("round", "round", "accuracy_vs_round.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for label, rows in series:
            ax.plot([r[x_key] for r in rows], [r[metric] for r in rows], label=label, lw=1.5)
        ax.set_xlabel(x_label + (" (log)" if log_time and x_key == "virtual_time" else ""))
        if log_time and x_key == "virtual_time":
            ax.set_xscale("symlog", linthresh=10.0)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
