"""AdaSGD (FLeet, Damaskinos et al., Middleware 2020) and its baselines DynSGD and async SGD.

All three apply w ← w + η_v · mean_i(λ_i Δ_i) over a window of M updates (M = 1 by default) and
differ only in λ:

- `AsyncSGD`: λ = 1 (staleness ignored).
- `DynSGD`: λ = 1/(τ+1).
- `AdaSGD`: λ = exp(−β·min(τ, τ_thres)), with β = ln(τ_thres+1)/τ_thres so that
  λ(τ_thres) = 1/(τ_thres+1); and for updates staler than τ_thres, λ is divided by
  max(floor, BC(p, q)), where p is the update's label distribution and q that of all updates
  applied so far (a rare-label update from a straggler is boosted, at most 1/floor = 10×).

Choices where the paper and the authors' code differ or are silent:
- τ_thres is the `staleness_percentile`-th percentile (default 95, an observed value) of the
  staleness of all updates so far, current one included; or a fixed `staleness_threshold`.
- Like the authors' code, the exponent uses min(τ, τ_thres) (`cap_staleness=True`): without the
  cap a straggler's update at τ = 4·τ_thres is dampened to (τ_thres+1)^−4, and no 10× boost can
  bring it back. `cap_staleness=False` gives the uncapped form.
- The boost fires for τ > `boost_margin` × τ_thres, with the authors' code's margin 1.5 by
  default: a percentile threshold is exceeded by a fixed share of updates even when nobody
  straggles (5 % for the 95th), and single mini-batches of IID data have BC ≈ 0.85, not 1, so a
  margin of 1 would boost ordinary updates by ~1.2×. `boost_margin=1` is the paper's literal
  "staler than the threshold".
- The boosted weight is capped at `max_weight` = 1, the weight of a fresh update: FLeet's code has
  no cap, and when τ_thres is small (say 95 % of updates are fresh, so τ_thres = 0) a stale
  rare-label update would get up to 10× a fresh one's weight.
- No boost during the first `warmup_updates` updates (default 2 × concurrency): until then the
  staleness distribution is still being learnt (the first wave of a loop has τ = 0, 1, ..., C−1).
- An update without `label-counts` has similarity 1 (never boosted).

Label counts are what the client *says* (`forge_labels`: an attacker reports all its examples
on a class it barely holds, the one-hot p that minimises BC(p, q)). The strategy checks that
they are integer counts summing to `examples-processed` (`AsyncStrategy`), which a consistent
liar passes, so the bound is on what the boost can buy: with `max_weight = 1` (the default) a
boosted update never outweighs a fresh one, so forging labels gains a stale attacker no more
than answering fast would; `boost = False` removes the lever. `max_weight = inf` is FLeet's
unbounded boost (up to 1/floor × λ).

With `aggregator = "<rule>"` the mean is replaced by a robust rule over the pre-scaled deltas:
w ← w + η_v · rule(λ_1 Δ_1, …, λ_M Δ_M) (see `AsyncStrategy`); with M = 1 every rule returns
λ Δ itself, so a robust rule needs `buffer_size` > 1 to do anything.
"""

from __future__ import annotations

import math
from typing import Any

from fl.strategies.asynchronous import AsyncStrategy
from fl.strategies.staleness import (
    adasgd_beta,
    bhattacharyya,
    dynsgd_weight,
    exp_dampening,
    similarity_boost,
)
from fl.strategies.updates import Update


class AsyncSGD(AsyncStrategy):
    """Plain asynchronous SGD: every update applied with weight 1, however stale."""


class DynSGD(AsyncStrategy):
    """DynSGD (Jiang et al., SIGMOD 2017): λ(τ) = 1/(τ+1)."""

    def update_weight(self, update: Update) -> tuple[float, dict[str, float]]:
        return dynsgd_weight(update.staleness), {}


def percentile_higher(counts: dict[int, int], q: float) -> int:
    """The q-th percentile of a histogram {value: count} as an observed value: numpy's
    `percentile(..., method="higher")` of the expanded sample (rank ceil(q/100·(n−1)))."""
    values = sorted(counts)
    n = sum(counts.values())
    rank = math.ceil(q / 100.0 * (n - 1))
    seen = 0
    for v in values:
        seen += counts[v]
        if seen > rank:
            return v
    return values[-1]


