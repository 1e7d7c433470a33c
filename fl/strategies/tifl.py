"""TiFL: tier-based client selection (Chai et al., HPDC 2020) as a Flower message-API strategy.

The server profiles every available node's response latency, groups the nodes into tiers of
similar latency, and each round selects all of its clients from one tier, so a round waits
only for nodes of similar speed. Policies: `vanilla` (no tiers: uniform over all nodes, the
FedAvg baseline), static tier probabilities (`uniform`, `fast`, `slow`, `random` or an explicit
vector), and `adaptive`, the credit-based policy that favours tiers whose accuracy lags.

Choices where the paper's text leaves room, all of them options:
- Profiling happens inside the first `configure_train`: `profiling_rounds` rounds in which every
  available node trains on the current model with deadline `t_max`; a node that misses it is
  charged `t_max`, and one that never answers is a dropout (never selected). Profiling updates
  are discarded (the model is unchanged), so policies are compared on equal training rounds;
  its duration is reported separately (`profiling_time`).
- Latency = reply `created_at` − instruction `created_at` (message metadata only).
- Tiering: equal-count split by default (`tiering="histogram"` for equal-width bins).
  `reprofile_every=N` re-tiers every N rounds from the mean of all latencies observed so far,
  training rounds included (a selected node that misses the round is charged `t_max`).
- Adaptive: tier accuracy is the weighted `eval_acc` of federated evaluation on each tier's own
  nodes (their local test splits), every round. Every `interval` rounds, if the accuracy of the
  tier chosen last did not improve over the interval (`require_no_improvement`), the
  probabilities are recomputed: eligible tiers ranked by accuracy, lowest first, rank i gets
  (n−i)/D with D = n(n−1)/2 (`rank_formula="paper"`) or n(n+1)/2 (`"fltk"`). Credits: `equal`
  (ceil(R/m) each), `credit_fractions` (a share of R per tier, fastest first), or
  `credit_skew` (Dirichlet-skewed, FLGo's formula). A tier out of credits is never chosen.
- A tier with fewer online nodes than `clients_per_round` contributes all of them; a tier with
  none is skipped for that draw.
- Aggregation: FedAvg, or any Flower strategy's `aggregate_train` given as `aggregator`.
- Waiting for nodes: like FedAvg's sampling (Flower's `sample_nodes`), profiling and every
  training round first wait until `min_available_nodes` nodes are connected — in virtual time
  on the virtual grid (`wait_for_nodes`), by polling `get_node_ids()` on Flower's grids.
- FedAvg's `fraction_train` and `min_train_nodes` do not apply (TiFL selects
  `clients_per_round` nodes from one tier): they are not parameters, so passing them is an
  error; its other options (evaluation sampling, record keys, metric aggregation,
  `min_available_nodes`) are honoured.
- Malicious nodes on fast devices (or that answer fast) concentrate in the fast tiers: with 20 %
  attackers holding the fastest devices, `policy="fast"` draws every round from a tier that is
  all attackers, and no robust aggregator survives a malicious majority among its rows. Defence
  (`num_malicious_nodes` = f > 0): the round's pool is the drawn tier widened by its nearest
  tiers (faster first, then slower) until it holds ≥ `pool_factor` · f online nodes. Even if
  every attacker sits in it, the pool's malicious share is then ≤ 1/pool_factor, and a cohort
  of k drawn from it is hypergeometric with that mean: with k = 10 and pool_factor = 4 a
  malicious majority (≥ 6 of 10) has probability ≤ 2 % per round (binomial bound; 0.7 % for a
  pool of 40 holding 10 attackers), and half the cohort (≥ 5) ≤ 8 %. This protects only a
  robust `aggregator` (a geometric median, breakdown point 1/2): with the default FedAvg one
  attacker suffices. If the online nodes are fewer than pool_factor · f the pool is every tier
  and the bound is void (logged as a warning).
  The price is latency: the widened pool reaches into slower tiers (`pool_tiers` is logged).
  The server must assume f, as Krum does; TiFL's tier credits and probabilities are unchanged.
- If profiling leaves no tiered node (every node missed `t_max`), TiFL logs an error and raises
  a RuntimeError rather than run rounds with no clients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fl.profiling.latency import LatencyProfile, reply_latencies
from fl.protocol import keys
from fl.strategies.tiers import (
    RANK_FORMULAS,
    STATIC_POLICIES,
    TIERINGS,
    change_probs,
    credits_from_fractions,
    dirichlet_credits,
    equal_credits,
    restrict,
    split_tiers,
    static_probabilities,
)

POLICIES = ("vanilla", *STATIC_POLICIES, "adaptive")


MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]


class TiFL(FedAvg):
    """Tier-based client selection with FedAvg (or a plugged-in) aggregation.

    Parameters (beyond FedAvg's)
    ----------------------------
    policy : str
        "vanilla" (no tiers: FedAvg sampling), "uniform", "fast", "slow", "random",
        "adaptive" (credits and accuracy-driven probabilities) or "static" (requires
        `probabilities`).
    clients_per_round : int
        Nodes selected per round (from one tier, or from all nodes for "vanilla").
    num_tiers : int
        m, the number of tiers.
    profiling_rounds : int
        Profiling rounds before tiering (every node trains; its latency is measured).
    t_max : float
        The deadline of a profiling round (seconds of the grid's clock); nodes that miss every
        profiling deadline are dropouts and never selected.
    tiering : str
        "quantile" (equal-count tiers by mean latency) or "histogram" (equal-width latency
        bins).
    reprofile_every : int
        Rounds between re-profiling (0: never).
    probabilities : Sequence[float] | None
        Explicit tier probabilities (fastest tier first) for the "static" policy.
    num_rounds : int | None
        R, the rounds of the run, from which the adaptive policy's credits are computed.
    credit_fractions : Sequence[float] | None
        Skewed credits per tier (adaptive), as fractions of the rounds.
    credit_skew : float | None
        Alternatively, Dirichlet-skewed credits, skew in [0, 1) (0: almost equal; the largest
        share goes to the fastest tier).
    interval : int
        I, rounds between updates of the adaptive tier probabilities.
    rank_formula : str
        "paper" (the published probability formula) or "fltk" (FLTK's implementation).
    require_no_improvement : bool
        Update the probabilities only if the last tier's accuracy did not improve.
    accuracy_key : str
        The evaluate-reply metric read as a tier's accuracy.
    aggregator : Strategy | None
        A Flower strategy whose `aggregate_train` aggregates the selected tier's replies
        (default: FedAvg's); from a config, a strategy name such as "bgmd".
    num_malicious_nodes : int
        f, the malicious nodes a round's pool must dilute (0: a round's pool is one tier).
    pool_factor : float
        A round's pool holds at least pool_factor · f online nodes, widened by the nearest tiers.
    seed : int
        Seeds tier draws and node sampling.

    FedAvg's options: `fraction_evaluate`, `min_evaluate_nodes` (non-adaptive federated
    evaluation), `min_available_nodes` (default `clients_per_round`: connected nodes to wait
    for before profiling and before each round; a config's `strategy.clients_per_round` sets
    it), the record keys and metric aggregators.
    `fraction_train` / `min_train_nodes` are not parameters (TiFL selects `clients_per_round`
    nodes from one tier and would ignore them): passing them is a TypeError naming them.
    """

    def __init__(
        self,
        *,
        policy: str = "adaptive",
        clients_per_round: int = 5,
        num_tiers: int = 5,
        profiling_rounds: int = 3,
        t_max: float = 60.0,
        tiering: str = "quantile",
        reprofile_every: int = 0,
        probabilities: Sequence[float] | None = None,
        num_rounds: int | None = None,
        credit_fractions: Sequence[float] | None = None,
        credit_skew: float | None = None,
        interval: int = 10,
        rank_formula: str = "paper",
        require_no_improvement: bool = True,
        accuracy_key: str = keys.EVAL_ACC,
        aggregator: Strategy | None = None,
        num_malicious_nodes: int = 0,
        pool_factor: float = 4.0,
        seed: int = 0,
        fraction_evaluate: float = 1.0,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int | None = None,
        weighted_by_key: str = keys.NUM_EXAMPLES,
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
    ) -> None:
        if min_available_nodes is None:
            min_available_nodes = clients_per_round
        _check(min_available_nodes >= 0, "min_available_nodes", min_available_nodes, "≥ 0")
        super().__init__(
            fraction_evaluate=fraction_evaluate,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            # Not an option: loops that wait for nodes before a round read it (as
            # `max(min_available, min_train)`); TiFL waits for min_available_nodes.
            min_train_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        _check(
            policy in (*POLICIES, "static"),
            "policy",
            policy,
            f"one of {', '.join(POLICIES)}, static",
        )
        _check(clients_per_round >= 1, "clients_per_round", clients_per_round, "≥ 1")
        _check(num_tiers >= 1, "num_tiers", num_tiers, "≥ 1")
        _check(profiling_rounds >= 1, "profiling_rounds", profiling_rounds, "≥ 1")
        _check(t_max > 0 and math.isfinite(t_max), "t_max", t_max, "a positive number")
        _check(tiering in TIERINGS, "tiering", tiering, f"one of {', '.join(TIERINGS)}")
        _check(reprofile_every >= 0, "reprofile_every", reprofile_every, "≥ 0")
        _check(interval >= 1, "interval", interval, "≥ 1")
        _check(
            rank_formula in RANK_FORMULAS, "rank_formula", rank_formula, f"one of {RANK_FORMULAS}"
        )
        _check(policy != "static" or probabilities is not None, "probabilities", probabilities,
               "given for policy 'static'")  # fmt: skip
        _check(policy != "adaptive" or num_rounds is not None or credit_fractions is None,
               "num_rounds", num_rounds, "given to turn credit_fractions into credits")  # fmt: skip
        _check(num_malicious_nodes >= 0, "num_malicious_nodes", num_malicious_nodes, "≥ 0")
        _check(math.isfinite(pool_factor) and pool_factor >= 2, "pool_factor", pool_factor,
               "≥ 2 (a pool must keep an honest majority)")  # fmt: skip
        self.num_malicious_nodes = int(num_malicious_nodes)
        self.pool_factor = float(pool_factor)
        self.policy = policy
        self.clients_per_round = clients_per_round
        self.num_tiers = num_tiers
        self.profiling_rounds = profiling_rounds
        self.t_max = float(t_max)
        self.tiering = tiering
        self.reprofile_every = reprofile_every
        self.interval = interval
        self.rank_formula = rank_formula
        self.require_no_improvement = require_no_improvement
        self.accuracy_key = accuracy_key
        self.aggregator = aggregator
        self.rng = np.random.default_rng(seed)
        # State.
        self.profile = LatencyProfile(self.t_max)
        self.tiers: list[list[int]] = []
        self.profiled = False
        self.profiling_time = 0.0
        self.probs = (
            static_probabilities(policy, num_tiers, probabilities)
            if policy in (*STATIC_POLICIES, "static")
            else np.full(num_tiers, 1.0 / num_tiers)
        )
        self.credits = self._initial_credits(num_rounds, credit_fractions, credit_skew)
        self.accuracy = np.zeros(num_tiers)
        self.accuracy_prev = np.zeros(num_tiers)
        self.current_tier: int | None = None
        self.last_round_info: dict[str, Any] = {}
        self._sent: list[Message] = []

    # ----------------------------------------------------------------- set-up
    @property
    def requires_evaluation(self) -> bool:
        """Adaptive TiFL needs federated evaluation every round (per-tier accuracy)."""
        return self.policy == "adaptive"

    def _initial_credits(
        self, num_rounds: int | None, fractions: Sequence[float] | None, skew: float | None
    ) -> np.ndarray:
        m = self.num_tiers
        if self.policy != "adaptive":
            return np.full(m, np.inf)
        if fractions is not None:
            if len(fractions) != m:
                raise ValueError(
                    f"credit_fractions = {list(fractions)!r} is invalid: need {m} values"
                )
            assert num_rounds is not None
            return np.asarray(credits_from_fractions(fractions, num_rounds), dtype=float)
        if num_rounds is None:
            return np.full(m, np.inf)  # unlimited: the policy only reorders tiers
        if skew is not None:
            return np.asarray(dirichlet_credits(num_rounds, m, skew, self.rng), dtype=float)
        return np.asarray(equal_credits(num_rounds, m), dtype=float)

    def summary(self) -> None:
        """Log TiFL's selection settings (FedAvg's fractions do not apply)."""
        log(INFO, "\t├──> TiFL: policy '%s', %d tiers", self.policy, self.num_tiers)
        log(INFO, "\t│\t├──Nodes per round: %d (from one tier)", self.clients_per_round)
        log(INFO, "\t│\t├──Profiling: %d rounds, t_max %g", self.profiling_rounds, self.t_max)
        if self.num_malicious_nodes:
            log(INFO, "\t│\t├──Pools widened to ≥ %g nodes (f = %d, pool_factor %g)",
                self.pool_factor * self.num_malicious_nodes, self.num_malicious_nodes,
                self.pool_factor)  # fmt: skip
        log(INFO, "\t│\t└──Minimum available nodes: %d", self.min_available_nodes)
        log(INFO, "\t└──> Keys in records:")
        log(INFO, "\t\t├── Weighted by: '%s'", self.weighted_by_key)
        log(INFO, "\t\t├── ArrayRecord key: '%s'", self.arrayrecord_key)
        log(INFO, "\t\t└── ConfigRecord key: '%s'", self.configrecord_key)

    def _wait_for_nodes(self, grid: Grid) -> None:
        """Wait until enough nodes are connected, as FedAvg's sampling does.

        On the virtual grid the wait passes in virtual time (`wait_for_nodes`); on Flower's
        grids, Flower's own `sample_nodes` polls `get_node_ids()` (sampling nothing).
        """
        k = int(self.min_available_nodes)
        wait = getattr(grid, "wait_for_nodes", None)
        if wait is None:
            sample_nodes(grid, k, 0)
        elif not wait(k):
            msg = (
                f"TiFL waits for min_available_nodes = {k} connected nodes, "
                "but fewer will ever be online"
            )
            log(ERROR, msg)
            raise RuntimeError(msg)

    # -------------------------------------------------------------- profiling
    def _profile(self, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> None:
        """Profile every available node's latency, then tier them (timestamps only)."""
        self._wait_for_nodes(grid)  # once: later profiling rounds profile whoever is connected
        for r in range(self.profiling_rounds):
            nodes = sorted(grid.get_node_ids())
            cfg = ConfigRecord(dict(config))
            cfg[keys.SERVER_ROUND] = 0
            cfg[keys.PROFILING_ROUND] = r + 1
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
            msgs = [
                Message(record, n, MessageType.TRAIN, group_id=f"profiling-{r + 1}") for n in nodes
            ]
            replies = list(grid.send_and_receive(msgs, timeout=self.t_max))
            lat = reply_latencies(msgs, replies)
            self.profile.record_round(nodes, lat)
            if msgs:  # the round lasted until its last reply (of any kind), or its deadline
                start = min(float(m.metadata.created_at) for m in msgs)
                ends = [float(r.metadata.created_at) for r in replies]
                answered = {int(r.metadata.src_node_id) for r in replies}
                done = len(answered & set(nodes)) == len(nodes)
                last = max(ends, default=start) - start
                self.profiling_time += min(last, self.t_max) if done else self.t_max
        self._retier()
        if not any(self.tiers):
            profiled = sorted(self.profile.count)
            msg = (
                f"TiFL profiling left no tiered node: all {len(profiled)} profiled nodes "
                f"missed t_max = {self.t_max:g} s in every one of the {self.profiling_rounds} "
                f"profiling rounds (dropouts: {profiled}); raise t_max or check the devices"
            )
            log(ERROR, msg)
            raise RuntimeError(msg)
        self.profiled = True

    def _retier(self) -> None:
        self.tiers = split_tiers(self.profile.means(), self.num_tiers, self.tiering)

    def node_tier(self) -> dict[int, int]:
        """Map node id → tier index (dropouts and unprofiled nodes are absent)."""
        return {n: t for t, members in enumerate(self.tiers) for n in members}

    # --------------------------------------------------------------- training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Select this round's nodes (one tier, or all for vanilla) and build their tasks."""
        self._wait_for_nodes(grid)
        online = set(grid.get_node_ids())
        if self.policy == "vanilla":
            tier: int | None = None
            pool = sorted(online)
        else:
            if not self.profiled:
                self._profile(arrays, config, grid)
                online = set(grid.get_node_ids())
            elif (
                self.reprofile_every
                and server_round > 1
                and (server_round - 1) % self.reprofile_every == 0
            ):
                self._retier()
            if self.policy == "adaptive":
                self._maybe_update_probs(server_round)
            tier = self._draw_tier(online)
            pool_tiers = self._pool_tiers(tier, online)
            pool = sorted(n for t in pool_tiers for n in self.tiers[t] if n in online)
        k = min(self.clients_per_round, len(pool))
        picks: list[int] = list(self.rng.choice(len(pool), size=k, replace=False)) if k else []
        chosen = sorted(int(pool[int(i)]) for i in picks)  # positions: ids may exceed int64
        if tier is not None:
            self.credits[tier] -= 1
            self.current_tier = tier
        self.last_round_info = {
            "tier": -1 if tier is None else tier,
            "tier_probs": " ".join(f"{p:.4f}" for p in self.probs),
            "credits_left": " ".join("inf" if math.isinf(c) else str(int(c)) for c in self.credits),
            "profiling_time": self.profiling_time,
        }
        if self.num_malicious_nodes and tier is not None:
            self.last_round_info["pool_tiers"] = " ".join(map(str, pool_tiers))
            self.last_round_info["pool_size"] = len(pool)
        config[keys.SERVER_ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        self._sent = list(self._construct_messages(record, chosen, MessageType.TRAIN))
        set_reference = getattr(self.aggregator, "set_reference", None)
        if set_reference is not None:  # aggregators of deltas need the model sent
            set_reference(arrays)
        return self._sent

    def _pool_tiers(self, tier: int | None, online: set[int]) -> list[int]:
        """The tiers a round draws from: `tier`, widened by its nearest tiers (faster first)
        until they hold ≥ pool_factor · num_malicious_nodes online nodes."""
        if tier is None:
            return []
        need = self.pool_factor * self.num_malicious_nodes
        order = sorted(range(len(self.tiers)), key=lambda t: (abs(t - tier), t))
        chosen: list[int] = []
        size = 0
        for t in order:
            if chosen and size >= need:
                break
            chosen.append(t)
            size += sum(1 for n in self.tiers[t] if n in online)
        if size < need:
            f = self.num_malicious_nodes
            log(WARNING, "TiFL: %d online nodes for a pool of ≥ %g (f = %d): the malicious "
                "share is not bounded by 1/pool_factor", size, need, f)  # fmt: skip
        return sorted(chosen)

    def _draw_tier(self, online: set[int]) -> int | None:
        has_nodes = [any(n in online for n in members) for members in self.tiers]
        allowed = [h and c > 0 for h, c in zip(has_nodes, self.credits, strict=True)]
        q = restrict(self.probs, allowed)
        if q is None:
            return None
        return int(self.rng.choice(self.num_tiers, p=q))

    def _maybe_update_probs(self, server_round: int) -> None:
        done = server_round - 1  # completed training rounds
        if done < self.interval or done % self.interval != 0 or self.current_tier is None:
            return
        cur = self.current_tier
        if not self.require_no_improvement or self.accuracy[cur] <= self.accuracy_prev[cur]:
            self.probs = change_probs(self.accuracy, self.credits, self.rank_formula)
        self.accuracy_prev = self.accuracy.copy()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Fold observed latencies into the profile, then aggregate."""
        replies = list(replies)
        if self.reprofile_every:
            lat = reply_latencies(self._sent, replies)
            self.profile.record_round([m.metadata.dst_node_id for m in self._sent], lat)
        if self.aggregator is not None:
            return self.aggregator.aggregate_train(server_round, replies)
        return super().aggregate_train(server_round, replies)

    # ------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Adaptive: evaluate on every online tiered node (per-tier accuracy); else FedAvg's."""
        if self.policy != "adaptive":
            return super().configure_evaluate(server_round, arrays, config, grid)
        online = set(grid.get_node_ids())
        nodes = sorted(n for n in self.node_tier() if n in online)
        config[keys.SERVER_ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, nodes, MessageType.EVALUATE)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Per-tier accuracy (weighted by examples) from the tier's own nodes."""
        replies = list(replies)
        if self.policy == "adaptive":
            tier_of = self.node_tier()
            correct = np.zeros(self.num_tiers)
            count = np.zeros(self.num_tiers)
            for rep in replies:
                if rep.has_error():
                    continue
                t = tier_of.get(int(rep.metadata.src_node_id))
                metrics = next(iter(rep.content.metric_records.values()), None)
                if t is None or metrics is None or self.accuracy_key not in metrics:
                    continue
                n = float(metrics.get(self.weighted_by_key, 1))  # type: ignore[arg-type]
                acc = float(metrics[self.accuracy_key])  # type: ignore[arg-type]
                if math.isfinite(acc) and n > 0:
                    correct[t] += acc * n
                    count[t] += n
            seen = count > 0
            self.accuracy[seen] = correct[seen] / count[seen]
            self.last_round_info["tier_accuracy"] = " ".join(f"{a:.4f}" for a in self.accuracy)
        return super().aggregate_evaluate(server_round, replies)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"TiFL {key} = {value!r} is invalid: must be {allowed}")
