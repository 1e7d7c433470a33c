"""The timeline's per-strategy figures (matplotlib, Agg): the staleness of an asynchronous run's
updates, and TiFL's tier occupancy per round. `fl.experiment.timeline` reads the data."""

from __future__ import annotations

import math
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fl.experiment.timeline_data import RunData, Staleness, Tiers

WIDTH = 12.0  # inches, as the Gantt chart
HIGHLIGHT = ("#d62728", "#ff7f0e", "#9467bd")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _title(data: RunData, what: str) -> str:
    name = str(data.summary.get("name") or data.config.get("name", data.path.name))
    name = name if len(name) <= 40 else name[:39] + "…"
    return f"{name}: {data.strategy}, {what}"


def staleness_figure(data: RunData, st: Staleness) -> Figure:
    """Histogram of the staleness of every applied update, and staleness against virtual time.
    Nodes whose mean staleness is over twice the median node's (stragglers; at most three) are
    in colour; AdaSGD's τ_thres is drawn if rounds.csv records it."""
    fig, (h, t) = plt.subplots(1, 2, figsize=(WIDTH, 4.6), gridspec_kw={"width_ratios": [1, 2]})
    top = int(st.tau.max())
    step = max(1, math.ceil((top + 1) / 60))
    h.hist(st.tau, bins=np.arange(-0.5, top + step + 0.5, step), color="#3182bd")
    counts = np.bincount(st.tau.astype(int))
    if counts.max() > 50 * counts[counts > 0].min():
        h.set_yscale("log")
    h.set_xlabel("staleness τ (model versions)")
    h.set_ylabel("applied updates" + (" (log)" if h.get_yscale() == "log" else ""))
    what = f"{len(st.tau)} client updates in {st.windows} model updates"
    h.set_title(f"{what}: mean τ {st.tau.mean():.2f}, max {top}", fontsize=9)
    means = {int(n): float(st.tau[st.node == n].mean()) for n in np.unique(st.node)}
    median = float(np.median(list(means.values())))
    stalest = [n for n in sorted(means, key=lambda n: -means[n])[:3] if means[n] > 2 * median]
    rest = ~np.isin(st.node, stalest)
    t.scatter(
        st.time[rest],
        st.tau[rest],
        s=5,
        color="#969696",
        alpha=0.5,
        lw=0,
        label=f"{'other ' if stalest else ''}nodes (median node mean τ {median:.1f})",
    )
    for n, c in zip(stalest, HIGHLIGHT, strict=False):
        sel = st.node == n
        label = f"node {n}: mean τ {means[n]:.1f}, {int(sel.sum())} updates"
        t.scatter(st.time[sel], st.tau[sel], s=12, color=c, lw=0, label=label)
    thres = [r for r in data.rounds if r.get("tau_thres", "") != ""]
    if thres:
        t.plot(
            [r["virtual_time"] for r in thres],
            [r["tau_thres"] for r in thres],
            color="k",
            lw=1,
            drawstyle="steps-post",
            label="AdaSGD τ_thres",
        )
    t.set_xlim(0, data.end * 1.01)
    t.set_xlabel("virtual time (s)")
    t.set_ylabel("staleness τ of the update applied")
    t.legend(fontsize=7, loc="upper left", markerscale=2)
    for ax in (h, t):
        ax.grid(alpha=0.3)
    fig.suptitle(_title(data, "staleness of each applied model update"), fontsize=10)
    fig.text(0.01, 0.015, st.note, fontsize=7, color="#525252")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def tier_counts(data: RunData, tiers: Tiers) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Nodes selected and replied per (tier, round) (an extra last row for untiered nodes, if
    any was selected), and the rounds, from rounds.csv's `selected` / `replied` columns."""
    rows = [r for r in data.rounds if int(r.get("round", 0) or 0) >= 1]
    picks = [str(r.get("selected", "")).split() for r in rows]
    k = tiers.num_tiers
    untiered = any(tiers.member.get(int(n), -1) < 0 for p in picks for n in p)
    sel = np.zeros((k + int(untiered), len(rows)))
    rep = np.zeros_like(sel)
    for j, (r, p) in enumerate(zip(rows, picks, strict=True)):
        replied = set(str(r.get("replied", "")).split())
        for n in p:
            tier = tiers.member.get(int(n), -1)
            sel[tier if tier >= 0 else k, j] += 1
            rep[tier if tier >= 0 else k, j] += n in replied
    return sel, rep, [int(r["round"]) for r in rows]


