"""Any aggregation rule, then a server optimizer: FedAvg's sampling, robust aggregation of the
clients' deltas, and SGD with momentum and weight decay applied after it.

This is the BGMD authors' training loop as a Flower strategy: each client reply is one row
δ_i = w_i − g (with one local step at learning rate 1, δ_i is minus a mini-batch gradient), a
rule of `fl.strategies.aggregation` reduces the rows to one step s, and `ServerSGD` applies
s as the negative gradient (momentum, Nesterov and weight decay act on the aggregate, as
``torch.optim.SGD`` does in their code). With the default optimizer (lr 1, no momentum, no
weight decay) the new model is g + s, computed as such.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fl.protocol.replies import split_replies
from fl.strategies.aggregation import (
    AGGREGATORS,
    Aggregator,
    check_weight_clip,
    make_aggregator,
    reply_matrix,
)
from fl.strategies.flatten import flatten, layout_of, unflatten
from fl.strategies.geomedian import clipped_reply_weights
from fl.strategies.server_optimizer import ServerSGD

__all__ = ["WEIGHTED_RULES", "RobustAggregation"]

WEIGHTED_RULES = ("mean", "geomedian", "bgmd")
"""The rules of `fl.strategies.aggregation` that use weights (the others ignore them)."""


class RobustAggregation(FedAvg):
    """A robust aggregation rule over the clients' deltas, then SGD on the server.

    Each round, with g the model sent and δ_i = w_i − g the valid replies' deltas::

        s = rule(δ_1, …, δ_n; weights)          (`aggregator`, `aggregator_options`)
        w ← ServerSGD(g, s)                      (pseudo-gradient p = −s + λ·g; momentum μ,
                                                  Nesterov; w = g − η·p)

    and with the defaults (η = 1, μ = 0, λ = 0) simply w = g + s. Nodes are sampled as FedAvg
    samples them. The rule's state (BGMD's memory, a warm-started median) and the optimizer's
    momentum buffer live on this object, so they pickle with it (checkpoints).

    Parameters
    ----------
    aggregator : str (default: "mean")
        The rule: one of `fl.strategies.aggregation.AGGREGATORS` ("mean", "geomedian", "bgmd",
        "median", "trimmed_mean", "krum", "multikrum", "bulyan").
    aggregator_options : Mapping[str, Any] | None (default: None)
        The rule's options, e.g. ``{"beta": 0.1}`` for "bgmd" or ``{"method": "vardi",
        "tol": 1e-5, "max_iter": 50}`` for "geomedian"; see each rule's docstring.
    weighted : bool (default: False)
        Weight each delta by its reported `num-examples`, bounded by `weight_clip` (only for
        the rules that use weights: mean, geomedian, bgmd). Off by default: what a client
        reports is attacker-controlled.
    weight_clip : float (default: 1.0)
        With `weighted`, w_i = min(n_i, weight_clip × median reported n) (`bounded_weights`);
        ≥ 1, `inf` trusts the reports unbounded.
    server_lr : float (default: 1.0)
        The server optimizer's learning rate η > 0.
    server_momentum : float (default: 0.0)
        Momentum μ ∈ [0, 1) on the pseudo-gradient.
    nesterov : bool (default: False)
        Nesterov momentum (needs server_momentum > 0).
    weight_decay : float (default: 0.0)
        L2 penalty λ ≥ 0 added to the pseudo-gradient, after aggregation.
    **fedavg_kwargs
        FedAvg's options (fractions, minimum node counts, record keys, metric aggregation).

    Attributes
    ----------
    rule : Aggregator
        The aggregation rule object (its `info` describes the last call).
    optimizer : ServerSGD
        The server optimizer (its `buffer` is the momentum).
    last_round_info : dict
        Per-round columns for the results: replies rejected here (and why), the rule's info,
        `weights_clipped` when weighted, the norm of the aggregate, the rule's wall time.

    Replies with NaN/Inf, wrong shapes or dtypes, or bad `num-examples` are rejected and
    counted, never aggregated. With no valid reply (or fewer than the rule needs) the model is
    unchanged and a warning on Flower's logger says why.
    """

    def __init__(
        self,
        *,
        aggregator: str = "mean",
        aggregator_options: Mapping[str, Any] | None = None,
        weighted: bool = False,
        weight_clip: float = 1.0,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        if not isinstance(aggregator, str) or aggregator not in AGGREGATORS:
            raise ValueError(
                f"aggregator = {aggregator!r} is invalid: must be one of {', '.join(AGGREGATORS)}"
            )
        if aggregator_options is not None and not isinstance(aggregator_options, Mapping):
            raise ValueError(
                f"aggregator_options = {aggregator_options!r} is invalid: must be a table"
            )
        try:
            rule = make_aggregator(aggregator, aggregator_options)
        except ValueError as exc:
            raise ValueError(_nested_message(aggregator, str(exc))) from exc
        if not isinstance(weighted, bool):
            raise ValueError(f"weighted = {weighted!r} is invalid: must be true or false")
        if weighted and aggregator not in WEIGHTED_RULES:
            raise ValueError(
                f"weighted = True is invalid with aggregator = {aggregator!r}: must be false "
                f"(only {', '.join(WEIGHTED_RULES)} use weights)"
            )
        self.aggregator = aggregator
        self.aggregator_options = dict(aggregator_options or {})
        self.rule: Aggregator = rule
        self.weighted = weighted
        self.weight_clip = check_weight_clip(weight_clip)
        self.optimizer = ServerSGD(
            lr=server_lr, momentum=server_momentum, nesterov=nesterov, weight_decay=weight_decay
        )
        self._global: ArrayRecord | None = None
        self.last_round_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ Flower's interface
    def summary(self) -> None:
        """Log the rule, its options, the weighting and the server optimizer."""
        opt = self.optimizer
        log(logging.INFO, "\t├──> RobustAggregation settings:")
        log(logging.INFO, "\t│\t├── Rule: %s %s", self.aggregator, self.rule.options())
        log(
            logging.INFO,
            "\t│\t├── Weights: %s",
            f"num-examples clipped at {self.weight_clip:g} × median" if self.weighted else "none",
        )
        if opt.is_identity:
            log(logging.INFO, "\t│\t└── Server update: w ← g + rule(δ)")
        else:
            log(
                logging.INFO,
                "\t│\t└── Server SGD on −rule(δ): lr %g, momentum %g%s, weight decay %g",
                opt.lr,
                opt.momentum,
                " (Nesterov)" if opt.nesterov else "",
                opt.weight_decay,
            )
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the model sent (updates are measured against it), then sample as FedAvg."""
        self.set_reference(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def set_reference(self, arrays: ArrayRecord) -> None:
        """The model this round's updates were trained from (a strategy borrowing this
        aggregation calls this instead of configure_train)."""
        self._global = arrays

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate the replies, stack their deltas, apply the rule, step the optimizer."""
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train")
        replies = list(replies)
        valid, rejected = split_replies(replies, self._global, self.weighted_by_key)
        ok = [r for r in valid if not r.has_error()]
        self.last_round_info = {
            "rejected_by_strategy": len(rejected),
            "rejected_by_strategy_why": "; ".join(f"{n}: {w}" for n, w in sorted(rejected.items())),
        }
        need = self.rule.min_inputs()
        if len(ok) < need:
            why = "no valid update" if not ok else f"{len(ok)} valid updates, the rule needs {need}"
            self.last_round_info["aggregation"] = f"skipped: {why}"
            log(
                logging.WARNING,
                "%s: round %s aggregated nothing (model unchanged): %s among the %d replies it "
                "was given (%d rejected here: %s; %d error replies)",
                type(self).__name__,
                server_round,
                why,
                len(replies),
                len(rejected),
                self.last_round_info["rejected_by_strategy_why"] or "none",
                len(valid) - len(ok),
            )
            return None, None
        layout = layout_of(self._global)
        g = flatten(self._global, layout, torch.float64)
        G = reply_matrix(ok, self._global, layout, torch.float64) - g
        weights = None
        if self.weighted:
            weights, clipped = clipped_reply_weights(ok, self.weighted_by_key, self.weight_clip)
            self.last_round_info["weights_clipped"] = clipped
        started = time.perf_counter()
        step = self.rule(G, weights)
        rule_s = time.perf_counter() - started  # the rule alone (the loop times all of this)
        new = g + step if self.optimizer.is_identity else self.optimizer.step(g, step)
        self.last_round_info.update(self.rule.info)
        self.last_round_info["rule_wall_s"] = rule_s
        self.last_round_info["aggregate_norm"] = float(step.norm())
        metrics = self.train_metrics_aggr_fn([r.content for r in ok], self.weighted_by_key)
        return unflatten(new, layout, self._global), metrics


def _nested_message(aggregator: str, text: str) -> str:
    """make_aggregator's complaint naming the nested key: "rule 'bgmd':
    aggregator_options.beta = 0 is invalid: ..." (it starts with the rule, so a config error
    quotes it whole rather than keeping only its "must be ..." part)."""
    prefix = f"aggregator_options for {aggregator!r}: "
    inner = text.removeprefix(prefix)
    if text.startswith(prefix) and re.match(r"\w+ = ", inner):
        inner = f"aggregator_options.{inner}"
    return f"rule {aggregator!r}: {inner}"
