"""The timeline of a results folder (fl.experiment.timeline): small digits runs, drawn."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest

from fl.experiment import run_experiment
from fl.experiment.config import load_dict
from fl.experiment.timeline import render_timeline
from fl.experiment.timeline_data import categories, load_run, mark_category, update_staleness
from fl.experiment.timeline_gantt import GanttInfo, busy_fraction, gantt_figure

BASE: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "digits", "partition": "iid"},
    "model": {"name": "logreg"},
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.1},
    "evaluation": {"every": 100},
}


def _run(root: Path, name: str, **tree: Any) -> Path:
    cfg = load_dict({**BASE, "name": name, **tree})
    run_experiment(cfg, root / name)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synchronous run that loses messages every way the grid can, an asynchronous one with a
    straggler, and a TiFL one (each a few seconds)."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "sync": _run(
            root,
            "faulty",
            num_nodes=16,
            rounds=4,
            round_timeout_s=20.0,
            devices={
                "kind": "tiers",
                "flops_per_s": 1e4,
                "availability": "onoff",
                "mean_online_s": 60.0,
                "mean_offline_s": 30.0,
                "failure_prob": 0.15,
            },
            strategy={"name": "fedavg", "clients_per_round": 8},
            evaluation={"every": 100, "federated": True},
            faults={"crash_prob": 0.1},
        ),
        "async": _run(
            root,
            "async",
            num_nodes=6,
            rounds=60,
            devices={"kind": "uniform", "flops_per_s": 1e6, "stragglers": [-1]},
            train={"steps": 1, "batch_size": 16, "lr": 0.05},
            strategy={"name": "asyncsgd", "clients_per_round": 4},
        ),
        "tifl": _run(
            root,
            "tifl",
            num_nodes=12,
            rounds=5,
            round_timeout_s=1e6,
            devices={"kind": "tiers", "flops_per_s": 1e5},
            strategy={
                "name": "tifl",
                "clients_per_round": 2,
                "options": {"num_tiers": 3, "profiling_rounds": 1, "policy": "uniform"},
            },
        ),
    }


def _statuses(folder: Path) -> Counter[str]:
    with (folder / "messages.csv").open(newline="") as fh:
        return Counter(r["status"] for r in csv.DictReader(fh))


def _marks_drawn(fig: plt.Figure) -> Counter[str]:
    """Marks per category, read from the figure's scatter artists (gid status:<category>)."""
    out: Counter[str] = Counter()
    for ax in fig.axes:
        for coll in ax.collections:
            gid = coll.get_gid() or ""
            if gid.startswith("status:"):
                out[gid.removeprefix("status:")] += len(np.asarray(coll.get_offsets()))
    return out


def _check_drawn(folder: Path, fig: plt.Figure, info: GanttInfo) -> None:
    """Every message is drawn once, and each non-replied one gets the mark of its status."""
    data = load_run(folder)
    assert info.drawn == _statuses(folder)
    cats = Counter(c for c in categories(data) if c)
    assert _marks_drawn(fig) == cats


def test_sync_gantt_has_one_row_per_node_and_every_status_marked(runs: dict[str, Path]) -> None:
    folder = runs["sync"]
    statuses = _statuses(folder)
    # the run exercises the marks: deadline, lost (offline or failed), client error
    assert statuses["replied"] and statuses["client-error"]
    assert statuses["lost-offline"] + statuses["lost-failed"] + statuses["deadline"] > 0
    data = load_run(folder)
    fig, info = gantt_figure(data)
    assert not info.aggregated
    assert info.rows == [str(n) for n in data.nodes]
    assert sorted(int(r) for r in info.rows) == list(range(1001, 1017))  # every node, once
    ax = next(a for a in fig.axes if a.get_xlabel() == "virtual time (s)")
    assert len(ax.get_yticks()) == 16  # one tick per row: the figure has exactly 16 rows
    assert data.offline  # onoff devices: offline periods rebuilt from config.toml
    _check_drawn(folder, fig, info)
    plt.close(fig)
    out = folder / "timeline"
    assert render_timeline(folder, out) == [out / "timeline.png"]
    assert (out / "timeline.png").stat().st_size > 10_000


def test_lost_offline_messages_meet_a_rebuilt_offline_period(runs: dict[str, Path]) -> None:
    data = load_run(runs["sync"])
    m = data.messages
    for i in np.flatnonzero(m.status == "lost-offline"):
        spans = data.offline[int(m.node[i])]
        assert any(a <= m.finish[i] and b >= m.sent[i] for a, b in spans), m.message_id[i]


