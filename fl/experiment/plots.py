"""Plots of one or several results folders: a metric against virtual time and against rounds.

What the figures are for is telling runs apart, so:

- each line is named by its strategy and by the config keys that differ between the runs'
  resolved configs (``config.toml``), not by the run's `name`, which is often the same;
- runs whose configs differ only by `seed` are one line: the mean over seeds, with a band of
  ± one standard deviation (the curves interpolated onto a common grid first);
- every line has its own colour, line style and marker (markers staggered along the lines), so
  lines that coincide stay visible;
- `evaluation.target_accuracy` > 0 draws a dashed target line on accuracy plots;
- TiFL's profiling period (``profiling_time`` in ``rounds.csv``) is shaded, and a curve starts
  at its first evaluation after profiling instead of drawing a straight line across it;
- the time axis is linear; `log_time` gives a log axis with labelled ticks in plain numbers.

The pieces (`load_runs`, `group_runs`, `line_labels`, `draw_lines`, ...) are public so the
simulation scripts draw their own panels with the same conventions.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fl.experiment.tables import read_csv

# Keys that never name a line: `seed` is what a band summarises, `name` is free text, and the
# output folder says where a run went, not what it did.
UNLABELLED_KEYS = frozenset({"name", "seed", "output_dir"})
COLORS = [f"C{i}" for i in range(10)]
LINESTYLES: list[Any] = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (3, 1))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
BAND_ALPHA = 0.18
TARGET_STYLE: dict[str, Any] = {"color": "0.3", "ls": (0, (6, 3)), "lw": 1.0, "zorder": 1.5}
# Legend entries of reference lines and shading, listed after the data's entries.
REFERENCE_LABELS = ("target", "chance", "profiling")


@dataclass(frozen=True)
class Style:
    """How one line is drawn: colour, line style, marker, and whether the marker is filled."""

    color: str
    linestyle: Any
    marker: str
    filled: bool = True


def style(i: int) -> Style:
    """The i-th line's style. Colour, line style and marker cycle with periods 10, 6 and 7 (the
    first 7 markers), so no two of the first 210 lines look alike; every other line has hollow
    markers."""
    return Style(COLORS[i % 10], LINESTYLES[i % len(LINESTYLES)], MARKERS[i % 7], i % 2 == 0)


@dataclass
class Run:
    """One results folder: its flattened resolved config and its round table."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def strategy(self) -> str:
        """The config's strategy name ("?" if the folder has no config.toml)."""
        return str(self.config.get("strategy.name", "?"))

    @property
    def seed(self) -> Any:
        """The config's seed (None if unknown)."""
        return self.config.get("seed")

    @property
    def target(self) -> float:
        """`evaluation.target_accuracy` (0: none)."""
        return float(self.config.get("evaluation.target_accuracy", 0.0) or 0.0)

    @property
    def profiling_time(self) -> float:
        """Virtual seconds spent profiling before the first training round (TiFL; else 0)."""
        times = [r.get("profiling_time") for r in self.rows]
        vals = [float(t) for t in times if isinstance(t, int | float)]
        return max(vals, default=0.0)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: {"strategy": {"name": "x"}} → {"strategy.name": "x"}.
    An empty table is dropped, so "options = {}" and no options at all compare equal."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, full + "."))
        elif not (isinstance(value, Mapping) and not value):
            out[full] = value
    return out


def load_run(path: Path | str) -> Run:
    """Read a results folder's config.toml (if any) and rounds.csv."""
    path = Path(path)
    cfg_file = path / "config.toml"
    config = flatten(tomllib.loads(cfg_file.read_text())) if cfg_file.is_file() else {}
    return Run(path, config, read_csv(path / "rounds.csv"))


def load_runs(paths: Iterable[Path | str]) -> list[Run]:
    """`load_run` of every folder, in order."""
    return [load_run(p) for p in paths]


def _key(run: Run) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in run.config.items() if k not in UNLABELLED_KEYS))


