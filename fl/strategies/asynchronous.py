"""The common part of asynchronous strategies: versions, staleness, a buffer of M updates.

An asynchronous strategy keeps `concurrency` nodes busy. Each node is sent the current model
tagged with its version; when its reply arrives, its staleness is τ = current version − version
it was sent (model versions, never seconds). Replies are buffered; once `buffer_size` (M) are in,
the strategy applies them in one model update and the version grows by one (M = 1: fully
asynchronous; M > 1: FedBuff-style). What differs between AdaSGD, DynSGD, FedAsync and FedBuff is
only the weight of each update (`update_weight`) and how a window is applied (`apply_window`).

Distrust: what a client reports is attacker input. Staleness comes from server-side versions
(the task table), never from the reply. Label counts must be integer counts summing to the
reply's `examples-processed`; a reply that names a `model-version` other than the one it was
sent is rejected. Two defences bound what fast or replaying attackers gain:

- **Rate limit** (`rate_limit` = r, `rate_window` = W): a node is handed no work while r of the
  last W replies (accepted or rejected) are its own. F malicious nodes then hold at most r·F of
  any W consecutive replies, so with r·F < W/2 and no rejections a robust rule over a window of
  W (or the AdaSGD stream) keeps an honest majority however fast the attackers are. Rejected
  replies count, so nodes whose replies are always rejected cannot hold the slots while the
  window stands still. If every idle node is over its limit and nothing is in flight the limit
  is waived (`rate_limit_waived`), so a run cannot stall; with fewer than W/r nodes online
  the limit cannot hold and the run proceeds in waves.
- **Replay check** (`replay_check`; off by default, since a deterministic client — full-batch
  training, a toy that returns a fixed step — legitimately repeats its delta): each node's
  last `REPLAY_MEMORY` deltas are kept as a sketch (`REPLAY_SKETCH` fixed coordinates) with
  the version each was trained on; a delta trained on another version that lies within
  `REPLAY_TOLERANCE` of one of them is rejected as a replay. Two tasks on the same version may
  legitimately give the same delta (a node with no more examples than a batch trains
  full-batch); on different models an honest node's deltas differ by far more than 10⁻³. An
  attacker resending an old delta against a fresh version (`stale_replay`) is caught unless it
  perturbs it — then it is an ordinary stale update, bounded by the robust rule.

Composition: a strategy = selection (here: idle nodes, uniformly) × aggregation rule
(`aggregator`, one of `fl.strategies.aggregation.AGGREGATORS`) × staleness policy (the subclass's
λ(τ)). With a robust rule, each buffered delta is pre-scaled by its staleness weight λ_i (computed
by the server, so trusted) and the rule aggregates the pre-scaled deltas unweighted:
w ← w + η_v · rule(λ_1 Δ_1, …, λ_M Δ_M). With `aggregator="mean"` this is today's
w + η_v · mean_i(λ_i Δ_i), computed by the same code (bit-identical).

What a client reports: its trained model, as every Flower ClientApp does (so the same client serves
synchronous strategies). The strategy takes the model delta Δ = w_client − w_sent against the exact
version the node was sent; after one local SGD step this is −lr × the mini-batch gradient FLeet's
clients send, and after several steps the summed steps (FLeet sums its E step-gradients). The reply
also carries `label-counts` (labels of the examples the node trained on) and `work-flops`.

The strategy is a Flower `Strategy`: `start(grid=...)` runs the push/pull pump of
`fl.strategies.async_driver` on any Flower Grid (the virtual grid, or Flower's own engines), with
`num_rounds` counting model updates. `configure_train` hands work to idle nodes and
`aggregate_train` takes replies, so a custom loop can drive it too.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fl.protocol import keys
from fl.protocol.replies import reply_problem
from fl.strategies.aggregation import AGGREGATORS, Aggregator, make_aggregator
from fl.strategies.async_driver import AsyncSettings, EvaluateEachUpdate, pump
from fl.strategies.flatten import Layout, flatten, layout_of, unflatten
from fl.strategies.updates import Task, Update, label_counts_problem, parse_label_counts

WEIGHTINGS = ("uniform", "examples")
REPLAY_MEMORY = 4
"""Deltas per node the replay check remembers."""
REPLAY_SKETCH = 256
"""Coordinates (fixed, seeded) of each remembered delta."""
REPLAY_TOLERANCE = 1e-3
"""‖a − b‖ ≤ this × ‖b‖ + 2⁻²² × ‖g‖ on the sketch (g: the model sent) is a replay: a replayed
δ comes back through float32 as g + δ, rounded by up to 2⁻²⁴·|g| per coordinate, twice."""


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} = {value!r} is invalid: must be {rule}")


class AsyncStrategy(Strategy):
    """Asynchronous (buffered) aggregation of model deltas weighted by their staleness.

    How staleness weights enter a robust rule: the server computes λ_i = `update_weight` for
    every update of a window (from τ_i, and for AdaSGD the labels), pre-scales each delta, and
    applies w ← w + η_v · rule(λ_1 Δ_1, …, λ_M Δ_M) with the rule unweighted. A stale update is
    thus shrunk towards 0 before the rule sees it (for the geometric median a shrunk honest
    delta still pulls towards the honest cluster; an attacker cannot inflate λ, which depends
    only on server-side versions). With "mean" the rule is mean_i(λ_i Δ_i), exactly as before.
    `weighting="examples"` (the num-examples-weighted mean, FedAvg's weights) applies only to
    the mean: reported num-examples are not trusted, so it is rejected with a robust rule.
    Rules whose minimum number of inputs exceeds `buffer_size` (Bulyan: 4f + 3) are rejected;
    a window that `max_staleness` cut below that minimum is dropped (and logged), not applied.

    Parameters
    ----------
    concurrency : int
        Nodes kept busy at once.
    buffer_size : int
        M, updates per model update (1 = fully asynchronous).
    server_lr : float
        η, scales the applied (weighted, averaged) delta.
    lr_decay : float
        The server rate at version v is η / (1 + v) ** lr_decay (FLeet uses 0.3).
    weighting : str
        "uniform" averages the window's weighted deltas (FLeet, FedBuff); "examples" weights
        them by `num-examples` too (FedAvg's weights; only with the mean).
    max_staleness : int | None
        Updates staler than this are dropped (None: never).
    profiler : IProf | Mapping | None
        Optional batch-size chooser called for every request and every reply: an
        `fl.profiling.IProf`, or a mapping of IProf's options (from a config).
    seed : int
        Seeds which idle nodes get work.
    aggregator : str
        The rule over the window's (pre-scaled) deltas: "mean" (default), "geomedian", "bgmd",
        "median", "trimmed_mean", "krum", "multikrum", "bulyan" (`fl.strategies.aggregation`).
    aggregator_options : Mapping[str, Any] | None
        The rule's options, e.g. ``{"beta": 0.1}`` for "bgmd".
    weighted_by_key : str
        The reply metric holding the number of examples (Flower's `weighted_by_key`); it must
        be present and a finite number ≥ 0 in every reply.
    rate_limit : int | None
        r, the most of the last `rate_window` replies one node may hold before it gets no more
        work (None: no limit).
    rate_window : int | None
        W (None: `buffer_size` if > 1, else `concurrency`).
    replay_check : bool
        Reject a delta equal to one the same node sent for another model version (see above).
    """

    def __init__(
        self,
        *,
        concurrency: int = 10,
        buffer_size: int = 1,
        server_lr: float = 1.0,
        lr_decay: float = 0.0,
        weighting: str = "uniform",
        max_staleness: int | None = None,
        profiler: Any = None,
        seed: int = 0,
        aggregator: str = "mean",
        aggregator_options: Mapping[str, Any] | None = None,
        weighted_by_key: str = keys.NUM_EXAMPLES,
        rate_limit: int | None = None,
        rate_window: int | None = None,
        replay_check: bool = False,
    ) -> None:
        _check(int(concurrency) == concurrency and concurrency >= 1, "concurrency",
               concurrency, "an integer ≥ 1")  # fmt: skip
        _check(int(buffer_size) == buffer_size and buffer_size >= 1, "buffer_size",
               buffer_size, "an integer ≥ 1")  # fmt: skip
        _check(math.isfinite(server_lr) and server_lr > 0, "server_lr", server_lr, "> 0")
        _check(math.isfinite(lr_decay) and lr_decay >= 0, "lr_decay", lr_decay, "≥ 0")
        _check(weighting in WEIGHTINGS, "weighting", weighting, f"one of {WEIGHTINGS}")
        _check(max_staleness is None or max_staleness >= 0, "max_staleness", max_staleness,
               "None or ≥ 0")  # fmt: skip
        _check(isinstance(aggregator, str) and aggregator in AGGREGATORS, "aggregator",
               aggregator, f"one of {AGGREGATORS}")  # fmt: skip
        _check(isinstance(weighted_by_key, str) and bool(weighted_by_key), "weighted_by_key",
               weighted_by_key, "a non-empty metric name")  # fmt: skip
        _check(rate_limit is None or (int(rate_limit) == rate_limit and rate_limit >= 1),
               "rate_limit", rate_limit, "None or an integer ≥ 1")  # fmt: skip
        _check(rate_window is None or (int(rate_window) == rate_window and rate_window >= 1),
               "rate_window", rate_window, "None or an integer ≥ 1")  # fmt: skip
        if aggregator != "mean" and weighting != "uniform":
            raise ValueError(
                f"weighting = {weighting!r} is invalid with aggregator = {aggregator!r}: "
                "num-examples weighting applies only to the mean (clients report num-examples "
                "themselves, so a robust rule must not trust them); use weighting = 'uniform'"
            )
        self.aggregator = aggregator
        self.aggregator_options = dict(aggregator_options or {})
        self.rule: Aggregator = make_aggregator(aggregator, self.aggregator_options)
        if self.rule.min_inputs() > buffer_size:
            raise ValueError(
                f"aggregator = {aggregator!r} with {self.aggregator_options} needs at least "
                f"{self.rule.min_inputs()} updates per window; buffer_size = {buffer_size}"
            )
        self.weighted_by_key = weighted_by_key
        self.concurrency = int(concurrency)
        self.buffer_size = int(buffer_size)
        self.server_lr = float(server_lr)
        self.lr_decay = float(lr_decay)
        self.weighting = weighting
        self.max_staleness = max_staleness
        if isinstance(profiler, Mapping):  # from a config: I-Prof's options
            from fl.profiling.iprof import IProf

            try:
                profiler = IProf(**profiler)
            except TypeError as exc:
                raise ValueError(f"profiler = {dict(profiler)!r} is invalid: {exc}") from exc
        self.profiler = profiler
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.rate_limit = None if rate_limit is None else int(rate_limit)
        window = rate_window or (self.buffer_size if self.buffer_size > 1 else self.concurrency)
        self.rate_window = int(window)
        self.replay_check = bool(replay_check)
        # State.
        self.version = 0
        self.arrays: ArrayRecord | None = None
        self.layout: Layout | None = None
        self.weights: torch.Tensor | None = None  # the current model, flat, float64
        self.tasks: dict[int, Task] = {}  # node id → its task in flight
        self.buffer: list[Update] = []
        self.label_totals: np.ndarray | None = None  # labels of all applied updates
        self.num_labels = 0  # length of the label counts replies carry (0: none yet)
        self.staleness_counts: dict[int, int] = {}  # τ → how many updates had it
        self.features: dict[int, dict[str, float]] = {}
        self.resting: dict[int, float] = {}  # node id → clock time it may get work again
        self.clock: Callable[[], float] | None = None  # the loop's clock (virtual or wall)
        self.rejected: list[tuple[int, str]] = []
        self.update_log: list[dict[str, Any]] = []  # one entry per model update (drained)
        self.window_info: dict[str, Any] = {}  # what the robust rule reported on the last window
        self.recent: deque[int] = deque(maxlen=self.rate_window)  # nodes of the last replies
        self.rate_limit_waived = 0
        self.rate_limit_warned = False
        self.sketch_index: torch.Tensor | None = None  # the replay check's coordinates
        self.sketches: dict[int, deque[tuple[int, torch.Tensor]]] = {}  # (version, sketch)

    # ----------------------------------------------------------------- model
    def initialize(self, arrays: ArrayRecord) -> None:
        """Start a run from `arrays` at version 0 (all state of an earlier run is dropped)."""
        self.arrays = arrays
        self.layout = layout_of(arrays)
        self.weights = flatten(arrays, self.layout, torch.float64)
        self.version = 0
        self.rng = np.random.default_rng(self.seed)
        self.tasks.clear()
        self.buffer.clear()
        self.label_totals = None
        self.num_labels = 0
        self.staleness_counts.clear()
        self.resting.clear()
        self.rejected.clear()
        self.update_log.clear()
        # a fresh rule: BGMD's memory and GM's warm start belong to one run
        self.rule = make_aggregator(self.aggregator, self.aggregator_options)
        self.window_info = {}
        self.recent.clear()
        self.rate_limit_waived = 0
        self.sketches.clear()
        self.sketch_index = None
        d = int(self.weights.numel())
        if self.replay_check:
            gen = torch.Generator().manual_seed(self.seed)
            self.sketch_index = (
                torch.arange(d)
                if d <= REPLAY_SKETCH
                else torch.randperm(d, generator=gen)[:REPLAY_SKETCH].sort().values
            )

    def _ensure(self, arrays: ArrayRecord) -> None:
        if self.arrays is None:
            self.initialize(arrays)

    def server_rate(self) -> float:
        """η / (1 + v) ** lr_decay at the current version v."""
        return self.server_lr / (1.0 + self.version) ** self.lr_decay

    # ------------------------------------------------------------- dispatch
    def idle_nodes(self, grid: Grid) -> list[int]:
        """Online nodes with no task in flight and not resting after a failure, in id order."""
        now = self.clock() if self.clock is not None else float(getattr(grid, "now", math.inf))
        return [
            n
            for n in sorted(grid.get_node_ids())
            if n not in self.tasks and self.resting.get(n, -math.inf) <= now
        ]

    def rest(self, node_id: int, until: float) -> None:
        """Give `node_id` no work before `until` (grid clock): a node whose task just failed
        is not handed the next one at the same instant."""
        self.resting[node_id] = until

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Give the current model to idle nodes until `concurrency` are busy.

        `arrays` seeds the model the first time only; afterwards the strategy's own current
        model is sent. `server_round` is ignored: the version tags the work.
        """
        self._ensure(arrays)
        free = self.concurrency - len(self.tasks)
        idle = self.idle_nodes(grid)
        if self.rate_limit is not None and idle:
            online = len(list(grid.get_node_ids()))
            if online * self.rate_limit < self.rate_window and not self.rate_limit_warned:
                self.rate_limit_warned = True
                log(logging.WARNING, "%s: %d online nodes × rate_limit %d < rate_window %d: the "
                    "limit cannot hold and work proceeds in waves", type(self).__name__, online,
                    self.rate_limit, self.rate_window)  # fmt: skip
            held = {n: self.recent.count(n) for n in set(self.recent)}
            under = [n for n in idle if held.get(n, 0) < self.rate_limit]
            if not under and not self.tasks:  # all over their limit, nobody busy: waive it
                self.rate_limit_waived += 1
                under = idle
            idle = under
        if free <= 0 or not idle:
            return []
        picks = self.rng.choice(len(idle), size=min(free, len(idle)), replace=False)
        now = self.clock() if self.clock is not None else float(getattr(grid, "now", 0.0))
        return [self.request(idle[int(i)], config, now) for i in picks]

    def request(self, node_id: int, config: ConfigRecord, now: float = 0.0) -> Message:
        """A train message for `node_id` carrying the current model and version."""
        assert self.arrays is not None, "initialize() first"
        cfg = dict(config)
        cfg[keys.SERVER_ROUND] = self.version + 1
        cfg[keys.MODEL_VERSION] = self.version
        if self.profiler is not None:
            cfg.update(self.profiler.request(node_id, self.features.get(node_id), cfg))
        self.tasks[node_id] = Task(node_id, self.version, self.arrays, now, cfg)
        content = RecordDict({"arrays": self.arrays, "config": ConfigRecord(cfg)})
        return Message(content, node_id, MessageType.TRAIN, group_id=f"v{self.version}")

    def release(self, node_id: int) -> Task | None:
        """Forget `node_id`'s task (its reply was lost); the node becomes idle."""
        return self.tasks.pop(node_id, None)

    # ------------------------------------------------------------- receive
    def receive(self, node_id: int, reply: Message) -> bool:
        """Take one reply; True if it completed a window and the model was updated."""
        task = self.tasks.pop(node_id, None)
        if task is None:
            self.rejected.append((node_id, "reply from a node with no task in flight"))
            return False
        if reply.has_error():
            return False
        weight_key = self.weighted_by_key
        problem = reply_problem(reply, task.arrays, weight_key)
        counts = None
        if problem is None:
            metrics = next(iter(reply.content.metric_records.values()))
            counts, problem = parse_label_counts(metrics.get(keys.LABEL_COUNTS))
            if counts is not None and self.num_labels and len(counts) != self.num_labels:
                problem = (
                    f"{keys.LABEL_COUNTS} has {len(counts)} classes, earlier replies "
                    f"{self.num_labels}"
                )
            if problem is None and counts is not None:
                problem = label_counts_problem(counts, metrics)
            claimed = metrics.get(keys.MODEL_VERSION)
            if problem is None and claimed is not None and claimed != task.version:
                problem = f"{keys.MODEL_VERSION} = {claimed!r}, but it was sent {task.version}"
        if problem is not None:
            self.rejected.append((node_id, problem))
            self.recent.append(node_id)
            return False
        if counts is not None:
            self.num_labels = len(counts)
        assert self.layout is not None
        rec = next(iter(reply.content.array_records.values()))
        model = flatten(rec, self.layout, torch.float64)
        sent = flatten(task.arrays, self.layout, torch.float64)
        delta = model - sent
        replayed = self._replayed(node_id, task.version, delta, sent)
        if replayed is not None:
            self.rejected.append((node_id, replayed))
            self.recent.append(node_id)
            return False
        metrics = next(iter(reply.content.metric_records.values()))
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        if self.profiler is not None:
            self.profiler.observe(node_id, self.features.get(node_id), task.config, scalars)
        self.buffer.append(
            Update(
                node_id=node_id,
                version=task.version,
                staleness=self.version - task.version,
                model=model,
                delta=delta,
                num_examples=float(scalars.get(weight_key, 1.0)),
                label_counts=counts,
                metrics=scalars,
                reply=reply,
            )
        )
        self.recent.append(node_id)
        if len(self.buffer) < self.buffer_size:
            return False
        return self._apply_buffer()

    def _replayed(
        self, node_id: int, version: int, delta: torch.Tensor, sent: torch.Tensor
    ) -> str | None:
        """Why `delta` (trained on `version` from `sent`) replays one of the node's earlier
        deltas trained on another version (None: it is new); a new delta is remembered."""
        if not self.replay_check or self.sketch_index is None:
            return None
        sketch = delta[self.sketch_index]
        rounding = 2.0**-22 * float(sent[self.sketch_index].norm())
        seen = self.sketches.setdefault(node_id, deque(maxlen=REPLAY_MEMORY))
        for old_version, old in seen:
            ref = float(old.norm())
            close = float((sketch - old).norm()) <= REPLAY_TOLERANCE * ref + rounding
            if old_version != version and ref > 0 and close:
                return f"replayed update: its delta equals the one it sent on version {old_version}"
        if float(sketch.norm()) > 0:
            seen.append((version, sketch))
        return None

    def _apply_buffer(self) -> bool:
        """Apply the buffered window; False if `max_staleness` dropped all of it (no update)."""
        window, self.buffer = self.buffer, []
        for u in window:
            u.staleness = self.version - u.version
        kept = [
            u for u in window if self.max_staleness is None or u.staleness <= self.max_staleness
        ]
        kept_ids = {id(u) for u in kept}
        for u in window:
            if id(u) not in kept_ids:
                self.rejected.append(
                    (u.node_id, f"staleness {u.staleness} > max_staleness {self.max_staleness}")
                )
        rule = self._robust_rule()
        if kept and rule is not None and len(kept) < rule.min_inputs():
            reason = (
                f"window of {len(kept)} updates after max_staleness is below the "
                f"{rule.min_inputs()} aggregator {self.aggregator!r} needs"
            )
            log(logging.WARNING, "%s: version %d not updated: %s", type(self).__name__,
                self.version, reason)  # fmt: skip
            self.rejected.extend((u.node_id, reason) for u in kept)
            kept = []
        if not kept:
            for u in window:
                self.staleness_counts[u.staleness] = self.staleness_counts.get(u.staleness, 0) + 1
            return False
        info: dict[str, Any] = {
            "round": self.version + 1,
            "window": len(window),
            "dropped_stale": len(window) - len(kept),
            "nodes": " ".join(str(u.node_id) for u in window),
            "staleness": float(np.mean([u.staleness for u in window])),
            "max_staleness": max(u.staleness for u in window),
            "server_lr": self.server_rate(),
        }
        if self.rate_limit is not None:
            info["rate_limit_waived"] = self.rate_limit_waived
        weights: list[float] = []
        for u in kept:
            w, extra = self.update_weight(u)
            weights.append(w)
            for k, v in extra.items():
                info.setdefault(k, []).append(v)
        for k in list(info):
            if isinstance(info[k], list):
                info[k] = float(np.mean(info[k]))
        info["weight"] = float(np.mean(weights)) if weights else math.nan
        assert self.weights is not None and self.layout is not None and self.arrays is not None
        self.window_info = {}
        self.weights = self.apply_window(kept, weights)
        info.update(self.window_info)
        self.arrays = unflatten(self.weights, self.layout, self.arrays)
        for u in window:
            self.staleness_counts[u.staleness] = self.staleness_counts.get(u.staleness, 0) + 1
        for u in kept:
            if u.label_counts is not None:
                if self.label_totals is None:
                    self.label_totals = np.zeros(len(u.label_counts))
                self.label_totals += u.label_counts
        self.version += 1
        self.update_log.append(info)
        return True

    # ------------------------------------------------------- policy pieces
    def update_weight(self, update: Update) -> tuple[float, dict[str, float]]:
        """Weight λ of one update (and any per-update info to log). Plain async SGD: 1."""
        return 1.0, {}

    def _robust_rule(self) -> Aggregator | None:
        """The window's rule if it is not the mean (None: today's mean code path)."""
        return None if self.rule.name == "mean" else self.rule

    def apply_window(self, window: list[Update], weights: list[float]) -> torch.Tensor:
        """w + η_v · mean_i(λ_i Δ_i) (or the num-examples-weighted mean); with a robust rule
        w + η_v · rule(λ_1 Δ_1, …, λ_M Δ_M), the rule unweighted."""
        assert self.weights is not None
        rule = self._robust_rule()
        if rule is not None:
            G = torch.stack([lam * u.delta for u, lam in zip(window, weights, strict=True)])
            step = rule(G)
            extra: dict[str, Any] = {"aggregator": rule.name}
            for k, v in rule.info.items():
                if k == "selected":  # row indices → node ids
                    v = " ".join(str(window[int(i)].node_id) for i in str(v).split())
                extra[f"agg_{k}"] = v
            self.window_info = extra
            return self.weights + self.server_rate() * step
        if self.weighting == "examples":
            total = sum(u.num_examples for u in window)
            shares = [u.num_examples / total if total > 0 else 1.0 / len(window) for u in window]
        else:
            shares = [1.0 / len(window)] * len(window)
        step = torch.zeros_like(self.weights)
        for u, lam, share in zip(window, weights, shares, strict=True):
            step += (lam * share) * u.delta
        return self.weights + self.server_rate() * step

    # ------------------------------------------------------ Flower's ABC
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Take replies in order (each from the node it names); return the current model if at
        least one model update happened."""
        before = self.version
        for reply in replies:
            self.receive(int(reply.metadata.src_node_id), reply)
        if self.version == before:
            return None, None
        return self.arrays, MetricRecord({keys.MODEL_VERSION: self.version})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Asynchronous strategies evaluate centrally (`evaluate_fn`); no node evaluation."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """No federated evaluation (see configure_evaluate)."""
        return None

    def summary(self) -> None:
        """Log the configuration (Flower calls this at start)."""
        log(20, "\t%s: %s", type(self).__name__, self.describe())

    def describe(self) -> dict[str, Any]:
        """The strategy's settings, for logs and result tables."""
        return {
            "concurrency": self.concurrency,
            "buffer_size": self.buffer_size,
            "server_lr": self.server_lr,
            "lr_decay": self.lr_decay,
            "weighting": self.weighting,
            **(
                {"aggregator": self.aggregator, "aggregator_options": self.aggregator_options}
                if self._robust_rule() is not None
                else {}
            ),
            **(
                {"rate_limit": self.rate_limit, "rate_window": self.rate_window}
                if self.rate_limit is not None
                else {}
            ),
            **({"replay_check": True} if self.replay_check else {}),
            **(
                {"weighted_by_key": self.weighted_by_key}
                if self.weighted_by_key != keys.NUM_EXAMPLES
                else {}
            ),
        }

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run the asynchronous pump on `grid` until `num_rounds` model updates.

        Same signature as Flower's `Strategy.start`, so a ServerApp runs an asynchronous
        strategy exactly like a synchronous one; `timeout` is each task's TTL, `evaluate_fn` is
        called after every model update (as Flower calls it after every round). Client metrics
        are not aggregated (`train_metrics_clientapp` stays empty) and `evaluate_config` is
        unused: asynchronous strategies do no federated evaluation. A run in which no update
        was applied logs an error saying why.
        """
        self.summary()
        out = Result(arrays=initial_arrays)
        if evaluate_fn is not None:
            rec = evaluate_fn(0, initial_arrays)
            if rec is not None:
                out.evaluate_metrics_serverapp[0] = rec
        settings = AsyncSettings(
            max_updates=num_rounds,
            timeout=timeout,
            eval_every=1,
            train_config=train_config or ConfigRecord(),
        )
        stop = pump(
            self, grid, initial_arrays, settings, EvaluateEachUpdate(self, out, evaluate_fn)
        )
        assert self.arrays is not None
        out.arrays = self.arrays
        if self.version == 0:
            log(40, "%s: no model update was applied (%s)", type(self).__name__, stop)
        return out
