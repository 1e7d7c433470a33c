"""The plots tell runs apart: labels from the configs' differences, one band per seed group,
target lines, the profiling period, readable axes, and `--report` redrawing without rerunning.

Assertions are on matplotlib's artists (lines, labels, collections), not on pixels. The runs
are tiny digits runs made here (a few seconds in all)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from fl.experiment import plots, run_experiment
from fl.experiment.config import load_dict
from fl.experiment.tables import write_csv


def tiny_tree(**top: Any) -> dict[str, Any]:
    """A two-round digits run on six nodes: enough rows for a curve, a second or so to run."""
    tree: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "num_nodes": 6,
        "rounds": 2,
        "data": {"name": "digits", "partition": "iid"},
        "model": {"name": "logreg"},
        "devices": {"kind": "tiers", "flops_per_s": 1e6},
        "train": {"steps": 2, "batch_size": 16, "lr": 0.1},
        "strategy": {"name": "fedavg", "clients_per_round": 3},
        "evaluation": {"target_accuracy": 0.5},
    }
    for key, value in top.items():
        if isinstance(value, dict):
            tree[key] = {**tree.get(key, {}), **value}
        else:
            tree[key] = value
    return tree


def tiny_run(out: Path, **top: Any) -> Path:
    """Run `tiny_tree(**top)` into `out`; return the results folder."""
    run_experiment(load_dict(tiny_tree(**top)), out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fedavg at lr 0.1 (seeds 0, 1, 2), fedavg at lr 0.2, fedprox (mu 0.1) at lr 0.1."""
    root = tmp_path_factory.mktemp("runs")
    out = {f"fedavg-s{s}": tiny_run(root / f"fedavg-s{s}", seed=s) for s in (0, 1, 2)}
    out["fedavg-lr"] = tiny_run(root / "fedavg-lr", train={"lr": 0.2})
    out["fedprox"] = tiny_run(
        root / "fedprox", strategy={"name": "fedprox", "options": {"proximal_mu": 0.1}}
    )
    return out


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Figure]]:
    """The figures `plot_runs` and the scripts draw, kept open instead of closed (for the test
    to inspect; clear the list before the call under test), and closed after the test."""
    close = plots.plt.close
    kept: list[Figure] = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def legend_texts(fig: Figure) -> list[str]:
    """The legend entries of the figure's first axes."""
    legend = fig.axes[0].get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_labels_name_the_strategy_and_the_keys_that_differ(
    runs: dict[str, Path], tmp_path: Path, figures: list[Figure]
) -> None:
    paths = plots.plot_runs(
        [runs["fedavg-s0"], runs["fedavg-lr"], runs["fedprox"]], tmp_path / "plots"
    )
    assert [p.name for p in paths] == ["accuracy_vs_time.png", "accuracy_vs_round.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    texts = legend_texts(figures[0])
    assert texts[0].startswith("fedavg: lr=0.1")
    assert texts[1].startswith("fedavg: lr=0.2")
    assert texts[2].startswith("fedprox: lr=0.1, proximal_mu=0.1")
    assert not any("seed" in t for t in texts)  # the seed is the same: it names nothing
    lines = [ln for ln in figures[0].axes[0].get_lines() if not ln.get_label().startswith("_")]
    styles = {(ln.get_color(), str(ln.get_linestyle()), ln.get_marker()) for ln in lines[:3]}
    assert len(styles) == 3  # every line looks different, so coinciding lines stay visible


def test_differing_keys_and_short_names() -> None:
    a = {"strategy.name": "tifl", "strategy.options.policy": "fast", "seed": 0, "name": "a"}
    b = {"strategy.name": "tifl", "strategy.options.policy": "adaptive", "seed": 1, "name": "b"}
    b["strategy.options.credit_fractions"] = [0.4, 0.6]
    assert plots.differing_keys([a, b]) == [
        "strategy.options.policy",
        "strategy.options.credit_fractions",
    ]
    assert plots.short_keys(["a.lr", "b.lr", "c.mu"]) == {
        "a.lr": "a.lr",
        "b.lr": "b.lr",
        "c.mu": "mu",
    }
    assert plots.format_value(3600.0) == "3600" and plots.format_value([0.4, 0.25]) == "[0.4, 0.25]"


def test_runs_that_differ_only_by_seed_are_one_line_with_a_band(
    runs: dict[str, Path], tmp_path: Path, figures: list[Figure]
) -> None:
    seeds = [runs[f"fedavg-s{s}"] for s in (0, 1, 2)]
    plots.plot_runs([*seeds, runs["fedavg-lr"]], tmp_path / "plots")
    ax = figures[0].axes[0]
    texts = legend_texts(figures[0])
    curves = [t for t in texts if not t.startswith("target")]
    assert len(curves) == 2  # three seeds → one line, plus the lr 0.2 run
    assert "mean ± sd of 3 seeds" in curves[0] and "seeds" not in curves[1]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # only the seed group has a band
    # The line is the mean of the seeds' curves, interpolated onto their common time grid.
    loaded = plots.load_runs(seeds)
    assert len(plots.group_runs(loaded)) == 1
    x, mean, sd = plots.mean_band(
        [plots.curve(r, "virtual_time", "central_accuracy") for r in loaded]
    )
    line = next(ln for ln in ax.get_lines() if ln.get_label() == texts[0])
    np.testing.assert_allclose(line.get_xdata(), x)
    np.testing.assert_allclose(line.get_ydata(), mean)
    assert sd is not None and sd.shape == mean.shape


def test_mean_band_interpolates_on_the_common_range_only() -> None:
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([0.0, 5.0, 15.0]), np.array([0.0, 1.0, 3.0]))
    x, mean, sd = plots.mean_band([a, b])
    np.testing.assert_allclose(x, [0.0, 5.0, 10.0, 15.0])  # no extrapolation past 15
    np.testing.assert_allclose(mean, [0.0, (0.5 + 1.0) / 2, (1.0 + 2.0) / 2, (1.5 + 3.0) / 2])
    assert sd is not None and sd[0] == 0.0 and sd[-1] == pytest.approx(np.std([1.5, 3.0], ddof=1))
    x1, _, sd1 = plots.mean_band([a])
    assert sd1 is None and (x1 == a[0]).all()