def group_runs(runs: Sequence[Run], by_seed: bool = True) -> list[list[Run]]:
    """Runs whose configs agree on every key but `seed` (and `name`, `output_dir`) form one
    group, in first-seen order; with `by_seed` false (or without configs) every run is its own."""
    if not by_seed:
        return [[r] for r in runs]
    groups: dict[Any, list[Run]] = {}
    for i, run in enumerate(runs):
        key = _key(run) if run.config else ("#", i)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def differing_keys(configs: Sequence[Mapping[str, Any]], ignore: Iterable[str] = ()) -> list[str]:
    """Keys (in first-seen order) whose value is not the same in all `configs`, a key missing
    from some counting as different; `UNLABELLED_KEYS`, `strategy.name` and `ignore` left
    out."""
    skip = {*UNLABELLED_KEYS, "strategy.name", *ignore}
    seen: dict[str, None] = {}
    for c in configs:
        seen.update(dict.fromkeys(c))
    missing = object()
    out = []
    for k in seen:
        if k in skip:
            continue
        values = {repr(c.get(k, missing)) for c in configs}
        if len(values) > 1:
            out.append(k)
    return out


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest unambiguous tail: "strategy.options.policy" → "policy",
    unless another key ends in ".policy" too."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if sum(o == tail or o.endswith("." + tail) for o in keys) == 1:
                break
        out[k] = tail
    return out


def format_value(value: Any) -> str:
    """A config value as short text: 3600.0 → "3600", [0.4, 0.25] → "[0.4, 0.25]"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def line_labels(
    groups: Sequence[Sequence[Run]], seeds_note: bool = True, ignore: Iterable[str] = ()
) -> list[str]:
    """One label per group: "<strategy>: key=value, ..." over the keys that differ between the
    groups' configs (but `ignore`), plus "(mean ± sd of N seeds)" for a group of several runs
    if `seeds_note`. Labels that would still coincide (runs without configs, or configs equal
    but for their name or an ignored key) get the folder's name."""
    configs = [g[0].config for g in groups]
    diff = differing_keys(configs, ignore)
    short = short_keys(diff)
    labels = []
    for g, cfg in zip(groups, configs, strict=True):
        parts = [f"{short[k]}={format_value(cfg[k])}" for k in diff if k in cfg]
        label = g[0].strategy if cfg else g[0].path.name
        if parts:
            label += ": " + ", ".join(parts)
        if seeds_note and len(g) > 1:
            label += f" (mean ± sd of {len(g)} seeds)"
        labels.append(label)
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{label} [{groups[i][0].path.name}]"
    return labels


def curve(run: Run, x_key: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, metric) of the run's evaluated rows. On the time axis a run that profiled first
    (TiFL) starts at its first evaluation after profiling: its round-0 evaluation precedes a
    period in which the model did not change, and a line across it would suggest learning."""
    rows = [r for r in run.rows if _is_num(r.get(metric)) and _is_num(r.get(x_key))]
    if x_key == "virtual_time" and run.profiling_time > 0:
        rows = [r for r in rows if _is_num(r.get("round")) and r["round"] > 0] or rows
    x = np.array([float(r[x_key]) for r in rows])
    y = np.array([float(r[metric]) for r in rows])
    return x, y


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def mean_band(
    curves: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mean and sample standard deviation of several curves on a common grid: the union of
    their x values where all of them are defined (no extrapolation), each curve interpolated
    linearly onto it. One curve: itself, and no band."""
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return np.array([]), np.array([]), None
    if len(curves) == 1:
        return curves[0][0], curves[0][1], None
    lo = max(float(x[0]) for x, _ in curves)
    hi = min(float(x[-1]) for x, _ in curves)
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    if lo <= hi:
        grid = grid[(grid >= lo) & (grid <= hi)]
    ys = np.vstack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(axis=0), ys.std(axis=0, ddof=1)


