"""What a run's timeline is drawn from: its results folder read back, and what the folder does
not record rebuilt (each figure says so): the staleness of each update (`update_staleness`),
TiFL's tier membership (`tifl_tiers`), and offline periods (the seeded device population rebuilt
from config.toml). `fl.experiment.timeline` draws from it.
"""

from __future__ import annotations

import csv
import inspect
import json
import tomllib
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fl.experiment.build import experiment_devices
from fl.experiment.config import load_config
from fl.profiling.latency import LatencyProfile
from fl.sim.grid import FIRST_NODE_ID
from fl.strategies.registry import ASYNC_STRATEGIES
from fl.strategies.tiers import split_tiers
from fl.strategies.tifl import TiFL


@dataclass
class Messages:
    """messages.csv as column arrays (one entry per message, in dispatch order)."""

    message_id: list[str]
    node: np.ndarray  # int64 node ids
    kind: np.ndarray  # "train", "evaluate", "query", ...
    group: np.ndarray  # group_id ("v<k>" for asynchronous train messages, "profiling-<r>")
    sent: np.ndarray
    arrives: np.ndarray
    download: np.ndarray
    compute: np.ndarray
    upload: np.ndarray
    status: np.ndarray
    error: list[str]

    def __len__(self) -> int:
        return len(self.message_id)

    @property
    def finish(self) -> np.ndarray:
        """When each reply would arrive (the device's work ends), lost or not."""
        return self.sent + self.download + self.compute + self.upload


@dataclass
class Staleness:
    """Staleness τ of each applied asynchronous update (model versions, not seconds)."""

    time: np.ndarray  # virtual time the update was applied
    node: np.ndarray
    tau: np.ndarray
    windows_checked: int  # model updates whose recomputed mean matches rounds.csv
    windows: int
    note: str


@dataclass
class Tiers:
    """TiFL's tiers as far as the results folder tells (tier 0 = fastest)."""

    member: dict[int, int]  # node → tier (-1: not tiered)
    num_tiers: int
    note: str


@dataclass
class RunData:
    """Everything the timeline needs from one results folder."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rounds: list[dict[str, Any]]
    messages: Messages
    nodes: list[int]  # every node of the run, in row order
    end: float  # virtual time at the end of the run
    strategy: str
    asynchronous: bool
    tiers: Tiers | None = None
    groups: dict[int, str] = field(default_factory=dict)  # node → device group label
    group_order: list[str] = field(default_factory=list)
    offline: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading
def _read_table(path: Path) -> list[dict[str, str]]:
    """CSV rows as strings; a truncated last row (a table still being written) is skipped."""
    with path.open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if None not in r.values() and None not in r]


def _number(text: str) -> Any:
    """A CSV field as int, float, bool or the text itself."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def _floats(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key] or "nan") for r in rows], dtype=float)


MESSAGE_FIELDS = (
    "message_id",
    "node_id",
    "message_type",
    "group_id",
    "sent_at",
    "arrives_at",
    "status",
    "download_s",
    "compute_s",
    "upload_s",
    "error",
)


def load_messages(path: Path) -> Messages:
    """Read messages.csv into column arrays (ValueError if it lacks a column the timeline uses)."""
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), [])
    rows = _read_table(path)
    missing = [c for c in MESSAGE_FIELDS if c not in header]
    if missing and rows:
        raise ValueError(f"{path}: not a messages table (no column {', '.join(missing)})")
    return Messages(
        message_id=[r["message_id"] for r in rows],
        node=np.array([int(r["node_id"]) for r in rows], dtype=np.int64),
        kind=np.array([r["message_type"] for r in rows], dtype=object),
        group=np.array([r["group_id"] for r in rows], dtype=object),
        sent=_floats(rows, "sent_at"),
        arrives=_floats(rows, "arrives_at"),
        download=_floats(rows, "download_s"),
        compute=_floats(rows, "compute_s"),
        upload=_floats(rows, "upload_s"),
        status=np.array([r["status"] for r in rows], dtype=object),
        error=[r["error"] for r in rows],
    )