def test_a_target_line_is_drawn_only_when_the_target_is_positive(
    tmp_path: Path, figures: list[Figure]
) -> None:
    with_target = tiny_run(tmp_path / "t", rounds=1)
    without = tiny_run(tmp_path / "n", rounds=1, evaluation={"target_accuracy": 0.0})
    figures.clear()
    plots.plot_runs([with_target], tmp_path / "p1")
    plots.plot_runs([without], tmp_path / "p2")
    ax_t, ax_n = figures[0].axes[0], figures[2].axes[0]
    targets = [ln for ln in ax_t.get_lines() if ln.get_label().startswith("target accuracy")]
    assert len(targets) == 1 and set(targets[0].get_ydata()) == {0.5}
    assert not [ln for ln in ax_n.get_lines() if ln.get_label().startswith("target")]
    # Where the line first reaches the target is in its legend entry ("; 0.5 at ... s").
    assert any("; 0.5 " in t for t in legend_texts(figures[0]))


def test_time_axis_is_linear_and_log_ticks_are_plain_numbers(
    runs: dict[str, Path], tmp_path: Path, figures: list[Figure]
) -> None:
    plots.plot_runs([runs["fedavg-s0"]], tmp_path / "lin")
    assert figures[0].axes[0].get_xscale() == "linear"
    plots.plot_runs([runs["fedavg-s0"]], tmp_path / "log", log_time=True)
    ax = figures[2].axes[0]
    assert ax.get_xscale() == "log"
    fmt = ax.xaxis.get_major_formatter()
    assert fmt(10.0, 0) == "10" and fmt(15.0, 0) == "15"  # not 10¹ or 1.5×10¹


