"""The timeline's Gantt chart of virtual time (matplotlib, Agg): one row per node, or one row per
tier / device group showing its busy fraction. `fl.experiment.timeline` reads the data."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fl.experiment.timeline_data import RunData, categories

DOWNLOAD, UPLOAD = "#9ecae1", "#74c476"
COMPUTE = {"train": "#08519c", "evaluate": "#8c6bb1"}  # anything else: grey
OFFLINE = "#b0b0b0"  # hatch of offline periods
WASTED_ALPHA = 0.35  # work of a message that never replied (or replied too late)
# category → (legend text, marker, colour); every mark sits where the reply would have arrived
MARKS = {
    "deadline": ("dropped at the deadline (× = when it would have replied)", "x", "#d62728"),
    "abandoned": ("in flight when the run stopped", "|", "#d62728"),
    "offline": ("lost: device offline (at dispatch or before replying)", "o", "#525252"),
    "failed": ("lost: device failed during the task", "X", "#000000"),
    "lost": ("lost: reply after its TTL", "v", "#ff7f0e"),
    "error": ("client error (ClientApp raised)", "*", "#e7298a"),
    "pending": ("no reply yet", "d", "#969696"),
    "other": ("other status", "s", "#969696"),
}
WIDTH = 12.0  # inches


@dataclass
class GanttInfo:
    """What the Gantt chart drew: its rows (top to bottom) and the messages drawn per status."""

    rows: list[str]
    aggregated: bool
    grouping: str = ""
    drawn: Counter[str] = field(default_factory=Counter)  # raw status → messages drawn


# ----------------------------------------------------------------------------- groups
def row_groups(data: RunData) -> tuple[dict[int, str], list[str], str]:
    """Groups for the aggregated view: TiFL tiers, else the population's device groups (when it
    has several), else deciles of each node's mean compute time. Returns node → label, labels
    in row order, and what the groups are."""
    if data.tiers is not None and data.tiers.num_tiers > 0:
        names = {t: f"tier {t}" for t in range(data.tiers.num_tiers)}
        member = {n: names.get(data.tiers.member.get(n, -1), "not tiered") for n in data.nodes}
        order = [*names.values(), "not tiered"]
        return (
            member,
            [g for g in order if g in member.values()],
            "TiFL tier (inferred, tier 0 fastest)",
        )
    if data.groups:
        return (
            dict(data.groups),
            list(data.group_order),
            "device group (population rebuilt from config.toml)",
        )
    m = data.messages
    busy = (m.kind == "train") & (m.compute > 0)
    total = np.bincount(
        np.searchsorted(nodes := np.unique(m.node[busy]), m.node[busy]), weights=m.compute[busy]
    )
    count = np.bincount(np.searchsorted(nodes, m.node[busy]))
    means = {int(n): float(t / c) for n, t, c in zip(nodes, total, count, strict=True)}
    k = max(1, min(10, len(means) // 20))
    qs = np.linspace(0, 1, k + 1)
    edges: np.ndarray = np.unique(np.quantile(list(means.values()), qs)) if means else np.zeros(0)
    labels = [f"compute {a:.3g}–{b:.3g} s" for a, b in itertools.pairwise(edges)]
    if len(edges) == 1:  # every node computes as long
        labels = [f"compute {edges[0]:.3g} s"]
    member = {}
    for n in data.nodes:
        if n not in means:
            member[n] = "never trained"
        else:
            i = int(np.searchsorted(edges, means[n], "right")) - 1
            member[n] = labels[min(max(i, 0), len(labels) - 1)]
    order = [g for g in [*labels, "never trained"] if g in member.values()]
    return member, order, "quantile groups of each node's mean training compute time"


def busy_fraction(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray, size: int) -> np.ndarray:
    """Mean fraction of `size` nodes busy in each bin between `edges`, given their busy
    intervals [starts, ends) (the integral of the busy count, from its jumps; O(n log n))."""
    if len(starts) == 0 or size == 0:
        return np.zeros(len(edges) - 1)
    t = np.concatenate([starts, ends])
    jump = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.argsort(t, kind="stable")
    t, count = t[order], np.cumsum(jump[order])
    area = np.concatenate([[0.0], np.cumsum(count[:-1] * np.diff(t))])
    at_edges = np.interp(edges, t, area, left=0.0, right=float(area[-1]))
    return np.diff(at_edges) / (np.diff(edges) * size)


# ----------------------------------------------------------------------------- Gantt
def _rects(x0: np.ndarray, x1: np.ndarray, y: np.ndarray, h: float) -> Any:
    """Vertices of axis-aligned rectangles [x0, x1] × [y − h/2, y + h/2]."""
    lo, hi = y - h / 2, y + h / 2
    return np.stack(
        [
            np.stack([x0, lo], 1),
            np.stack([x0, hi], 1),
            np.stack([x1, hi], 1),
            np.stack([x1, lo], 1),
        ],
        axis=1,
    )


@dataclass
class _Frame:
    """A Gantt figure's axes and their geometry in inches (placed once the legend is known)."""

    fig: Figure
    strip: plt.Axes  # rounds / model updates, above the rows
    ax: plt.Axes  # the rows
    main: float  # height of the rows, inches
    cax: plt.Axes | None = None  # colour bar (aggregated view)
    left: float = 0.9  # margin for the row labels, inches


