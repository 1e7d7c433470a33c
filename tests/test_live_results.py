"""Live results: rounds.csv, messages.csv and status.json kept current while a run goes (a run
killed after round k keeps rows 1..k), the same final files as the end-of-run writer, `watch_run`,
progress that suits a log file, Ctrl-C, resume, Flower's logger, sweep progress lines."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import fl.experiment.sweep
import fl.loops.synchronous
from fl.experiment import resume_experiment, run_experiment
from fl.experiment.config import ExperimentConfig, load_dict
from fl.experiment.live import LiveRounds, Monitor, read_status
from fl.experiment.progress import Pace, ProgressBar, format_duration
from fl.experiment.results import MESSAGE_COLUMNS
from fl.experiment.sweep import job_label, run_jobs
from fl.experiment.tables import read_complete_rows, read_csv
from fl.experiment.watch import watch_run
from fl.loops.checkpoint import CHECKPOINT_FILE, load
from fl.schema import to_toml

WALL = {"wall_time", "aggregation_wall_s", "rule_wall_s"}  # differ from run to run
ROUNDS = 40


def _cfg(strategy: str = "fedavg", rounds: int = ROUNDS, **top: Any) -> ExperimentConfig:
    """A run of a few milliseconds a round on digits."""
    tree: dict[str, Any] = {
        "name": f"live-{strategy}",
        "seed": 3,
        "num_nodes": 10,
        "rounds": rounds,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "devices": {"kind": "tiers", "flops_per_s": 1e7, "compute_jitter": 0.3},
        "train": {"steps": 2, "batch_size": 16, "lr": 0.1},
        "strategy": {"name": strategy, "clients_per_round": 4},
    }
    if strategy == "adasgd":
        tree["strategy"]["options"] = {"buffer_size": 2}
        tree["evaluation"] = {"every": 3}  # rows with and without the central columns
    tree.update(top)
    return load_dict(tree)


def _old_write_csv(path: Path, rows: list[dict[str, Any]], columns: Any = None) -> None:
    """The end-of-run writer as it was before tables were live (the reference for bytes)."""
    cols: list[str] = list(columns) if columns is not None else []
    if columns is None:
        for row in rows:
            cols.extend(k for k in row if k not in cols)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without wall-clock columns, and without empty cells (a live table's header may
    lack a column a later row brings: then its cells are missing, not empty)."""
    return [{k: v for k, v in r.items() if k not in WALL and v != ""} for r in rows]