def load_run(results: Path, aggregate_above: int | None = None) -> RunData:
    """Read a results folder and reconstruct what it does not record (see module docstring).
    With more than `aggregate_above` nodes (drawn aggregated) offline periods are not rebuilt,
    and the device population only for a `tiers` population (its groups are the rows)."""
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no such results folder")
    for name in ("messages.csv", "rounds.csv", "config.toml"):
        if not (results / name).is_file():
            raise FileNotFoundError(f"{results}: not a results folder (no {name})")
    msgs = load_messages(results / "messages.csv")
    if len(msgs) == 0:
        raise ValueError(
            f"{results}/messages.csv has no messages (runs on Flower's engines record none)"
        )
    config = tomllib.loads((results / "config.toml").read_text())
    summary_path = results / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    rounds = [{k: _number(v) for k, v in r.items()} for r in _read_table(results / "rounds.csv")]
    strategy = str(config.get("strategy", {}).get("name", summary.get("strategy", "")))
    ended = [float(r["virtual_time"]) for r in rounds if r.get("virtual_time", "") != ""]
    answered = msgs.arrives[np.isin(msgs.status, ["replied", "client-error"])]
    end = max([*ended, float(summary.get("virtual_time_s") or 0.0)], default=0.0)
    end = max(end, float(np.max(answered, initial=0.0)), float(np.max(msgs.sent)))
    ids = {int(n) for n in msgs.node}
    ids.update(range(FIRST_NODE_ID, FIRST_NODE_ID + int(config.get("num_nodes", 0))))
    data = RunData(
        path=results,
        config=config,
        summary=summary,
        rounds=rounds,
        messages=msgs,
        nodes=[],
        end=end if end > 0 else 1.0,
        strategy=strategy,
        asynchronous=strategy in ASYNC_STRATEGIES,
    )
    tifl = strategy == "tifl" or any(_int(r, "tier") >= 0 for r in rounds)
    if aggregate_above is None or len(ids) <= aggregate_above:
        _rebuild_devices(data, offline=True)
    elif not tifl and config.get("devices", {}).get("kind") == "tiers":
        _rebuild_devices(data, offline=False)
    if tifl:
        data.tiers = tifl_tiers(data)
    data.nodes = sorted(ids, key=lambda n: (_group_rank(data, n), n))
    return data


def _group_rank(data: RunData, node: int) -> int:
    """Row order: by TiFL tier (untiered last), else by device group, then node id."""
    if data.tiers is not None and data.tiers.num_tiers > 0:
        t = data.tiers.member.get(node, -1)
        return t if t >= 0 else data.tiers.num_tiers
    if data.groups and data.group_order:
        return data.group_order.index(data.groups.get(node, data.group_order[-1]))
    return 0


def _rebuild_devices(data: RunData, offline: bool) -> None:
    """The nodes' device groups (kept if there are 2 to 12: tiers, stragglers; not one per phone)
    and offline periods, from the device population config.toml describes (it is seeded)."""
    try:
        devices = experiment_devices(load_config(data.path / "config.toml"))
    except Exception as exc:  # an old or edited config: draw without devices
        data.notes.append(f"device population not rebuilt ({type(exc).__name__}): no offline bands")
        return
    groups = {FIRST_NODE_ID + i: dev.group for i, dev in enumerate(devices)}
    if 2 <= len(set(groups.values())) <= 12:
        data.groups, data.group_order = groups, sorted(set(groups.values()))
    for i, dev in enumerate(devices if offline else []):
        avail = dev.availability
        if not hasattr(avail, "state_and_next"):
            continue  # always on
        t, spans = 0.0, []
        while t < data.end:
            online, nxt = avail.state_and_next(t)
            if not online:
                spans.append((t, min(nxt, data.end)))
            t = nxt
        data.offline[FIRST_NODE_ID + i] = spans


# ----------------------------------------------------------------------------- statuses
# the mark of a message that did not reply, by status (categories of timeline_gantt.MARKS)
_MARK = {
    "lost-offline": "offline",
    "lost-failed": "failed",
    "lost-ttl": "lost",
    "client-error": "error",
    "pending": "pending",
}


def mark_category(status: str, error: str, asynchronous: bool) -> str | None:
    """Which mark a message gets: None (replied), else a category of `timeline_gantt.MARKS`. An
    `expired` message (lost; the server waited for its TTL) is classed by the loss its error
    names; a `deadline` message of an asynchronous run was in flight when the run stopped."""
    if status == "replied":
        return None
    if status == "deadline":
        return "abandoned" if asynchronous else "deadline"
    if status == "expired":
        lost = error.split(":", 1)[0]
        return _MARK[lost] if lost in ("lost-offline", "lost-failed") else "lost"
    return _MARK.get(status, "other")


def categories(data: RunData) -> np.ndarray:
    """`mark_category` of every message ("" for replied)."""
    m, sync = data.messages, data.asynchronous
    cats = [mark_category(s, e, sync) or "" for s, e in zip(m.status, m.error, strict=True)]
    return np.array(cats, dtype=object)