def draw_line(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    band: np.ndarray | None,
    st: Style,
    label: str,
    index: int = 0,
    lw: float = 1.6,
    alpha: float = 1.0,
) -> Line2D:
    """One line in style `st`, markers about every tenth of the line's length (shifted by
    `index` so coinciding lines show each other's markers), a ± `band` if given."""
    (line,) = ax.plot(x, y, color=st.color, ls=st.linestyle, marker=st.marker, ms=4.5, lw=lw,
            markevery=(0.017 * (index % 6), 0.1), label=label, alpha=alpha,
            markerfacecolor=st.color if st.filled else "white")  # fmt: skip
    if band is not None:
        ax.fill_between(x, y - band, y + band, color=st.color, alpha=BAND_ALPHA, lw=0)
    return line


def trailing_mean(y: np.ndarray, k: int) -> np.ndarray:
    """The mean of each value and the k − 1 before it (fewer at the start): a smoothing that
    never looks ahead, as "final accuracy = mean of the last k evaluations" does."""
    if k <= 1 or len(y) == 0:
        return y
    c = np.cumsum(np.insert(np.asarray(y, float), 0, 0.0))
    n = np.minimum(np.arange(1, len(y) + 1), k)
    return (c[1:] - c[np.arange(1, len(y) + 1) - n]) / n


def draw_lines(
    ax: Axes,
    groups: Sequence[Sequence[Run]],
    labels: Sequence[str],
    x_key: str,
    metric: str,
    styles: Sequence[Style] | None = None,
    smooth: int = 1,
) -> list[tuple[np.ndarray, np.ndarray, Style, Line2D]]:
    """Each group's mean curve (with its band) on `ax`; returns (x, y, style, line) of each,
    y unsmoothed. `smooth` > 1 draws the trailing mean over that many evaluations as the line,
    and the raw curve thin and faint behind it (for noisy evaluations)."""
    drawn = []
    for i, (g, label) in enumerate(zip(groups, labels, strict=True)):
        x, y, band = mean_band([curve(r, x_key, metric) for r in g])
        st = styles[i] if styles else style(i)
        if not len(x):
            continue
        if smooth > 1:
            ax.plot(x, y, color=st.color, lw=0.6, alpha=0.3, label="_raw")
            band = None if band is None else trailing_mean(band, smooth)
            line = draw_line(ax, x, trailing_mean(y, smooth), band, st, label, i)
        else:
            line = draw_line(ax, x, y, band, st, label, i)
        drawn.append((x, y, st, line))
    return drawn


def draw_targets(ax: Axes, runs: Iterable[Run], metric: str) -> list[float]:
    """A dashed horizontal line at each distinct `evaluation.target_accuracy` > 0 of `runs`, on
    accuracy plots only; returns the targets drawn."""
    if "accuracy" not in metric:
        return []
    targets = sorted({r.target for r in runs if r.target > 0})
    for t in targets:
        ax.axhline(t, label=f"target accuracy {t:g}", **TARGET_STYLE)
    return targets


def shade_profiling(ax: Axes, runs: Iterable[Run]) -> float:
    """Shade [0, longest profiling period] on a time axis; returns its length (0: none)."""
    times = [r.profiling_time for r in runs if r.profiling_time > 0]
    if not times:
        return 0.0
    lo, hi = min(times), max(times)
    span = f"{hi:.0f} s" if hi - lo < 0.5 else f"{lo:.0f}–{hi:.0f} s"
    ax.axvspan(0, hi, color="0.6", alpha=0.18, lw=0, label=f"profiling ({span}, no training)")
    return hi


def readable_log_axis(axis: Axis, lo: float, hi: float) -> None:
    """Log-axis ticks a reader can read: plain numbers (10, 20, 50, not 10¹ or 2×10¹), labelled
    at 1, 1.5, 2, 3, 4, 5, 6, 8 × 10ᵏ within about one decade, 1, 2, 5 over up to three,
    powers of ten beyond; every 1..9 × 10ᵏ as an unlabelled minor tick."""
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    if decades <= 1.2:
        subs: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    else:
        subs = (1.0, 2.0, 5.0) if decades <= 3.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs="all"))
    axis.set_minor_formatter(NullFormatter())


