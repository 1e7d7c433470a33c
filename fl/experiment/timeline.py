"""A timeline of a run in virtual time, drawn from its results folder.

`render_timeline(results)` reads `messages.csv`, `rounds.csv`, `config.toml` (and `summary.json`
if present) and writes `timeline.png` (a Gantt chart of virtual time: a row per node with
download / compute / upload bars, a mark per message that did not reply, offline periods, round
or model-update boundaries; above `aggregate_above` nodes a row per tier or device group showing
its busy fraction), `staleness.png` (asynchronous runs), `tiers.png` (TiFL) and, with
`html=True`, `timeline.html` (Plotly, `pip install "fl[viz]"`).

Not recorded, so reconstructed here (each figure says so): the staleness of each update
(`update_staleness`), TiFL's tier membership (`tifl_tiers`), and offline periods (the seeded
device population rebuilt from config.toml). `timeline_data` reads and reconstructs;
`timeline_gantt` and `timeline_panels` draw with matplotlib, `timeline_html` with Plotly.
"""

from __future__ import annotations

from pathlib import Path

from fl.experiment.timeline_data import load_run, update_staleness
from fl.experiment.timeline_gantt import gantt_figure, plt  # the Agg backend
from fl.experiment.timeline_panels import staleness_figure, tiers_figure

__all__ = ["render_timeline"]


def render_timeline(
    results: Path, out: Path | None = None, *, html: bool = False, aggregate_above: int = 200
) -> list[Path]:
    """Draw the timeline figures of the results folder `results` into `out` (default: the folder
    itself) and return the files written. Raises FileNotFoundError / ValueError (one line) when
    `results` is not a results folder or holds no messages; `html=True` needs Plotly."""
    if html:
        from fl.experiment.timeline_html import require_plotly

        require_plotly()  # fail before drawing anything
    data = load_run(Path(results), aggregate_above)
    out = Path(out) if out is not None else data.path
    out.mkdir(parents=True, exist_ok=True)
    figures = [("timeline.png", gantt_figure(data, aggregate_above)[0])]
    stale = update_staleness(data)
    if stale is not None and len(stale.tau):
        figures.append(("staleness.png", staleness_figure(data, stale)))
    if data.tiers is not None and data.tiers.num_tiers > 0:
        figures.append(("tiers.png", tiers_figure(data, data.tiers)))
    written = []
    for name, fig in figures:
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    if html:
        from fl.experiment import timeline_html

        written.append(timeline_html.write_html(data, out / "timeline.html", aggregate_above))
    return written