def _layout(rows: int, per_row: float, cap: float, colorbar: bool = False) -> _Frame:
    """Axes for a Gantt chart whose height grows with `rows` (up to `cap` inches of rows)."""
    fig = plt.figure(figsize=(WIDTH, 4.0))
    ax = fig.add_axes((0.1, 0.1, 0.8, 0.6))
    strip = fig.add_axes((0.1, 0.75, 0.8, 0.1), sharex=ax)
    cax = fig.add_axes((0.95, 0.1, 0.01, 0.6)) if colorbar else None
    return _Frame(fig, strip, ax, min(max(rows * per_row, 1.6), cap), cax)


def _place(fr: _Frame, bottom: float) -> None:
    """Size the figure: title, strip, rows, then `bottom` inches of axis label and legend."""
    top, strip, gap = 0.5, 0.3, 0.05
    height = top + strip + gap + fr.main + bottom
    fr.fig.set_size_inches(WIDTH, height)
    left, width = fr.left / WIDTH, 1 - (fr.left + 1.5) / WIDTH
    fr.ax.set_position((left, bottom / height, width, fr.main / height))
    fr.strip.set_position((left, (bottom + fr.main + gap) / height, width, strip / height))
    if fr.cax is not None:
        box = (left + width + 0.15 / WIDTH, bottom / height, 0.12 / WIDTH, fr.main / height)
        fr.cax.set_position(box)


