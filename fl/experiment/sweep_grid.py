"""`fl-sim sweep`: one config run over a grid of overrides × seeds, as independent runs.

Every run writes its usual results folder, DIR/<point>/seed<k>/ (`<point>` joins the grid's
`key=value` pairs with `+`). The sweep writes DIR/sweep.csv (one row per run: the grid's values,
seed, final accuracy, virtual time, time to target, rounds, wall time, folder), DIR/sweep.md
(mean ± std over seeds per grid point) and DIR/accuracy_vs_time.png / accuracy_vs_round.png
(one line per grid point, a ± std band over seeds). DIR/sweep.json holds what the sweep is
(config, grid, overrides), so a later call on the same DIR resumes it — finished runs are
skipped — and a different sweep is refused there.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl.schema import ConfigError

SPEC_FILE = "sweep.json"
COLUMNS = (
    "seed",
    "final_accuracy",
    "virtual_time_s",
    "time_to_target_s",
    "rounds_completed",
    "wall_time_s",
    "folder",
)


def parse_seeds(text: str) -> list[int]:
    """`0-2` → [0, 1, 2]; `0,3,5` → [0, 3, 5]; `4` → [4] (ranges and lists may mix)."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None or (m[2] is not None and int(m[2]) < int(m[1])):
            raise ValueError(f"--seeds {text!r}: give seeds as 0-2 or 0,3,5 (integers ≥ 0)")
        lo = int(m[1])
        seeds += range(lo, int(m[2]) + 1) if m[2] is not None else [lo]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed is given twice")
    return seeds