def mark_crossing(ax: Axes, x: np.ndarray, y: np.ndarray, target: float, st: Style) -> float:
    """A marker in the line's colour where it first reaches `target` (on the target line), so
    the time to target reads off the plot; returns that x (nan if never)."""
    hit = np.flatnonzero(y >= target)
    if not len(hit):
        return math.nan
    xt = float(x[hit[0]])
    ax.plot([xt], [target], ls="none", marker="v", ms=8, color=st.color, mec="black", mew=0.6,
            zorder=4)  # fmt: skip
    return xt


def ordered_legend_entries(axes: Iterable[Axes]) -> dict[str, Any]:
    """label → handle over `axes`, each label once, the data's entries first and reference
    lines and shading (`REFERENCE_LABELS`) last."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    reference = [k for k in handles if k.startswith(REFERENCE_LABELS)]
    return {k: handles[k] for k in [*(k for k in handles if k not in reference), *reference]}


def place_legend(ax: Axes, inside_max: int = 4, fontsize: float = 8) -> None:
    """The legend inside the axes where it covers least data if it has at most `inside_max`
    entries, else to the right of the axes (so it never hides lines)."""
    entries = ordered_legend_entries([ax])
    handles, labels = list(entries.values()), list(entries)
    if len(entries) <= inside_max:
        ax.legend(handles, labels, fontsize=fontsize, loc="best", framealpha=0.9)
    else:
        ax.legend(handles, labels, fontsize=fontsize, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)  # fmt: skip


def _reached(xt: float, x_key: str) -> str:
    """When a line reached the target, for its legend entry."""
    if math.isnan(xt):
        return "never"
    return f"in round {xt:.0f}" if x_key == "round" else f"at {xt:.0f} s"


def _title(runs: Sequence[Run]) -> str:
    """What the runs share: data, model, nodes (empty if unknown or not shared)."""
    parts = []
    for key, fmt in (("data.name", "{}"), ("data.partition", "{}"), ("model.name", "{}"),
                     ("num_nodes", "{} nodes")):  # fmt: skip
        values = {repr(r.config.get(key)) for r in runs}
        if len(values) == 1 and runs[0].config.get(key) is not None:
            parts.append(fmt.format(runs[0].config[key]))
    return " · ".join(parts)


def metric_label(metric: str) -> str:
    """An axis label for a rounds.csv column."""
    names = {"central_accuracy": "test accuracy (central)", "central_loss": "test loss (central)"}
    return names.get(metric, metric.replace("_", " "))


def draw_panel(
    ax: Axes,
    groups: Sequence[Sequence[Run]],
    labels: Sequence[str],
    x_key: str = "virtual_time",
    metric: str = "central_accuracy",
    styles: Sequence[Style] | None = None,
    log_time: bool = False,
    smooth: int = 1,
) -> list[tuple[np.ndarray, np.ndarray, Style, Line2D]]:
    """One panel of `plot_runs`' conventions: the profiling period shaded (time axis), each
    group's mean line and band (a trailing mean over `smooth` evaluations if > 1, the raw curve
    faint behind it), the target line with each line's first crossing (of the raw curve, as
    the summaries count it) marked and added to its legend entry, a linear (or readable log)
    axis, axis labels and grid. The legend is left to the caller. Returns `draw_lines`'
    (x, y, style, line) of each line."""
    runs = [r for g in groups for r in g]
    log = log_time and x_key == "virtual_time"
    if x_key == "virtual_time":
        shade_profiling(ax, runs)
    drawn = draw_lines(ax, groups, labels, x_key, metric, styles, smooth)
    targets = draw_targets(ax, runs, metric)
    if len(targets) == 1:  # where each line reaches it, marked and in the legend
        for x, y, st, line in drawn:
            xt = mark_crossing(ax, x, y, targets[0], st)
            line.set_label(f"{line.get_label()}; {targets[0]:g} {_reached(xt, x_key)}")
    if log:
        ax.set_xscale("log", nonpositive="mask")
        xs = np.concatenate([x[x > 0] for x, *_ in drawn]) if drawn else np.array([])
        if len(xs):
            readable_log_axis(ax.xaxis, float(xs.min()), float(xs.max()))
    elif x_key == "virtual_time":
        ax.set_xlim(left=0)
    x_label = "virtual time (s)" if x_key == "virtual_time" else x_key.replace("_", " ")
    ax.set_xlabel(x_label + (" (log scale)" if log else ""))
    ax.set_ylabel(metric_label(metric))
    ax.grid(alpha=0.3, which="major")
    return drawn


def plot_runs(
    run_dirs: Sequence[Path],
    out_dir: Path,
    metric: str = "central_accuracy",
    log_time: bool = False,
    *,
    labels: Sequence[str] | None = None,
    group_seeds: bool = True,
    title: str | None = None,
) -> list[Path]:
    """Overlay `metric` of the runs against virtual time and against rounds; return the PNGs
    (out_dir/accuracy_vs_time.png, accuracy_vs_round.png).

    Runs that differ only by seed become one mean line with a ± sd band (`group_seeds`).
    `labels` (one per line, i.e. per group) replaces the labels made from the configs' differing
    keys. `log_time` puts virtual time on a log axis (for durations that differ by 10×+).
    `title` defaults to what the runs share (data, partition, model, nodes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = load_runs(run_dirs)
    groups = group_runs(runs, by_seed=group_seeds)
    names = list(labels) if labels is not None else line_labels(groups)
    if len(names) != len(groups):
        raise ValueError(f"{len(names)} labels for {len(groups)} lines")
    written = []
    for x_key, fname in (
        ("virtual_time", "accuracy_vs_time.png"),
        ("round", "accuracy_vs_round.png"),
    ):
        wide = len(groups) + 2 > 5
        fig, ax = plt.subplots(figsize=(9.5 if wide else 6.4, 4.2), dpi=110)
        draw_panel(ax, groups, names, x_key, metric, log_time=log_time)
        head = _title(runs) if title is None else title
        if head:
            ax.set_title(head, fontsize=9)
        place_legend(ax)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def panel_grid(
    n: int, ncols: int = 3, width: float = 3.6, height: float = 3.0
) -> tuple[Any, list[Axes]]:
    """A figure of `n` panels sharing both axes, `ncols` per row (fewer if n is smaller), and
    its axes in reading order (unused cells hidden): the layout of one panel per attack."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows + 0.9), dpi=110,
        sharex=True, sharey=True, squeeze=False,
    )  # fmt: skip
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def finish_panels(
    fig: Any, axes: Sequence[Axes], path: Path, title: str, xlabel: str, ylabel: str | None,
    legend_cols: int = 4,
) -> Path:  # fmt: skip
    """Label the outer panels of a `panel_grid` (x labels and ticks on every panel with no
    visible panel below it), put one legend of all panels' distinct entries under the figure
    (so it never covers data), add the title, save to `path` and close. `ylabel` None leaves
    the panels' own y labels."""
    specs = [ax.get_subplotspec() for ax in axes]
    assert all(spec is not None for spec in specs), "panels of a panel_grid have a grid spec"
    cells = {(spec.rowspan.start, spec.colspan.start) for spec in specs if spec is not None}
    for ax, spec in zip(axes, specs, strict=True):
        assert spec is not None
        if spec.is_first_col() and ylabel is not None:
            ax.set_ylabel(ylabel)
        if (spec.rowspan.stop, spec.colspan.start) not in cells:
            ax.set_xlabel(xlabel)
            ax.xaxis.set_tick_params(labelbottom=True)
    handles = ordered_legend_entries(axes)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper center",
                   bbox_to_anchor=(0.5, 0.05), ncol=min(legend_cols, len(handles)), fontsize=8,
                   frameon=False)  # fmt: skip
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