def _model(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt")


@dataclass
class Killed:
    """The uninterrupted run, and the same run killed by SIGKILL while a watcher followed it."""

    reference: Path
    out: Path
    returncode: int | None
    watched: list[int]
    watch_text: io.StringIO


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """Start the run in a subprocess, SIGKILL it after round 5 (from a thread, while a second
    thread watches it and this one runs the uninterrupted reference meanwhile)."""
    base = tmp_path_factory.mktemp("live")
    config, out = base / "cfg.toml", base / "killed"
    config.write_text(to_toml(_cfg(checkpoint_every=3).to_dict()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fl.cli", "run", str(config), "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    result = Killed(base / "ref", out, None, [], io.StringIO())
    deadline = time.monotonic() + 240

    def kill_after_round_5() -> None:
        while time.monotonic() < deadline and proc.poll() is None:
            rows = read_complete_rows(out / "rounds.csv")
            if rows and int(rows[-1]["round"]) >= 5:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.003)
        result.returncode = proc.wait()

    def watch() -> None:
        while not (out / "status.json").is_file() and proc.poll() is None:
            time.sleep(0.003)
        result.watched.append(watch_run(out, interval_s=0.02, out=result.watch_text))

    threads = [threading.Thread(target=kill_after_round_5), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    run_experiment(_cfg(checkpoint_every=3), result.reference)
    for t in threads:
        t.join(300)
    return result


@pytest.fixture(scope="module")
def reference(killed: Killed) -> Path:
    """The uninterrupted synchronous run (checkpoints every 3 rounds)."""
    return killed.reference


# ------------------------------------------------------------------ SIGKILL, watch, resume
def test_sigkill_keeps_rows_1_to_k_and_resume_ends_with_identical_files(
    killed: Killed, capsys: pytest.CaptureFixture[str]
) -> None:
    out, reference = killed.out, killed.reference
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    # rounds.csv: complete, parseable rows 0..k, equal to the uninterrupted run's first ones
    text = (out / "rounds.csv").read_bytes()
    assert text.endswith(b"\r\n")
    live = read_csv(out / "rounds.csv")
    k = int(live[-1]["round"])
    assert k >= 5 and [int(r["round"]) for r in live] == list(range(k + 1))
    full = read_csv(reference / "rounds.csv")
    assert _strip(live) == _strip(full[: k + 1])
    # messages.csv: complete rows, each the uninterrupted run's row of that message
    assert (out / "messages.csv").read_bytes().endswith(b"\r\n")
    msgs = read_csv(out / "messages.csv")
    by_id = {m["message_id"]: m for m in read_csv(reference / "messages.csv")}
    assert len(msgs) >= 4 * k and len({m["message_id"] for m in msgs}) == len(msgs)
    assert all(m == by_id[m["message_id"]] for m in msgs)
    # the status still says running, but its process is gone: the watcher said so
    assert read_status(out)["state"] == "running"  # type: ignore[index]
    said = killed.watch_text.getvalue()
    assert killed.watched == [1], said
    assert "gone without finishing" in said and "fl-sim resume" in said
    assert f"round {k}/{ROUNDS}" in said
    assert watch_run(out, once=True, out=io.StringIO()) == 1

    # resume: the message, the live table restarted at the checkpoint, identical final files
    n = int(load(out / CHECKPOINT_FILE).loop.rows[-1]["round"])
    assert 0 < n <= k
    first_rows: list[list[int]] = []
    on_row = Monitor.on_row

    def spy(self: Monitor, row: dict[str, Any]) -> None:
        on_row(self, row)
        if not first_rows:
            first_rows.append([int(r["round"]) for r in read_csv(out / "rounds.csv")])

    capsys.readouterr()
    mp = pytest.MonkeyPatch()
    mp.setattr(Monitor, "on_row", spy)
    try:
        resume_experiment(out, progress=True)
    finally:
        mp.undo()
    err = capsys.readouterr().err
    assert f"resuming from round {n} of {ROUNDS}" in err
    assert f"round {ROUNDS}/{ROUNDS}" in err
    assert first_rows == [list(range(n + 2))]  # rows after the checkpoint were dropped
    assert _strip(read_csv(out / "rounds.csv")) == _strip(full)
    assert (out / "messages.csv").read_bytes() == (reference / "messages.csv").read_bytes()
    ma, mb = _model(out), _model(reference)
    assert all(torch.equal(ma[key], mb[key]) for key in mb)
    assert read_status(out)["state"] == "finished"  # type: ignore[index]


def test_watch_run_on_a_finished_run_prints_round_lines_and_returns_0(reference: Path) -> None:
    buf = io.StringIO()
    assert watch_run(reference, out=buf) == 0
    lines = buf.getvalue().splitlines()
    assert f"round {ROUNDS}/{ROUNDS} (100%)" in lines[1] and "acc 0." in lines[1]
    assert lines[-1].startswith(f"finished: round {ROUNDS}/{ROUNDS}")


def test_watch_run_follows_a_running_run_to_the_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    errors: list[BaseException] = []

    def go() -> None:
        try:
            run_experiment(_cfg(rounds=30), out)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    runner = threading.Thread(target=go)
    runner.start()
    while not (out / "status.json").is_file() and runner.is_alive():
        time.sleep(0.002)
    buf = io.StringIO()
    code = watch_run(out, interval_s=0.01, out=buf)
    runner.join()
    assert not errors and code == 0
    rounds = [
        int(line.split()[1].split("/")[0])
        for line in buf.getvalue().splitlines()
        if line.startswith("round ")
    ]
    assert len(rounds) >= 2 and rounds == sorted(set(rounds)) and rounds[-1] == 30
    assert "ETA" in buf.getvalue() and "finished: round 30/30" in buf.getvalue()


def test_watch_run_on_something_else_returns_2(tmp_path: Path) -> None:
    assert watch_run(tmp_path / "missing", out=io.StringIO()) == 2
    (tmp_path / "empty").mkdir()
    assert watch_run(tmp_path / "empty", out=io.StringIO()) == 2


# ------------------------------------------------------------------ final files, live tables
def test_async_live_tables_after_each_update_are_what_a_kill_would_keep(tmp_path: Path) -> None:
    """After every row the live rounds.csv is the end-of-run writer's table of the rows so far
    (byte for byte), and messages.csv holds complete rows of settled messages; the final files
    are the end-of-run writer's."""
    snapshots: list[tuple[list[dict[str, Any]], bytes, bytes]] = []
    on_row = Monitor.on_row

    def spy(self: Monitor, row: dict[str, Any]) -> None:
        on_row(self, row)
        assert self.rounds is not None
        out = tmp_path / "run"
        snapshots.append(
            (
                list(self.rounds.rows),
                (out / "rounds.csv").read_bytes(),
                (out / "messages.csv").read_bytes(),
            )
        )

    mp = pytest.MonkeyPatch()
    mp.setattr(Monitor, "on_row", spy)
    try:
        run = run_experiment(_cfg("adasgd", rounds=40), tmp_path / "run")
    finally:
        mp.undo()
    out = tmp_path / "run"
    assert len(snapshots) == 41  # row 0 and one per model update
    old = tmp_path / "old.csv"
    final = read_csv(out / "rounds.csv")
    final_msgs = {m["message_id"]: m for m in read_csv(out / "messages.csv")}
    for rows, rounds_bytes, messages_bytes in snapshots:
        _old_write_csv(old, rows)
        assert rounds_bytes == old.read_bytes()
        kept = list(csv.DictReader(io.StringIO(rounds_bytes.decode(), newline="")))
        assert len(kept) == len(rows)
        assert _strip(read_csv_text(rounds_bytes)) == _strip(final[: len(rows)])
        assert messages_bytes.endswith(b"\r\n")
        for m in read_csv_text(messages_bytes):
            assert m == final_msgs[m["message_id"]]
    # the end-of-run writer's files, byte for byte
    _old_write_csv(old, run.rows)
    assert (out / "rounds.csv").read_bytes() == old.read_bytes()
    outcomes = sorted(run.grid.outcomes.values(), key=lambda o: o.seq)  # type: ignore[attr-defined]
    _old_write_csv(old, [vars(o) for o in outcomes], MESSAGE_COLUMNS)
    assert (out / "messages.csv").read_bytes() == old.read_bytes()
    assert snapshots[-1][1] == (out / "rounds.csv").read_bytes()  # the last row was evaluated
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["unit"] == "update"
    assert status["round"] == 40 and status["pid"] == os.getpid()


def read_csv_text(data: bytes) -> list[dict[str, Any]]:
    """`read_csv` of a file's bytes."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"live-{os.getpid()}.csv"
    path.write_bytes(data)
    try:
        return read_csv(path)
    finally:
        path.unlink()


def test_live_rounds_rewrites_on_a_new_column_and_readers_skip_a_torn_row(
    tmp_path: Path,
) -> None:
    path, old = tmp_path / "rounds.csv", tmp_path / "old.csv"
    live = LiveRounds(path)
    assert path.read_bytes() == b""
    rows: list[dict[str, Any]] = [
        {"round": 0, "acc": 0.1},
        {"round": 1, "x": "a, b", "acc": 0.25},
        {"round": 2, "x": "line\nbreak"},
        {"round": 3, "y": 1.0, "acc": float("nan")},
    ]
    for i, row in enumerate(rows):
        live.add(row)
        _old_write_csv(old, rows[: i + 1])
        assert path.read_bytes() == old.read_bytes()
    live.close()
    with path.open("ab") as fh:
        fh.write(b"4,half a ro")  # a row torn mid-write
    assert [r["round"] for r in read_complete_rows(path)] == [0, 1, 2, 3]


# ------------------------------------------------------------------ progress, Ctrl-C
def test_progress_off_a_terminal_is_a_line_per_tenth_of_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_experiment(_cfg(rounds=40), progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "round " in line]
    assert [line.split()[2] for line in lines] == [f"{4 * i}/40" for i in range(1, 11)], err
    assert "\r" not in err and "ETA" in lines[0]
    run_experiment(_cfg(rounds=4), progress=True)  # a short run: every round
    lines = [line for line in capsys.readouterr().err.splitlines() if "round " in line]
    assert [line.split()[2] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_starts_where_a_resumed_run_does() -> None:
    stream = _Terminal()
    bar = ProgressBar("x", Pace(40, start_done=12), "round", stream)
    assert bar.bar is not None and bar.bar.n == 12
    bar({"round": 13, "virtual_time": 5.0, "central_accuracy": 0.5})
    assert bar.bar.n == 13
    bar.close()
    assert Pace(40, start_done=10, start_wall=5.0).eta(20, 0.0, 15.0) == pytest.approx(20.0)
    assert Pace(10, budget=100.0).fraction(2, 50.0) == 0.5
    assert format_duration(4.2) == "4.2 s" and format_duration(250) == "4 min 10 s"


@pytest.mark.parametrize("checkpoint_every", [0, 2])
def test_ctrl_c_keeps_the_rows_marks_interrupted_and_says_how_to_go_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    checkpoint_every: int,
) -> None:
    split = fl.loops.synchronous.split_replies
    calls: list[int] = []

    def interrupt_round_4(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return split(*args, **kwargs)

    monkeypatch.setattr(fl.loops.synchronous, "split_replies", interrupt_round_4)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_cfg(rounds=10, checkpoint_every=checkpoint_every), out)
    err = capsys.readouterr().err
    assert [r["round"] for r in read_csv(out / "rounds.csv")] == [0, 1, 2, 3]
    assert len(read_csv(out / "messages.csv")) == 16  # 4 a round; round 4's settled too
    status = read_status(out)
    assert status is not None and status["state"] == "interrupted" and status["round"] == 3
    if checkpoint_every:
        assert f"fl-sim resume {out}" in err and "checkpoint is at round 2" in err
        monkeypatch.undo()
        resume_experiment(out)
        assert [r["round"] for r in read_csv(out / "rounds.csv")] == list(range(11))
    else:
        assert "checkpoint_every was 0" in err and "rounds 1..3 are kept" in err
    assert watch_run(out, once=True, out=io.StringIO()) == (0 if checkpoint_every else 1)


# ------------------------------------------------------------------ Flower's logger
def test_flower_logger_is_restored_after_a_run_and_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flwr = logging.getLogger("flwr")
    handler, flt = logging.NullHandler(), logging.Filter("keep")
    saved = flwr.level
    flwr.setLevel(logging.DEBUG)
    flwr.addHandler(handler)
    flwr.addFilter(flt)
    before = (list(flwr.handlers), list(flwr.filters), flwr.propagate)
    split = fl.loops.synchronous.split_replies
    seen: list[int] = []

    def record_level(*args: Any, **kwargs: Any) -> Any:
        seen.append(flwr.level)
        flwr.addFilter(logging.Filter("a stray one"))  # changed during the run...
        return split(*args, **kwargs)

    try:
        monkeypatch.setattr(fl.loops.synchronous, "split_replies", record_level)
        run_experiment(_cfg(rounds=2))
        assert seen and set(seen) == {logging.WARNING}  # quiet while it ran
        assert flwr.level == logging.DEBUG  # ...and restored after it
        assert (list(flwr.handlers), list(flwr.filters), flwr.propagate) == before

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

        monkeypatch.setattr(fl.loops.synchronous, "split_replies", fail)
        with pytest.raises(RuntimeError, match="boom"):
            run_experiment(_cfg(rounds=2), quiet_flower=True)
        assert flwr.level == logging.DEBUG
        assert (list(flwr.handlers), list(flwr.filters), flwr.propagate) == before
    finally:
        flwr.setLevel(saved)
        flwr.removeHandler(handler)
        flwr.removeFilter(flt)


def test_a_failed_run_says_so_in_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(fl.loops.synchronous, "split_replies", fail)
    with pytest.raises(RuntimeError):
        run_experiment(_cfg(rounds=3), tmp_path)
    status = read_status(tmp_path)
    assert status is not None and status["state"] == "failed"
    assert status["error"] == "RuntimeError: boom"
    buf = io.StringIO()
    assert watch_run(tmp_path, out=buf) == 1 and "boom" in buf.getvalue()


# ------------------------------------------------------------------ sweeps
def _slow_row(job: dict[str, Any]) -> dict[str, Any]:
    time.sleep(job["sleep"])
    return {"name": job["name"]}


def test_run_jobs_prints_a_line_per_finished_run_and_keeps_the_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = [{"name": f"job{i}", "sleep": 0.03 * (3 - i)} for i in range(3)]
    buf = io.StringIO()
    assert run_jobs(_slow_row, jobs, 1, stream=buf) == [{"name": f"job{i}"} for i in range(3)]
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[run 1/3] job0 done in ") and ", ETA " in lines[0]
    assert lines[2].startswith("[run 3/3] job2 done in ") and lines[2].endswith("all done")
    # the pool path: runs finish in another order, the results keep the jobs' order
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(
        fl.experiment.sweep, "ProcessPoolExecutor", lambda n, mp_context: ThreadPoolExecutor(n)
    )
    buf = io.StringIO()
    assert run_jobs(_slow_row, jobs, 3, stream=buf) == [{"name": f"job{i}"} for i in range(3)]
    lines = buf.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["job2", "job1", "job0"]
    assert job_label(("iid", "fedavg", 0, ["--x"], "/out")) == "iid fedavg 0"


def test_status_file_is_json_without_nan(tmp_path: Path) -> None:
    monitor = Monitor(_cfg(rounds=5), tmp_path, unit="round", progress=False)
    status = read_status(tmp_path)
    assert status is not None and status["state"] == "running" and status["round"] == 0
    assert monitor.status is not None
    monitor.status.row({"round": 1, "virtual_time": 2.0, "central_accuracy": float("nan")})
    monitor.status.update()
    text = (tmp_path / "status.json").read_text()
    assert "NaN" not in text and json.loads(text)["last_accuracy"] is None