def test_async_run_renders_staleness_that_matches_rounds_csv(runs: dict[str, Path]) -> None:
    folder = runs["async"]
    data = load_run(folder)
    st = update_staleness(data)
    assert st is not None and data.asynchronous
    assert st.windows == 60 and st.windows_checked == st.windows
    assert len(st.tau) == 60 and st.tau.min() >= 0
    assert st.tau[st.node == 1006].mean() > st.tau[st.node != 1006].mean()  # the straggler
    fig, info = gantt_figure(data)
    assert len(info.rows) == 6
    _check_drawn(folder, fig, info)
    plt.close(fig)
    written = render_timeline(folder)
    assert [p.name for p in written] == ["timeline.png", "staleness.png"]
    assert all(p.parent == folder for p in written)


def test_tifl_run_renders_tiers_and_one_row_per_tier_when_aggregated(
    runs: dict[str, Path],
) -> None:
    folder = runs["tifl"]
    data = load_run(folder)
    assert data.tiers is not None and data.tiers.num_tiers == 3
    assert "consistent with the selections" in data.tiers.note
    assert sorted(Counter(data.tiers.member.values()).values()) == [4, 4, 4]
    fig, info = gantt_figure(data, aggregate_above=5)
    assert info.aggregated
    assert info.rows == ["tier 0 · 4 nodes", "tier 1 · 4 nodes", "tier 2 · 4 nodes"]
    ax = next(a for a in fig.axes if a.get_xlabel() == "virtual time (s)")
    assert len(ax.get_yticks()) == 3
    _check_drawn(folder, fig, info)
    plt.close(fig)
    written = render_timeline(folder, folder / "out", aggregate_above=5)
    assert [p.name for p in written] == ["timeline.png", "tiers.png"]


def test_aggregated_sync_rows_are_device_groups(runs: dict[str, Path]) -> None:
    data = load_run(runs["sync"], aggregate_above=4)
    fig, info = gantt_figure(data, aggregate_above=4)
    assert info.aggregated and len(info.rows) == 5  # the five TiFL resource groups
    assert sum(int(r.split(" · ")[1].split()[0]) for r in info.rows) == 16
    plt.close(fig)


def test_not_a_results_folder_raises_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such results folder") as missing:
        render_timeline(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"not a results folder \(no messages.csv\)") as e:
        render_timeline(tmp_path)
    (tmp_path / "messages.csv").write_text("message_id,node_id,status\n")
    (tmp_path / "rounds.csv").write_text("round,virtual_time\n")
    (tmp_path / "config.toml").write_text('name = "x"\n')
    with pytest.raises(ValueError, match="has no messages") as empty:
        render_timeline(tmp_path)
    for err in (missing, e, empty):
        assert "\n" not in str(err.value)


def test_html_is_written_when_plotly_is_installed(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    written = render_timeline(runs["async"], tmp_path, html=True)
    page = tmp_path / "timeline.html"
    assert written[-1] == page
    text = page.read_text()
    assert "Plotly.newPlot" in text and "Staleness of each applied update" in text


def test_html_without_plotly_names_the_extra(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(ImportError, match=r'pip install "fl\[viz\]"'):
        render_timeline(runs["sync"], tmp_path, html=True)
    assert not list(tmp_path.iterdir())  # failed before drawing anything


def test_busy_fraction_integrates_intervals() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    frac = busy_fraction(np.array([0.0, 0.5]), np.array([2.0, 1.0]), edges, size=2)
    np.testing.assert_allclose(frac, [0.75, 0.5, 0.0])


@pytest.mark.parametrize(
    ("status", "error", "asynchronous", "category"),
    [
        ("replied", "", False, None),
        ("deadline", "", False, "deadline"),
        ("deadline", "", True, "abandoned"),
        ("expired", "lost-offline: device went offline before replying", False, "offline"),
        ("expired", "lost-ttl: reply would arrive after the message TTL", False, "lost"),
        ("lost-failed", "lost-failed: device failed during the task", False, "failed"),
        ("client-error", "InjectedCrash", False, "error"),
    ],
)
def test_mark_category(status: str, error: str, asynchronous: bool, category: str | None) -> None:
    assert mark_category(status, error, asynchronous) == category
