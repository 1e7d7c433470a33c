"""`fl-sim sweep` and the sweep runner: grid and seed parsing, the tidy table and plots, and
resuming an interrupted sweep without rerunning finished runs — on a local pool and on Ray."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import load_simulation
from typer.testing import CliRunner

from fl.cli import cli
from fl.experiment.sweep import DONE_FILE, connect_ray, job_key, run_jobs
from fl.experiment.sweep_grid import folder_name, parse_grid, parse_seeds, split_values
from fl.experiment.tables import read_csv

CONFIG = """
name = "sw"
num_nodes = 6
rounds = 3
[data]
name = "digits"
[model]
name = "mlp"
hidden = [16]
[train]
steps = 2
batch_size = 16
lr = 0.1
[evaluation]
every = 1
target_accuracy = 0.15
"""
ROOT = Path(__file__).resolve().parents[1]
GRID = ["--grid", "strategy.name=fedavg,fedmedian", "--seeds", "0-1"]
SAME = ("strategy.name", "seed", "final_accuracy", "virtual_time_s", "time_to_target_s",
        "rounds_completed")  # fmt: skip


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "sw.toml"
    path.write_text(CONFIG)
    return path


def _sweep(*args: str) -> Any:
    return CliRunner().invoke(cli, ["sweep", *args])


def test_seeds_and_grids_parse_as_written() -> None:
    assert parse_seeds("0-2") == [0, 1, 2]
    assert parse_seeds("0,3,5") == [0, 3, 5]
    assert parse_seeds("4") == [4]
    assert parse_seeds("0-1,7") == [0, 1, 7]
    for bad in ("", "a", "3-1", "1,1", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    assert split_values("[32],[64, 64]") == ["[32]", "[64, 64]"]
    assert split_values("{beta = 0.1, x = 2},{}") == ["{beta = 0.1, x = 2}", "{}"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    assert parse_grid(["strategy.name=a,b", "attack.fraction=0,0.2"]) == [
        ("strategy.name", ["a", "b"]),
        ("attack.fraction", ["0", "0.2"]),
    ]
    for bad in ("strategy.name", "=a", "x=", "x=a,,b", "seed=1,2"):
        with pytest.raises(ValueError, match="--grid"):
            parse_grid([bad])
    with pytest.raises(ValueError, match="given twice"):
        parse_grid(["x=1", "x=2"])
    assert folder_name({"model.hidden": "[64, 64]", "a": "x/y"}) == "model.hidden=[64,_64]+a=x_y"


def test_a_bad_grid_is_refused_before_anything_runs(tmp_path: Path) -> None:
    config = _config(tmp_path)
    r = _sweep(str(config), "--grid", "strategy.nam=fedavg", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "strategy" in r.output and "nam" in r.output
    r = _sweep(str(config), "--grid", "strategy.name=fedavg,nosuch", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "nosuch" in r.output
    assert not (tmp_path / "o" / "strategy.name=fedavg").exists()  # nothing ran
    r = _sweep(str(config), "--seeds", "2-0", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "--seeds" in r.output


def test_a_sweep_writes_its_table_plots_and_run_folders(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    r = _sweep(str(_config(tmp_path)), *GRID, "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = read_csv(out / "sweep.csv")
    assert [(row["strategy.name"], row["seed"]) for row in rows] == [
        ("fedavg", 0), ("fedavg", 1), ("fedmedian", 0), ("fedmedian", 1)
    ]  # fmt: skip
    assert list(rows[0]) == ["strategy.name", *SAME[1:], "wall_time_s", "folder"]
    for row in rows:  # each row is what its run folder says
        s = json.loads((Path(row["folder"]) / "summary.json").read_text())
        assert s["strategy"] == row["strategy.name"] and s["seed"] == row["seed"]
        assert s["final_accuracy"] == row["final_accuracy"] and s["rounds_completed"] == 3
        assert s["virtual_time_s"] == row["virtual_time_s"]
        assert s.get("time_to_target_s") == (row["time_to_target_s"] or None)  # "": none
    assert len({row["final_accuracy"] for row in rows}) > 1  # seeds and strategies differ
    assert 0 < sum(isinstance(row["time_to_target_s"], float) for row in rows) < 4
    md = (out / "sweep.md").read_text()
    assert md.count("\n") == 4 and "| fedavg | 2 |" in md and "| fedmedian | 2 |" in md
    assert md.strip() in r.output
    for png in ("accuracy_vs_time.png", "accuracy_vs_round.png"):
        assert (out / png).stat().st_size > 10_000
    # another sweep in the same folder is refused; the same one with more seeds resumes
    r = _sweep(str(_config(tmp_path)), "--grid", "strategy.name=fedavg", "--out", str(out))
    assert r.exit_code == 2 and "another" in r.output


def test_an_interrupted_sweep_resumes_without_rerunning_finished_runs(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ref = tmp_path / "ref"
    assert _sweep(str(config), *GRID, "--out", str(ref)).exit_code == 0
    out = tmp_path / "sweep"
    import fl.experiment.sweep_grid as sg

    original, calls = sg.run_point, []

    def dies_on_the_third(job: dict[str, Any]) -> dict[str, Any]:
        calls.append(job["name"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third run
        return original(job)

    sg.run_point = dies_on_the_third  # type: ignore[assignment]
    try:
        r = _sweep(str(config), *GRID, "--out", str(out))
    finally:
        sg.run_point = original  # type: ignore[assignment]
    assert r.exit_code == 130 and len(calls) == 3
    assert len((out / DONE_FILE).read_text().splitlines()) == 2
    finished = [out / "strategy.name=fedavg" / f"seed{s}" / "summary.json" for s in (0, 1)]
    stamps = [p.stat().st_mtime_ns for p in finished]
    partial = out / "strategy.name=fedmedian" / "seed0"  # what a killed run leaves behind
    partial.mkdir(parents=True)
    (partial / "rounds.csv").write_text("round,virtual_time\r\n1,0.5\r\n")
    r = _sweep(str(config), *GRID, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "2 of 4 runs already finished" in r.output and "[run 2/2]" in r.output
    assert [p.stat().st_mtime_ns for p in finished] == stamps  # not rerun
    assert (partial / "summary.json").is_file() and len(read_csv(partial / "rounds.csv")) == 4
    assert _same_rows(ref, out)


def _same_rows(a: Path, b: Path) -> bool:
    ra, rb = read_csv(a / "sweep.csv"), read_csv(b / "sweep.csv")
    return [[r[k] for k in SAME] for r in ra] == [[r[k] for k in SAME] for r in rb]


def _row(job: int) -> dict[str, Any]:
    worker = os.environ.get("FL_SWEEP_WORKER")
    return {"job": job, "pid": os.getpid(), "worker": worker, "nan": math.nan, "none": None}


def test_run_jobs_keeps_the_jobs_order_and_records_them(tmp_path: Path) -> None:
    stream = io.StringIO()
    rows = run_jobs(_row, [3, 1, 2], 2, done_dir=tmp_path, stream=stream)
    assert [r["job"] for r in rows] == [3, 1, 2] and stream.getvalue().count("[run ") == 3
    assert all(r["pid"] != os.getpid() and r["worker"] == "1" for r in rows)  # in the pool
    assert len((tmp_path / DONE_FILE).read_text().splitlines()) == 3  # one line per run
    again = run_jobs(_row, [3, 1, 2, 5], 1, done_dir=tmp_path, stream=stream)
    assert [r["job"] for r in again] == [3, 1, 2, 5] and again[3]["pid"] == os.getpid()
    assert all(math.isnan(r["nan"]) and r["none"] is None for r in again)  # JSON round trip
    assert [r["pid"] for r in again[:3]] == [r["pid"] for r in rows]  # only job 5 ran
    assert "3 of 4 runs already finished" in stream.getvalue()
    assert job_key((1, "a", [2])) == job_key((1, "a", [2])) != job_key((1, "a", [3]))


def test_ray_is_imported_only_for_ray_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys, fl.cli, fl.experiment.sweep_grid\n"
        "from fl.experiment.sweep import run_jobs\n"
        "run_jobs(abs, [-1, 2], 1)\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(RuntimeError, match=r"--ray needs Ray: pip install -e '\.\[simulation\]'"):
        connect_ray(1)


def _bgmd(out: Path, *extra: str) -> list[tuple[str, bool, str]]:
    """simulations/bgmd/run.py on one tiny run (no attack, FedAvg, 2 rounds: ~2 s)."""
    bgmd = load_simulation("bgmd")
    tiny = [
        "--set",
        "rounds=2",
        "--set",
        "model.cnn_channels=[4, 4]",
        "--set",
        "evaluation.every=1",
    ]
    args = ["--quick", "--attacks", "none", "--aggregators", "mean", "--workers", "1", *tiny]
    result: list[tuple[str, bool, str]] = bgmd.main([*args, "--out", str(out), *extra])
    return result


def test_a_paper_script_resumes_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bgmd(tmp_path)
    run_csv = tmp_path / "none" / "mean" / "seed0" / "rounds.csv"
    first, stamp = (tmp_path / "summary.csv").read_text(), run_csv.stat().st_mtime_ns
    assert "[run 1/1]" in capsys.readouterr().err
    _bgmd(tmp_path, "--resume")  # the run finished: nothing runs, the same table
    err = capsys.readouterr().err
    assert "1 of 1 runs already finished" in err and "[run " not in err
    assert (tmp_path / "summary.csv").read_text() == first
    assert run_csv.stat().st_mtime_ns == stamp
    _bgmd(tmp_path)  # a plain rerun (say, after a code change): everything again
    assert "[run 1/1]" in capsys.readouterr().err and run_csv.stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_a_ray_sweep_gives_the_local_table_and_resumes(tmp_path: Path) -> None:
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray = pytest.importorskip("ray")
    config = _config(tmp_path)
    local = tmp_path / "local"
    assert _sweep(str(config), *GRID, "--out", str(local)).exit_code == 0
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        # each job is a Ray task, in a worker process marked as a sweep worker
        assert run_jobs(os.getenv, ["FL_SWEEP_WORKER"], 2, ray=True) == ["1"]  # type: ignore[arg-type]
        assert os.environ.get("FL_SWEEP_WORKER") is None
        out = tmp_path / "ray"
        r = _sweep(str(config), *GRID, "--out", str(out), "--ray", "--workers", "2")
        assert r.exit_code == 0, r.output
        assert _same_rows(local, out)
        # an interruption: the last run's record is lost, as if the sweep was killed in it
        lines = (out / DONE_FILE).read_text().splitlines()
        (out / DONE_FILE).write_text("\n".join(lines[:3]) + "\n")
        r = _sweep(str(config), *GRID, "--out", str(out), "--ray")
        assert r.exit_code == 0, r.output
        assert "3 of 4 runs already finished" in r.output and "[run 1/1]" in r.output
        assert _same_rows(local, out)
    finally:
        if started:
            ray.shutdown()