def _boundaries(data: RunData, fr: _Frame) -> list[Artist]:
    """Rounds as numbered bands (synchronous) or model updates as light ticks (asynchronous) in
    the strip, round starts as light lines over the rows, TiFL's profiling as a band."""
    strip, ax = fr.strip, fr.ax
    strip.set_yticks([])
    strip.tick_params(labelbottom=False, length=0)
    rows = [r for r in data.rounds if int(r.get("round", 0) or 0) >= 1]
    ends = np.array([float(r["virtual_time"]) for r in rows])
    if data.asynchronous:
        strip.vlines(ends, 0, 1, color="#4d4d4d", lw=0.4, alpha=0.35 if len(rows) > 300 else 0.7)
        strip.set_ylabel(f"{len(rows)}\nupdates", rotation=0, ha="right", va="center", fontsize=8)
        return [Line2D([], [], color="#4d4d4d", lw=0.8, label="model update (top strip)")]
    starts = np.array([float(r.get("round_start", "") or "nan") for r in rows])
    starts = np.where(np.isnan(starts), np.concatenate([[0.0], ends[:-1]]), starts)
    for parity, colour in ((0, "#f0f0f0"), (1, "#bdbdbd")):
        i = np.arange(parity, len(rows), 2)
        strip.broken_barh(
            list(zip(starts[i], ends[i] - starts[i], strict=True)), (0, 1), color=colour
        )
    per_s = 72 * (WIDTH - fr.left - 1.5) / (data.end * 1.01)  # points per virtual second
    for r, a, b in zip(rows, starts, ends, strict=True):
        if (b - a) * per_s > 5 * len(str(r["round"])) + 3:  # only numbers that fit their band
            strip.text((a + b) / 2, 0.5, str(r["round"]), ha="center", va="center", fontsize=7)
    ax.vlines(
        starts,
        0,
        1,
        transform=ax.get_xaxis_transform(),
        color="#636363",
        lw=0.6 if len(rows) < 100 else 0.3,
        alpha=0.5,
        zorder=1,
    )
    strip.set_ylabel("round", rotation=0, ha="right", va="center", fontsize=8)
    m = data.messages
    prof = np.array([str(g).startswith("profiling-") for g in m.group])
    if prof.any() and rows:
        strip.broken_barh([(float(m.sent[prof].min()), float(starts[0]))], (0, 1), color="#fee391")
        strip.text(
            float(starts[0]) / 2, 0.5, "TiFL profiling", ha="center", va="center", fontsize=7
        )
    return [Line2D([], [], color="#636363", lw=0.8, label="round start")]


def gantt_figure(data: RunData, aggregate_above: int = 200) -> tuple[Figure, GanttInfo]:
    """The Gantt chart of virtual time: one row per node, or per group above `aggregate_above`
    nodes (`aggregated_figure`). Returns the figure and what it drew."""
    if len(data.nodes) > aggregate_above:
        return aggregated_figure(data)
    m, cats = data.messages, categories(data)
    row_of = {n: i for i, n in enumerate(data.nodes)}
    y = np.array([row_of[int(n)] for n in m.node], dtype=float)
    n_rows = len(data.nodes)
    fr = _layout(n_rows, 0.16, 14.0)
    ax = fr.ax
    handles: list[Artist] = [Patch(color=DOWNLOAD, label="download")]
    handles.append(Patch(color=UPLOAD, label="upload"))
    done = cats == ""
    for kind in sorted(set(m.kind), key=lambda k: (k != "train", k)):
        is_kind, colour = m.kind == kind, COMPUTE.get(kind, "#969696")
        h = 0.7 if kind == "train" else 0.34
        start = m.sent.copy()
        for dur, c in ((m.download, DOWNLOAD), (m.compute, colour), (m.upload, UPLOAD)):
            for ok, alpha in ((True, 1.0), (False, WASTED_ALPHA)):
                sel = is_kind & (done == ok) & (dur > 0)
                if sel.any():
                    verts = _rects(start[sel], start[sel] + dur[sel], y[sel], h)
                    ax.add_collection(PolyCollection(verts, color=c, alpha=alpha, lw=0, zorder=2))
            start = start + dur
        if (is_kind & (m.compute > 0)).any():
            thin = "" if kind == "train" else ", thin bar"
            handles.append(Patch(color=colour, label=f"compute ({kind}{thin})"))
        instant = is_kind & done & (m.finish <= m.sent)
        if instant.any():
            ax.scatter(
                m.sent[instant],
                y[instant],
                marker="|",
                s=30,
                color=colour,
                lw=0.8,
                zorder=3,
                gid=f"instant:{kind}",
            )
            handles.append(_key("|", colour, f"{kind}, free (takes no virtual time)"))
    if (~done).any():
        wasted = "work of a message that did not reply (faded)"
        handles.append(Patch(color=COMPUTE["train"], alpha=WASTED_ALPHA, label=wasted))
    handles += _boundaries(data, fr)
    if data.offline:
        spans = [(a, b, row_of[n]) for n, sp in data.offline.items() for a, b in sp if n in row_of]
        if spans:
            a, b, r = (np.array(v, dtype=float) for v in zip(*spans, strict=True))
            face, label = "#f4f4f4", "device offline (rebuilt from config.toml)"
            verts = _rects(a, b, r, 0.9)
            ax.add_collection(
                PolyCollection(
                    verts, facecolor=face, edgecolor=OFFLINE, hatch="////", lw=0.0, zorder=0
                )
            )
            handles.append(
                Patch(facecolor=face, edgecolor=OFFLINE, hatch="////", lw=0.0, label=label)
            )
    drawn: Counter[str] = Counter(str(s) for s in m.status[done])
    handles += _marks(ax, data, cats, y, drawn)
    labels = [str(n) for n in data.nodes]
    _rows_axis(fr, labels, data)
    grouping = _group_separators(ax, data)
    notes = [f"rows grouped by {grouping}"] if grouping else []
    if _overlapping(data):
        notes.append("darker bars: a node sent a task while still busy with an earlier one")
    if data.tiers is not None and data.tiers.num_tiers > 0:
        notes.append(data.tiers.note)
    _finish(fr, data, handles, f"{n_rows} nodes, one row each", notes)
    return fr.fig, GanttInfo(labels, False, grouping, drawn)