# ----------------------------------------------------------------------------- asynchronous
def update_staleness(data: RunData) -> Staleness | None:
    """The staleness of every applied update: version applied − version sent. rounds.csv gives
    each model update's version (`round` − 1), time and the `nodes` in its window; each node's
    replied train messages (in arrival order, tagged `v<k>` with the version sent) are matched to
    the windows it appears in. None if the run is not asynchronous."""
    if not data.asynchronous:
        return None
    m = data.messages
    queue: dict[int, deque[tuple[float, int]]] = defaultdict(deque)
    order = np.lexsort((np.arange(len(m)), m.arrives))
    for i in order:
        g = str(m.group[i])
        if m.kind[i] == "train" and m.status[i] == "replied" and g[:1] == "v" and g[1:].isdigit():
            queue[int(m.node[i])].append((float(m.arrives[i]), int(g[1:])))
    times: list[float] = []
    nodes: list[int] = []
    taus: list[int] = []
    checked = windows = 0
    for row in sorted(data.rounds, key=lambda r: int(r["round"])):
        window = str(row.get("nodes", "")).split()
        if not window or int(row["round"]) < 1:
            continue
        windows += 1
        t, version, mine = float(row["virtual_time"]), int(row["round"]) - 1, []
        for n in map(int, window):
            q = queue[n]
            if q and q[0][0] <= t + 1e-9:
                mine.append(version - q.popleft()[1])
                times.append(t)
                nodes.append(n)
                taus.append(mine[-1])
        recorded = row.get("staleness", "")
        if len(mine) == len(window) and recorded != "" and abs(np.mean(mine) - recorded) < 1e-6:
            checked += 1
    note = (
        "per-update staleness = update's version − the version its message was sent "
        f"(messages.csv group_id); matches rounds.csv's mean staleness in {checked} of "
        f"{windows} model updates"
    )
    return Staleness(
        np.array(times), np.array(nodes, dtype=np.int64), np.array(taus), checked, windows, note
    )


# ----------------------------------------------------------------------------- TiFL
def _tifl_option(config: dict[str, Any], name: str) -> Any:
    """A TiFL option from config.toml, or TiFL's default for it."""
    options = config.get("strategy", {}).get("options", {})
    if name in options:
        return options[name]
    return inspect.signature(TiFL.__init__).parameters[name].default


def tifl_tiers(data: RunData) -> Tiers:
    """TiFL's tier of every node. Not recorded: recomputed from the profiling messages
    (`group_id` profiling-<r>: latency = arrival − send, a miss charged `t_max`, nodes that
    always missed are dropouts) with TiFL's own `split_tiers`, and kept if every round's
    selected nodes lie in the tier rounds.csv says was drawn; otherwise each node gets the tier
    it was most often selected from (never-selected nodes: -1)."""
    num_tiers = int(_tifl_option(data.config, "num_tiers"))
    selected: dict[int, Counter[int]] = defaultdict(Counter)
    for r in data.rounds:
        tier = _int(r, "tier")
        if tier < 0 or str(r.get("pool_tiers", "")).count(" "):
            continue
        for n in str(r.get("selected", "")).split():
            selected[int(n)][tier] += 1
    if not selected:
        return Tiers({}, 0, "no round selected a tier (vanilla TiFL): no tiers")
    m = data.messages
    prof = LatencyProfile(float(_tifl_option(data.config, "t_max")))
    for i in np.flatnonzero([str(g).startswith("profiling-") for g in m.group]):
        if m.status[i] == "replied":
            prof.observe(int(m.node[i]), float(m.arrives[i] - m.sent[i]))
        else:
            prof.charge_timeout(int(m.node[i]))
    member: dict[int, int] = {}
    if prof.count:
        tiers = split_tiers(prof.means(), num_tiers, str(_tifl_option(data.config, "tiering")))
        member = {n: t for t, nodes in enumerate(tiers) for n in nodes}
    agree = all(member.get(n) == t for n, c in selected.items() for t in c)
    rounds = sum(1 for r in data.rounds if _int(r, "tier") >= 0)
    if agree:
        note = (
            "tier membership is not recorded: recomputed from the profiling latencies "
            f"(TiFL's rule), consistent with the selections of all {rounds} tiered rounds"
        )
        return Tiers(member, num_tiers, note)
    note = (
        "tier membership is not recorded: inferred from which tier's rounds selected each "
        "node (the profiling latencies disagree, e.g. re-tiering); never-selected: not tiered"
    )
    return Tiers({n: c.most_common(1)[0][0] for n, c in selected.items()}, num_tiers, note)


def _int(row: dict[str, Any], key: str, default: int = -1) -> int:
    """An integer column of a rounds.csv row (`default` where the row leaves it empty)."""
    value = row.get(key, "")
    return default if value == "" or value is None else int(value)
