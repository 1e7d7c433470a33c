"""The interactive timeline: the same figures as the PNGs, as one self-contained Plotly page
(zoom into virtual time, hover a bar for its message). Plotly is an optional dependency
(`pip install "fl[viz]"`), imported only here and only when called."""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fl.experiment.timeline_data import RunData, categories, update_staleness
from fl.experiment.timeline_gantt import (
    COMPUTE,
    DOWNLOAD,
    MARKS,
    OFFLINE,
    UPLOAD,
    WASTED_ALPHA,
    busy_fraction,
    row_groups,
)
from fl.experiment.timeline_panels import tier_counts

SYMBOLS = {
    "x": "x-thin-open",
    "|": "line-ns-open",
    "o": "circle-open",
    "X": "x",
    "v": "triangle-down-open",
    "*": "star",
    "d": "diamond-open",
    "s": "square-open",
}


def require_plotly() -> Any:
    """plotly.graph_objects, or an ImportError that says how to install it."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise ImportError(
            'the interactive timeline (html=True) needs Plotly: pip install "fl[viz]"'
        ) from exc
    return go


def write_html(data: RunData, path: Path, aggregate_above: int = 200) -> Path:
    """Write the interactive timeline of `data` to `path` (Plotly's JavaScript embedded, so the
    page works offline) and return `path`."""
    go = require_plotly()
    parts = [("Timeline of virtual time", _gantt(go, data, aggregate_above))]
    stale = update_staleness(data)
    if stale is not None and len(stale.tau):
        parts.append(("Staleness of each applied update", _staleness(go, data)))
    if data.tiers is not None and data.tiers.num_tiers > 0:
        parts.append(("TiFL tier occupancy", _tiers(go, data)))
    name = html.escape(str(data.summary.get("name") or data.config.get("name", data.path.name)))
    body = [f"<h1>{name}: {html.escape(data.strategy)}</h1>"]
    for i, (title, (fig, notes)) in enumerate(parts):
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(fig.to_html(full_html=False, include_plotlyjs=i == 0))
        body.extend(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    style = "body{font-family:sans-serif;margin:1em 2em}.note{color:#555;font-size:85%}"
    path.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{name}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
    return path


def _hover(data: RunData, sel: np.ndarray) -> list[str]:
    m = data.messages
    return [
        f"{m.message_id[i]} · node {m.node[i]} · {m.kind[i]} {m.group[i]}<br>{m.status[i]}: "
        f"sent {m.sent[i]:.4g} s, down {m.download[i]:.3g} + compute {m.compute[i]:.3g} + up "
        f"{m.upload[i]:.3g} s" + (f"<br>{html.escape(m.error[i][:120])}" if m.error[i] else "")
        for i in np.flatnonzero(sel)
    ]


def _gantt(go: Any, data: RunData, aggregate_above: int) -> tuple[Any, list[str]]:
    """Rows per node (bars per phase, marks per status, offline spans), or per group (busy
    fraction heatmap) above `aggregate_above` nodes; round / model-update lines."""
    m, cats = data.messages, categories(data)
    fig = go.Figure()
    notes = list(data.notes)
    if len(data.nodes) > aggregate_above:
        member, order, what = row_groups(data)
        size = Counter(member.values())
        labels = [f"{g} · {size[g]} nodes" for g in order]
        group = np.array([member.get(int(n), order[-1]) for n in m.node], dtype=object)
        edges = np.linspace(0.0, data.end, 401)
        busy = m.finish > m.sent
        z = [
            busy_fraction(m.sent[s], np.minimum(m.finish[s], data.end), edges, size[g])
            for g in order
            for s in [busy & (group == g)]
        ]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=(edges[:-1] + edges[1:]) / 2,
                y=labels,
                colorscale="Blues",
                colorbar={"title": "busy"},
                name="share of nodes busy",
            )
        )
        row = {g: lab for g, lab in zip(order, labels, strict=True)}
        y = np.array([row[g] for g in group], dtype=object)
        notes.append(f"rows: {what}; colour: share of the row's nodes busy per time bin")
    else:
        labels = [str(n) for n in data.nodes]
        y = np.array([str(n) for n in m.node], dtype=object)
        spans = [(a, b, str(n)) for n, sp in data.offline.items() for a, b in sp]
        if spans:
            a, b, who = zip(*spans, strict=True)
            width = np.array(b) - np.array(a)
            fig.add_trace(
                go.Bar(
                    base=a,
                    x=width,
                    y=who,
                    orientation="h",
                    marker_color=OFFLINE,
                    width=0.9,
                    name="device offline (rebuilt from config.toml)",
                    hoverinfo="name+x",
                )
            )
        done = cats == ""
        for kind in sorted(set(m.kind), key=lambda k: (k != "train", k)):
            start = m.sent.copy()
            for phase, dur, c in (
                ("download", m.download, DOWNLOAD),
                ("compute", m.compute, COMPUTE.get(kind, "#969696")),
                ("upload", m.upload, UPLOAD),
            ):
                for ok in (True, False):
                    sel = (m.kind == kind) & (done == ok) & (dur > 0)
                    if sel.any():
                        name = f"{kind} {phase}" + ("" if ok else " (no reply)")
                        fig.add_trace(
                            go.Bar(
                                base=start[sel],
                                x=dur[sel],
                                y=y[sel],
                                orientation="h",
                                marker_color=c,
                                name=name,
                                opacity=1.0 if ok else WASTED_ALPHA,
                                width=0.7 if kind == "train" else 0.34,
                                hovertext=_hover(data, sel),
                                hoverinfo="text",
                            )
                        )
                start = start + dur
    x = np.minimum(m.finish, data.end)
    for cat, (text, marker, colour) in MARKS.items():
        sel = cats == cat
        if sel.any():
            fig.add_trace(
                go.Scatter(
                    x=x[sel],
                    y=y[sel],
                    mode="markers",
                    name=f"{text}: {sel.sum()}",
                    marker={"symbol": SYMBOLS[marker], "color": colour, "size": 9},
                    hovertext=_hover(data, sel),
                    hoverinfo="text",
                )
            )
    rounds = [r for r in data.rounds if int(r.get("round", 0) or 0) >= 1]
    if data.asynchronous:
        times = [float(r["virtual_time"]) for r in rounds]
        fig.add_trace(
            go.Scatter(
                x=times,
                y=[labels[0]] * len(times),
                mode="markers",
                marker={"symbol": "line-ns-open", "color": "#4d4d4d", "size": 6},
                opacity=0.4,
                name=f"model update ({len(times)})",
                hovertext=[f"version {r['round']}" for r in rounds],
                hoverinfo="text+x",
            )
        )
    else:
        for r in rounds if len(rounds) <= 1000 else []:
            s = float(r.get("round_start", "") or r["virtual_time"])
            fig.add_vline(x=s, line_width=0.6, line_color="#636363", opacity=0.5)
    height = min(max(300, 18 * len(labels) + 200), 2400)
    fig.update_layout(
        barmode="overlay",
        height=height,
        xaxis_title="virtual time (s)",
        hovermode="closest",
        legend={"orientation": "h", "y": -0.12},
        margin={"l": 60, "r": 20, "t": 30, "b": 60},
    )
    fig.update_yaxes(
        categoryorder="array", categoryarray=labels, autorange="reversed", type="category"
    )
    fig.update_xaxes(range=[0, data.end * 1.01])
    return fig, notes


def _staleness(go: Any, data: RunData) -> tuple[Any, list[str]]:
    """Staleness histogram and staleness over virtual time (hover: the node)."""
    from plotly.subplots import make_subplots

    st = update_staleness(data)
    assert st is not None
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.35, 0.65],
        subplot_titles=("applied updates per staleness", "staleness over time"),
    )
    fig.add_trace(go.Histogram(x=st.tau, name="updates", marker_color="#3182bd"), 1, 1)
    fig.add_trace(
        go.Scattergl(
            x=st.time,
            y=st.tau,
            mode="markers",
            name="update",
            marker={"size": 4, "color": st.node, "colorscale": "Turbo"},
            hovertext=[f"node {n}" for n in st.node],
        ),
        1,
        2,
    )
    fig.update_xaxes(title_text="staleness τ (model versions)", row=1, col=1)
    fig.update_xaxes(title_text="virtual time (s)", row=1, col=2)
    fig.update_yaxes(title_text="τ", row=1, col=2)
    fig.update_layout(height=420, showlegend=False)
    return fig, [st.note]


def _tiers(go: Any, data: RunData) -> tuple[Any, list[str]]:
    """Nodes selected (and replied) per tier and round, and round durations."""
    from plotly.subplots import make_subplots

    tiers = data.tiers
    assert tiers is not None
    sel, rep, x = tier_counts(data, tiers)
    names = [f"tier {t}" for t in range(tiers.num_tiers)] + ["not tiered"]
    rows = [r for r in data.rounds if int(r.get("round", 0) or 0) >= 1]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.6, 0.4],
        subplot_titles=("nodes selected per tier", "round training time (s)"),
    )
    text = [
        [f"{int(r)}/{int(s)} replied" for r, s in zip(rr, ss, strict=True)]
        for rr, ss in zip(rep, sel, strict=True)
    ]
    fig.add_trace(
        go.Heatmap(
            z=sel,
            x=x,
            y=names[: sel.shape[0]],
            colorscale="Greens",
            hovertext=text,
            showscale=False,
        ),
        1,
        1,
    )
    tier_of = [f"tier {r['tier']}" if r.get("tier", "") != "" else "" for r in rows]
    dur = [float(r.get("train_duration", 0) or 0) for r in rows]
    fig.add_trace(go.Bar(x=x, y=dur, hovertext=tier_of, marker_color="#41ab5d"), 2, 1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="round", row=2, col=1)
    fig.update_layout(height=200 + 40 * sel.shape[0] + 200, showlegend=False)
    return fig, [tiers.note]