def _key(marker: str, colour: str, label: str, face: str | None = None) -> Line2D:
    """A legend entry for a mark."""
    return Line2D([], [], marker=marker, ls="", color=colour, mfc=face or colour, label=label)


def _overlapping(data: RunData) -> bool:
    """Whether some node was sent a message before its previous one's work ended (the grid
    times each message on its own, so a node dropped at a deadline may run two tasks)."""
    m = data.messages
    busy = m.finish > m.sent
    order = np.lexsort((m.sent[busy], m.node[busy]))
    node, sent, end = m.node[busy][order], m.sent[busy][order], m.finish[busy][order]
    same = node[1:] == node[:-1]
    return bool(np.any(same & (sent[1:] < end[:-1] - 1e-9)))


def _marks(
    ax: plt.Axes, data: RunData, cats: np.ndarray, y: np.ndarray, drawn: Counter[str]
) -> list[Artist]:
    """A mark per message that did not reply, at the time its reply would have arrived (at the
    end of the run if later); returns the legend entries."""
    m = data.messages
    handles: list[Artist] = []
    x = np.minimum(m.finish, data.end)
    for cat, (text, marker, colour) in MARKS.items():
        sel = cats == cat
        if not sel.any():
            continue
        hollow = marker in ("o", "v", "d", "s")
        face = "none" if hollow else colour
        edge = colour if hollow or marker in ("X", "*") else None
        ax.scatter(
            x[sel],
            y[sel],
            marker=marker,
            s=30,
            lw=1.1,
            zorder=4,
            gid=f"status:{cat}",
            facecolors=face,
            edgecolors=edge,
        )
        handles.append(_key(marker, colour, f"{text}: {int(sel.sum())}", face))
        drawn.update(str(s) for s in m.status[sel])
    return handles


def _rows_axis(fr: _Frame, labels: list[str], data: RunData) -> None:
    """Every row gets a tick; labels thin out so they stay readable (≥ 8 pt apart)."""
    n = len(labels)
    every = max(1, math.ceil(n * 8.0 / (fr.main * 72)))
    fr.ax.set_yticks(np.arange(n))
    fr.ax.set_yticklabels([s if i % every == 0 else "" for i, s in enumerate(labels)], fontsize=7)
    fr.ax.set_ylim(n - 0.5, -0.5)
    fr.ax.set_xlim(0, data.end * 1.01)
    fr.ax.set_xlabel("virtual time (s)")
    fr.ax.tick_params(axis="y", length=2)


def _group_separators(ax: plt.Axes, data: RunData) -> str:
    """Lines between tiers / device groups, named at the right edge."""
    if (data.tiers is None or data.tiers.num_tiers == 0) and len(data.group_order) < 2:
        return ""
    member, order, what = row_groups(data)
    names = [member[n] for n in data.nodes]
    trans = ax.get_yaxis_transform()
    for g in order:
        idx = [i for i, s in enumerate(names) if s == g]
        if idx:
            ax.axhline(idx[0] - 0.5, color="#252525", lw=0.6, zorder=1)
            ax.text(1.005, (idx[0] + idx[-1]) / 2, g, transform=trans, fontsize=7, va="center")
    return what