def test_profiling_is_shaded_and_the_curve_starts_after_it(
    tmp_path: Path, figures: list[Figure]
) -> None:
    rows = [
        {"round": 0, "virtual_time": 0.0, "central_accuracy": 0.1},
        {"round": 1, "virtual_time": 150.0, "central_accuracy": 0.6, "profiling_time": 140.0},
        {"round": 2, "virtual_time": 160.0, "central_accuracy": 0.7, "profiling_time": 140.0},
    ]
    run = plots.Run(tmp_path, {"strategy.name": "tifl"}, rows)
    x, _ = plots.curve(run, "virtual_time", "central_accuracy")
    assert list(x) == [150.0, 160.0]  # no straight line from t = 0 across profiling
    x, _ = plots.curve(run, "round", "central_accuracy")
    assert list(x) == [0.0, 1.0, 2.0]
    fig, ax = plots.plt.subplots()
    plots.draw_panel(ax, [[run]], ["tifl"], "virtual_time")
    spans = [p for p in ax.patches if p.get_label().startswith("profiling")]
    plots.plt.close(fig)
    assert len(spans) == 1 and spans[0].get_x() == 0.0 and spans[0].get_width() == 140.0


def test_quickstart_report_redraws_from_existing_results(
    tmp_path: Path, figures: list[Figure], capsys: pytest.CaptureFixture[str]
) -> None:
    """`simulations/quickstart/run.py --report` draws the overlay of the runs already in OUT,
    without running anything (the run folders are left as they were)."""
    from conftest import load_simulation

    out = tmp_path / "quickstart"
    tiny_run(out / "fedavg-wait", name="fedavg-wait", round_timeout_s=3600.0)
    tiny_run(out / "fedavg", name="fedavg", round_timeout_s=60.0)
    tiny_run(out / "fedprox", name="fedprox", round_timeout_s=60.0,
             strategy={"name": "fedprox", "options": {"proximal_mu": 0.1}})  # fmt: skip
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*") if p.suffix != ".png"}
    figures.clear()
    paths = load_simulation("quickstart").main(["--report", "--out", str(out)])
    assert paths == [out / "accuracy_vs_time.png", out / "accuracy_vs_round.png"]
    assert all(p.is_file() for p in paths)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing was rerun
    texts = legend_texts(figures[0])
    assert texts[0].startswith("fedavg: round_timeout_s=3600")
    assert texts[1].startswith("fedavg: round_timeout_s=60")
    assert texts[2].startswith("fedprox: round_timeout_s=60, proximal_mu=0.1")
    printed = capsys.readouterr().out
    for name in ("fedavg-wait", "fedavg", "fedprox"):
        s = json.loads((out / name / "summary.json").read_text())
        assert f"{s['final_accuracy']:9.4f}" in printed


def test_bgmd_report_draws_one_panel_per_attack(tmp_path: Path, figures: list[Figure]) -> None:
    """`simulations/bgmd/run.py --report` from a summary.csv alone: one panel per attack, one
    marker per aggregator, error bars over seeds, chance and the GM target as lines."""
    from conftest import load_simulation

    bgmd = load_simulation("bgmd")
    attacks, aggregators = ["none", "bitflip-20", "additive-40"], ["mean", "gm", "bgmd"]
    rows = [
        {"attack": a, "aggregator": g, "seed": s, "final_accuracy": 0.1 + 0.1 * i + 0.01 * s,
         "aggregation_s": 0.01 + 0.001 * i, "wall_s": 1.0}
        for a in attacks for i, g in enumerate(aggregators) for s in (0, 1, 2)
    ]  # fmt: skip
    write_csv(tmp_path / "summary.csv", rows)
    argv = ["--report", "--out", str(tmp_path), "--attacks", *attacks]
    bgmd.main([*argv, "--aggregators", *aggregators])
    assert (tmp_path / "accuracy_vs_aggregation_time.png").is_file()
    assert (tmp_path / "table.md").read_text().startswith("| attack | mean | gm | bgmd |")
    scatter = figures[0]
    panels = [ax for ax in scatter.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [
        "no attack",
        "bit flip ×(−5), 20 % of nodes",
        "additive N(0, 10²), 40 % of nodes",
    ]
    for ax in panels:
        assert len(ax.containers) == len(aggregators)  # one error bar per aggregator
        assert ax.get_xscale() == "linear"
    labels = [t.get_text() for t in scatter.legends[0].get_texts()]
    assert labels == [*aggregators, "chance (10 %)", "target: clean GM − 2 points"]