def tiers_figure(data: RunData, tiers: Tiers) -> Figure:
    """TiFL per round: how many nodes of each tier were selected (replied/selected written in
    when there are at most 40 rounds), the round's training time coloured by the tier drawn,
    and the tier probabilities (if rounds.csv records them)."""
    sel, rep, x = tier_counts(data, tiers)
    rows = [r for r in data.rounds if int(r.get("round", 0) or 0) >= 1]
    k, n_rows = tiers.num_tiers, sel.shape[0]
    probs = [r for r in rows if r.get("tier_probs", "") != ""]
    panels = 3 if probs else 2
    heights = [max(1.6, 0.4 * n_rows), 1.8, 1.5][:panels]
    fig, axes = plt.subplots(
        panels,
        1,
        figsize=(WIDTH, sum(heights) + 1.3),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
    )
    ax, lo, hi = axes[0], x[0] - 0.5, x[-1] + 0.5
    im = ax.imshow(
        sel,
        aspect="auto",
        cmap="Greens",
        vmin=0,
        interpolation="nearest",
        extent=(lo, hi, n_rows - 0.5, -0.5),
    )
    annotate = len(x) <= 40
    for t, j in zip(*np.nonzero(sel), strict=True) if annotate else ():
        dark = sel[t, j] > 0.6 * sel.max()
        ax.text(
            x[j],
            t,
            f"{int(rep[t, j])}/{int(sel[t, j])}",
            ha="center",
            va="center",
            fontsize=7,
            color="w" if dark else "k",
        )
    if not annotate:
        fig.colorbar(im, cax=ax.inset_axes((1.01, 0, 0.012, 1)), label="nodes selected")
    size = Counter(tiers.member.values())
    drawn = Counter(int(r["tier"]) for r in rows if r.get("tier", "") != "")
    labels = [f"tier {t}: {size[t]} nodes, {_n(drawn[t], 'round')}" for t in range(k)]
    ax.set_yticks(range(n_rows), labels + ["not tiered"] * (n_rows - k), fontsize=8)
    what = "replied/selected" if annotate else "colour: nodes selected"
    ax.set_title(f"nodes selected from each tier per round ({what})", fontsize=9)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(k, 1)))
    tier_of = [int(r["tier"]) if r.get("tier", "") != "" else -1 for r in rows]
    dur = [float(r.get("train_duration", 0) or 0) for r in rows]
    axes[1].bar(x, dur, color=[colours[t] if t >= 0 else "#969696" for t in tier_of], width=0.8)
    axes[1].set_ylabel("round training\ntime (virtual s)")
    axes[1].legend(
        handles=[Patch(color=colours[t], label=f"tier {t}") for t in range(k)],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.005, 1),
        frameon=False,
    )
    if probs:
        p = np.array([[float(v) for v in str(r["tier_probs"]).split()] for r in probs])
        px = [int(r["round"]) - 0.5 for r in probs] + [int(probs[-1]["round"]) + 0.5]
        p = np.vstack([p, p[-1:]])
        axes[2].stackplot(px, p.T, colors=colours[: p.shape[1]], step="post")
        axes[2].set_ylabel("tier probability")
        axes[2].set_ylim(0, 1)
    axes[-1].set_xlim(lo, hi)
    axes[-1].set_xlabel("round")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    for a in axes[1:]:
        a.grid(alpha=0.3)
    prof = data.summary.get("profiling_time_s")
    extra = f", profiling {prof:.4g} virtual s before round 1" if isinstance(prof, float) else ""
    fig.suptitle(_title(data, f"TiFL tier occupancy, {len(x)} rounds{extra}"), fontsize=10)
    fig.text(0.01, 0.01, tiers.note, fontsize=7, color="#525252")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
