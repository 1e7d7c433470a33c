"""`fl-sim`'s commands as a new user meets them: names, refusals, listings, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fl.experiment
from fl.cli import cli, default_run_name
from fl.data.config import DATASETS
from fl.experiment.config import ExperimentConfig, load_dict
from fl.experiment.reference import config_fields, default_config_toml, strategy_reference
from fl.strategies.registry import ASYNC_STRATEGIES, STRATEGIES

TINY = """\
name = "tiny"
num_nodes = 4
rounds = 1
[data]
name = "digits"
max_samples = 200
[model]
name = "logreg"
"""


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _run(tmp_path: Path, *args: str) -> Any:
    return _invoke("run", str(_config(tmp_path)), "--quiet", *args)


# ------------------------------------------------------------------------------ listings


def test_version_names_fl_flwr_and_torch() -> None:
    res = _invoke("--version")
    assert res.exit_code == 0
    line = res.stdout.strip()
    assert line.startswith(f"fl {version('fl')} ")
    assert f"flwr {version('flwr')}" in line and f"torch {version('torch')}" in line


def test_strategies_lists_every_registered_name_with_its_kind() -> None:
    res = _invoke("strategies")
    assert res.exit_code == 0
    first_words = {line.split()[0]: line for line in res.stdout.splitlines() if line[:1].strip()}
    for name in STRATEGIES:
        assert name in first_words, name
        kind = "async" if name in ASYNC_STRATEGIES else "sync"
        assert first_words[name].split()[1] == kind


def test_strategies_name_shows_options_types_defaults_and_meaning() -> None:
    res = _invoke("strategies", "bgmd")
    assert res.exit_code == 0
    out = res.stdout
    assert "beta : float = 0.1" in out and "block fraction" in out
    assert "weight_clip : float = 1.0" in out  # inherited from GeometricMedian
    assert "fraction_train" not in out  # managed by clients_per_round, not an option
    bad = _invoke("strategies", "fedsgdx")
    assert bad.exit_code == 2 and "unknown" in bad.stderr and "fedavg" in bad.stderr


def test_every_config_key_and_strategy_option_is_documented() -> None:
    """The reference (CLI and docs) is generated from the code: a field or option added without
    a doc would leave a hole in it, so this fails until it is documented."""
    fields = config_fields()
    assert len(fields) == len({f.dotted for f in fields}) > 60
    assert [f.dotted for f in fields if not f.doc] == []
    for info in strategy_reference():
        assert info.summary, info.name
        assert [o.name for o in info.options if not o.doc] == [], info.name


def test_config_defaults_is_complete_and_loads_back_to_the_defaults() -> None:
    res = _invoke("config", "--defaults")
    assert res.exit_code == 0
    tree = tomllib.loads(res.stdout)
    assert load_dict(tree) == ExperimentConfig()
    text = res.stdout
    for f in config_fields():  # every key appears, None-valued ones commented out
        prefix = "# " if f.default is None else ""
        assert f"\n{prefix}{f.key} =" in text, f.dotted
    assert text == default_config_toml()


def test_config_file_is_printed_resolved_with_overrides(tmp_path: Path) -> None:
    res = _invoke("config", str(_config(tmp_path)), "--set", "rounds=7")
    assert res.exit_code == 0
    tree = tomllib.loads(res.stdout)
    assert tree["rounds"] == 7 and tree["name"] == "tiny" and tree["train"]["lr"] == 0.1
    assert _invoke("config").exit_code == 2  # neither a file nor --defaults


def test_datasets_lists_the_offline_datasets() -> None:
    res = _invoke("datasets")
    assert res.exit_code == 0
    names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    assert set(DATASETS) <= set(names) and "hf:NAME" in names


# --------------------------------------------------------------------------- run folders


def test_default_run_name_says_what_was_set() -> None:
    assert default_run_name("fedavg", []) == "fedavg"
    assert default_run_name("fedavg", ["strategy.name=fedprox"]) == "fedavg+strategy.name=fedprox"
    assert default_run_name("fedavg", ["name=mine", "rounds=3"]) == "mine+rounds=3"
    assert default_run_name("x", ["output_dir=/tmp/y"]) == "x"
    assert default_run_name("x", ["model.hidden=[32, 16]"]) == "x+model.hidden=_32,_16_"


def test_run_name_and_default_name_reach_folder_and_summary(tmp_path: Path) -> None:
    base = ["--set", f"output_dir={tmp_path}"]
    res = _run(tmp_path, *base, "--set", "train.lr=0.2")
    assert res.exit_code == 0, res.output
    folder = tmp_path / "tiny+train.lr=0.2"
    assert json.loads((folder / "summary.json").read_text())["name"] == "tiny+train.lr=0.2"
    res = _run(tmp_path, *base, "--name", "mine")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "mine" / "summary.json").read_text())["name"] == "mine"
    assert _run(tmp_path, *base, "--name", "a/b").exit_code == 2


def test_existing_run_is_refused_then_overwritten_with_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, "--out", str(out)).exit_code == 0
    before = (out / "rounds.csv").read_bytes()
    (out / "checkpoint.pkl").write_bytes(b"stale")  # left by an earlier, longer run
    (out / "notes.txt").write_text("mine")  # not a run file: never removed
    res = _run(tmp_path, "--out", str(out), "--set", "train.lr=0.3")
    assert res.exit_code == 2
    assert "already holds a run" in res.stderr and "--force" in res.stderr
    assert (out / "rounds.csv").read_bytes() == before  # untouched
    res = _run(tmp_path, "--out", str(out), "--set", "train.lr=0.3", "--force")
    assert res.exit_code == 0, res.output
    assert (out / "rounds.csv").read_bytes() != before
    assert not (out / "checkpoint.pkl").exists()  # the stale checkpoint went with the old run
    assert (out / "notes.txt").read_text() == "mine"


def test_compare_and_plot_skip_entries_that_are_not_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for lr in ("0.1", "0.2"):
        res = _run(tmp_path, "--set", f"output_dir={runs}", "--set", f"train.lr={lr}")
        assert res.exit_code == 0, res.output
    (runs / "overlay.png").write_bytes(b"")  # what a glob also matches after `make demo`
    entries = sorted(str(p) for p in runs.iterdir())
    res = _invoke("compare", *entries)
    assert res.exit_code == 0, res.output
    assert "skipping" in res.stderr and "overlay.png" in res.stderr
    assert "tiny+train.lr=0.1" in res.stdout and "tiny+train.lr=0.2" in res.stdout
    res = _invoke("plot", *entries, "--out", str(tmp_path / "plots"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "plots" / "accuracy_vs_time.png").is_file()
    res = _invoke("compare", str(runs / "overlay.png"))
    assert res.exit_code == 2 and "none of the paths" in res.stderr


def test_ctrl_c_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(fl.experiment, "run_experiment", interrupted)
    assert _run(tmp_path, "--out", str(tmp_path / "out")).exit_code == 130


# --------------------------------------------------- errors in a real process, as users see them


def _real(tmp_path: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    args = [a for s in sets for a in ("--set", s)]
    cmd = [sys.executable, "-m", "fl.cli", "run", str(_config(tmp_path)), "--quiet", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    cmd += ["--out", str(tmp_path / "out")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    ("sets", "code", "needle"),
    [
        (("strategy.name=krum", 'strategy.options.num_malicious_nodes="abc"'), 2, "integer"),
        (("data.partition=shards", "data.classes_per_node=20"), 2, "classes_per_node=20"),
        (("faults.nan_prob=1.0",), 1, "RunFailedError"),
    ],
)
def test_errors_are_a_few_lines_on_stderr_with_the_right_code(
    tmp_path: Path, sets: tuple[str, ...], code: int, needle: str
) -> None:
    proc = _real(tmp_path, *sets)
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 5, proc.stderr[-2000:]
    assert lines[0].startswith("error: ") and needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stop_flower_stops_every_process_of_that_flwr_home_and_nothing_else(
    tmp_path: Path,
) -> None:
    """What `flwr run` leaves behind shares its FLWR_HOME (in the environment or the command
    line); each such process and its descendants go, processes of another home stay."""
    home, other = tmp_path / "home", tmp_path / "other"
    child = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", child], env={**os.environ, "FLWR_HOME": str(h)})
        for h in (home, other)
    ]
    try:
        import time

        time.sleep(1.0)  # let the children start
        from fl.flower.cleanup import flower_processes

        mine = flower_processes(home)
        assert procs[0].pid in mine and procs[1].pid not in mine
        res = _invoke("stop-flower", str(home))
        assert res.exit_code == 0 and res.stdout.startswith("stopped 2 process")
        procs[0].wait(timeout=15)  # terminated (reaped by the stopper: no exit code to read)
        assert procs[1].poll() is None  # the other home's process still runs
        assert flower_processes(home) == set()  # the grandchild went too
    finally:
        for p in procs:
            p.kill()
            p.wait()
        from fl.flower.cleanup import stop_flower

        stop_flower(other)


def test_timeline_command_writes_the_figure_and_refuses_a_non_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, "--out", str(out)).exit_code == 0
    res = _invoke("timeline", str(out), "--out", str(tmp_path / "tl"))
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == [str(tmp_path / "tl" / "timeline.png")]
    assert (tmp_path / "tl" / "timeline.png").stat().st_size > 10_000
    res = _invoke("timeline", str(tmp_path))
    assert res.exit_code == 2 and res.stderr.startswith("error: ")
    assert len(res.stderr.strip().splitlines()) == 1


def test_watch_command_reports_a_finished_run_and_refuses_a_non_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, "--out", str(out)).exit_code == 0
    res = _invoke("watch", str(out), "--once")
    assert res.exit_code == 0, res.output
    assert "finished" in res.stdout
    assert _invoke("watch", str(tmp_path / "nothing")).exit_code == 2