def _finish(
    fr: _Frame, data: RunData, handles: list[Artist], rows_text: str, notes: list[str]
) -> None:
    """Place the axes, then the title, the legend and the notes (what was reconstructed)."""
    ncol = 3
    legend_rows = math.ceil(len(handles) / ncol)
    notes = [*data.notes, *notes]
    _place(fr, 0.55 + 0.19 * legend_rows + 0.15 + 0.15 * len(notes))
    fig, height = fr.fig, fr.fig.get_figheight()
    name = str(data.summary.get("name") or data.config.get("name", data.path.name))
    name = name if len(name) <= 40 else name[:39] + "…"
    sync = "asynchronous" if data.asynchronous else "synchronous"
    fig.suptitle(
        f"{name}: {data.strategy} ({sync}), {rows_text}, virtual time 0–{data.end:.4g} s",
        fontsize=10,
        y=1 - 0.1 / height,
    )
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=ncol,
        fontsize=7.5,
        frameon=False,
        bbox_to_anchor=(0.5, fr.ax.get_position().y0 - 0.45 / height),
    )
    for i, note in enumerate(reversed(notes)):
        fig.text(0.01, (0.06 + 0.15 * i) / height, note, fontsize=7, color="#525252")


def aggregated_figure(data: RunData) -> tuple[Figure, GanttInfo]:
    """One row per tier / device group: the fraction of its nodes busy (downloading, computing
    or uploading, replied or not) in each of 400 time bins, with the marks of every message
    that did not reply (jittered within the row)."""
    member, order, what = row_groups(data)
    m, cats = data.messages, categories(data)
    size = Counter(member.values())
    row_of = {g: i for i, g in enumerate(order)}
    edges = np.linspace(0.0, data.end, 401)
    grid = np.zeros((len(order), 400))
    group = np.array([member.get(int(n), order[-1]) for n in m.node], dtype=object)
    busy = m.finish > m.sent
    for g, i in row_of.items():
        sel = busy & (group == g)
        grid[i] = busy_fraction(m.sent[sel], np.minimum(m.finish[sel], data.end), edges, size[g])
    fr = _layout(len(order), 0.5, 8.0, colorbar=True)
    labels = [f"{g} · {size[g]} nodes" for g in order]
    fr.left = max(0.9, 0.25 + 0.06 * max(map(len, labels)))
    top = float(grid.max())
    vmax = 1.0 if top > 0.5 else max(float(np.ceil(top * 20) / 20), 0.05)  # a readable scale
    handles: list[Artist] = [
        Patch(color=plt.get_cmap("Blues")(0.7), label="share of the row's nodes busy")
    ]
    handles += _boundaries(data, fr)
    extent = (0, data.end, len(order) - 0.5, -0.5)
    im = fr.ax.imshow(
        grid,
        aspect="auto",
        cmap="Blues",
        vmin=0,
        vmax=vmax,
        extent=extent,
        interpolation="nearest",
        zorder=0,
    )
    rng = np.random.default_rng(0)
    y = np.array([row_of[g] for g in group], dtype=float) + rng.uniform(-0.3, 0.3, len(m))
    drawn: Counter[str] = Counter(str(s) for s in m.status[cats == ""])
    handles += _marks(fr.ax, data, cats, y, drawn)
    _rows_axis(fr, labels, data)
    notes = [f"rows: {what}; shade: share of the row's nodes busy in each of 400 time bins"]
    if data.tiers is not None and data.tiers.num_tiers > 0:
        notes.append(data.tiers.note)
    _finish(fr, data, handles, f"{len(data.nodes)} nodes in {len(order)} rows", notes)
    assert fr.cax is not None
    fr.fig.colorbar(im, cax=fr.cax, label="share of nodes busy")  # once the axes are placed
    return fr.fig, GanttInfo(labels, True, what, drawn)