def split_values(text: str) -> list[str]:
    """Split a grid's values on the commas outside brackets, braces and quotes
    (`[32],[64, 64]` → `[32]`, `[64, 64]`)."""
    values, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(cur.strip())
            cur = ""
            continue
        cur += ch
    values.append(cur.strip())
    return values


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--grid KEY=V1,V2` options → [(KEY, [V1, V2]), ...], in the order given."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, rest = item.partition("=")
        key = key.strip()
        values = split_values(rest) if sep else []
        if not key or not sep or not all(values):
            raise ValueError(f"--grid {item!r}: write KEY=V1,V2,... (e.g. strategy.name=a,b)")
        if key == "seed":
            raise ValueError("--grid seed=...: give seeds with --seeds")
        if any(key == k for k, _ in grid):
            raise ValueError(f"--grid {key}: given twice")
        grid.append((key, values))
    return grid


def folder_name(point: dict[str, str]) -> str:
    """A grid point's folder: `strategy.name=bgmd+attack.fraction=0.2` (characters a folder
    name should not hold become `_`)."""
    text = "+".join(f"{k}={v}" for k, v in point.items()) or "base"
    return re.sub(r"[^A-Za-z0-9._=+,\-\[\]]", "_", text)


@dataclass(frozen=True)
class Sweep:
    """A sweep: the config, the extra overrides, the grid and the seeds."""

    config: Path
    grid: list[tuple[str, list[str]]]
    seeds: list[int]
    sets: list[str]

    def points(self) -> list[dict[str, str]]:
        """Every grid point (the Cartesian product of the grid's values), in order."""
        keys = [k for k, _ in self.grid]
        return [
            dict(zip(keys, vs, strict=True)) for vs in itertools.product(*(v for _, v in self.grid))
        ]

    def jobs(self, out: Path) -> list[dict[str, Any]]:
        """One job per (point, seed): what `run_point` needs, as JSON values."""
        return [
            {
                "config": str(self.config.resolve()),
                "overrides": [*self.sets, *(f"{k}={v}" for k, v in point.items()), f"seed={seed}"],
                "point": point,
                "seed": seed,
                "name": f"{folder_name(point)}+seed{seed}",
                "out": str(out / folder_name(point) / f"seed{seed}"),
            }
            for point in self.points()
            for seed in self.seeds
        ]

    def spec(self) -> dict[str, Any]:
        """What must match for a later call to resume this sweep (more seeds may be added)."""
        return {"config": str(self.config.resolve()), "grid": self.grid, "sets": self.sets}


def check_configs(jobs: Sequence[dict[str, Any]]) -> None:
    """Load every run's config before anything runs: a bad key or value raises its
    ConfigError now, not an hour into the sweep."""
    from fl.experiment.config import load_config

    for job in jobs:
        load_config(Path(job["config"]), job["overrides"])


def claim(out: Path, sweep: Sweep, force: bool) -> None:
    """Make `out` this sweep's folder: new, or holding this same sweep (then it resumes); a
    folder of another sweep is refused unless `force`, which starts it over."""
    from fl.experiment.sweep import DONE_FILE

    path = out / SPEC_FILE
    spec = json.loads(json.dumps(sweep.spec()))
    if path.is_file() and json.loads(path.read_text()) != spec:
        if not force:
            raise ConfigError(
                "--out",
                str(out),
                "a folder of another sweep (other config, grid or --set): "
                "use another --out, or --force to start over there",
            )
        (out / DONE_FILE).unlink(missing_ok=True)
    elif force:
        (out / DONE_FILE).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2) + "\n")


def run_point(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job of a sweep into its folder; its row of sweep.csv."""
    import dataclasses

    from fl.experiment import run_experiment
    from fl.experiment.config import load_config
    from fl.experiment.results import summary

    cfg = load_config(Path(job["config"]), job["overrides"])
    cfg = dataclasses.replace(cfg, name=job["name"])
    s = summary(run_experiment(cfg, Path(job["out"]), progress=False, plots=False))
    return {
        **job["point"],
        "seed": job["seed"],
        "final_accuracy": s["final_accuracy"],
        "virtual_time_s": s["virtual_time_s"],
        "time_to_target_s": s.get("time_to_target_s"),
        "rounds_completed": s["rounds_completed"],
        "wall_time_s": s["wall_time_s"],
        "folder": job["out"],
    }


def _mean_std(values: Sequence[Any]) -> str:
    nums = [float(v) for v in values if isinstance(v, int | float)]
    if not nums:
        return "–"
    if len(nums) == 1:
        return f"{nums[0]:.4g}"
    return f"{statistics.mean(nums):.4g} ± {statistics.stdev(nums):.2g}"


def table(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """Markdown: one line per grid point, mean ± std over its seeds (a time to target counts
    only the seeds that reached it: n/N says how many)."""
    head = [*keys, "seeds", "final accuracy", "virtual time (s)", "time to target (s)", "wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r[k]) for k in keys), []).append(r)
    for point, rs in groups.items():
        reached = [r["time_to_target_s"] for r in rs if r.get("time_to_target_s") is not None]
        ttt = f"{_mean_std(reached)} ({len(reached)}/{len(rs)})" if reached else f"– (0/{len(rs)})"
        cells = [
            *point,
            str(len(rs)),
            _mean_std([r["final_accuracy"] for r in rs]),
            _mean_std([r["virtual_time_s"] for r in rs]),
            ttt,
            _mean_std([r["wall_time_s"] for r in rs]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_metric(folders: Sequence[Path]) -> str:
    """The accuracy the runs report: central (server-side) if any run has it, else federated
    (the nodes' evaluation, `fed_eval_acc`)."""
    from fl.experiment.tables import read_csv

    for metric in ("central_accuracy", "fed_eval_acc"):
        for folder in folders:
            rows = read_csv(folder / "rounds.csv")
            if any(isinstance(r.get(metric), int | float) for r in rows):
                return metric
    return "central_accuracy"


def write_sweep(out: Path, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """sweep.csv, sweep.md and the overlay plots (one line per grid point: the mean over seeds
    with a ± std band, the seeds interpolated onto a common time grid); the markdown table."""
    from fl.experiment.plots import plot_runs  # matplotlib (Agg): imported only here
    from fl.experiment.tables import write_csv

    write_csv(out / "sweep.csv", list(rows), [*keys, *COLUMNS])
    text = table(rows, keys)
    (out / "sweep.md").write_text(text + "\n")
    folders = [Path(r["folder"]) for r in rows if (Path(r["folder"]) / "rounds.csv").is_file()]
    if folders:
        plot_runs(folders, out, accuracy_metric(folders))
    return text