class AdaSGD(AsyncStrategy):
    """FLeet's AdaSGD: exponential staleness dampening plus a rare-label boost.

    Parameters (beyond AsyncStrategy's)
    -----------------------------------
    staleness_percentile : float
        τ_thres is this percentile of the staleness observed so far.
    staleness_threshold : float | None
        A fixed τ_thres instead (None: the percentile).
    cap_staleness : bool
        Use min(τ, τ_thres) in the dampening exponent (the authors' code).
    boost : bool
        Enable the rare-label (similarity) boost.
    boost_floor : float
        Floor of the Bhattacharyya coefficient; the largest boost is 1 / boost_floor.
    boost_margin : float
        The boost fires only for τ > boost_margin × τ_thres.
    max_weight : float
        Cap on a boosted update's weight (1: never more than a fresh update; inf: FLeet's
        unbounded boost).
    warmup_updates : int | None
        Updates applied before the boost may fire (None: 2 × concurrency).
    """

    def __init__(
        self,
        *,
        staleness_percentile: float = 95.0,
        staleness_threshold: float | None = None,
        cap_staleness: bool = True,
        boost: bool = True,
        boost_floor: float = 0.1,
        boost_margin: float = 1.5,
        max_weight: float = 1.0,
        warmup_updates: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 <= staleness_percentile <= 100:
            raise ValueError(
                f"staleness_percentile = {staleness_percentile!r} is invalid: must be in [0, 100]"
            )
        if staleness_threshold is not None and not (
            math.isfinite(staleness_threshold) and staleness_threshold >= 0
        ):
            raise ValueError(
                f"staleness_threshold = {staleness_threshold!r} is invalid: must be None or ≥ 0"
            )
        if not 0 < boost_floor <= 1:
            raise ValueError(f"boost_floor = {boost_floor!r} is invalid: must be in (0, 1]")
        if not (math.isfinite(boost_margin) and boost_margin >= 1):
            raise ValueError(f"boost_margin = {boost_margin!r} is invalid: must be ≥ 1")
        if not (isinstance(max_weight, int | float) and max_weight > 0):
            raise ValueError(f"max_weight = {max_weight!r} is invalid: must be > 0 (inf: no cap)")
        if warmup_updates is not None and warmup_updates < 0:
            raise ValueError(f"warmup_updates = {warmup_updates!r} is invalid: must be ≥ 0")
        self.staleness_percentile = float(staleness_percentile)
        self.staleness_threshold = staleness_threshold
        self.cap_staleness = cap_staleness
        self.boost = boost
        self.boost_floor = float(boost_floor)
        self.boost_margin = float(boost_margin)
        self.max_weight = float(max_weight)
        self.warmup_updates = 2 * self.concurrency if warmup_updates is None else warmup_updates
        self.boosts_fired = 0

    def threshold(self, tau: int) -> float:
        """τ_thres given the history and the current update's τ."""
        if self.staleness_threshold is not None:
            return float(self.staleness_threshold)
        counts = dict(self.staleness_counts)
        counts[tau] = counts.get(tau, 0) + 1
        return float(percentile_higher(counts, self.staleness_percentile))

    def similarity(self, update: Update) -> float:
        """BC between the update's labels and all labels applied so far (1 if either is
        unknown)."""
        if update.label_counts is None or self.label_totals is None:
            return 1.0
        if len(update.label_counts) != len(self.label_totals) or update.label_counts.sum() == 0:
            return 1.0
        if self.label_totals.sum() == 0:
            return 1.0
        return bhattacharyya(update.label_counts, self.label_totals)

    def update_weight(self, update: Update) -> tuple[float, dict[str, float]]:
        tau = update.staleness
        thres = self.threshold(tau)
        beta = adasgd_beta(thres)
        lam = exp_dampening(min(tau, thres) if self.cap_staleness else tau, beta)
        sim = self.similarity(update)
        seen = sum(self.staleness_counts.values())
        fired = self.boost and seen >= self.warmup_updates and tau > self.boost_margin * thres
        factor = similarity_boost(sim, self.boost_floor) if fired else 1.0
        if fired:
            self.boosts_fired += 1
        weight = min(lam * factor, self.max_weight) if fired else lam
        return weight, {
            "tau_thres": thres,
            "beta": beta,
            "similarity": sim,
            "boost": factor,
            "boosted": float(fired),
        }

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "staleness_percentile": self.staleness_percentile,
            "staleness_threshold": self.staleness_threshold,
            "cap_staleness": self.cap_staleness,
            "boost": self.boost,
            "boost_floor": self.boost_floor,
            "boost_margin": self.boost_margin,
            "max_weight": self.max_weight,
        }
