"""Staleness weights and label similarity: the small formulas asynchronous strategies differ by.

Staleness τ counts model versions: how many server model updates happened between the version a
node was sent and the version its update is applied to (never seconds).

- DynSGD (Jiang et al., SIGMOD'17): λ(τ) = 1/(τ+1).
- AdaSGD (FLeet, Damaskinos et al., Middleware'20): Λ(τ) = exp(−βτ) with β chosen so that
  Λ(τ_thres) = 1/(τ_thres+1), i.e. β = ln(τ_thres+1)/τ_thres: uncapped, it dampens less than
  DynSGD below the threshold and more above it (`AdaSGD` caps τ at τ_thres by default, so it
  never dampens below 1/(τ_thres+1)). Stale updates whose labels are rare (low Bhattacharyya
  coefficient against the labels seen so far) are boosted by 1/max(floor, BC).
- FedAsync (Xie et al., 2019): mixing weight α·s(τ) with s constant, polynomial (τ+1)^−a or
  hinge (1 if τ ≤ b, else 1/(a(τ−b)+1)).
- FedBuff (Nguyen et al., AISTATS'22), as in FedScale: 1/√(1+τ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FEDASYNC_FUNCTIONS = ("constant", "polynomial", "hinge")


def _check_tau(tau: float) -> float:
    if not (isinstance(tau, int | float | np.integer | np.floating) and math.isfinite(tau)):
        raise ValueError(f"staleness must be a finite number ≥ 0, got {tau!r}")
    if tau < 0:
        raise ValueError(f"staleness must be ≥ 0 (it counts model versions), got {tau!r}")
    return float(tau)


def dynsgd_weight(tau: float) -> float:
    """DynSGD's inverse dampening 1/(τ+1)."""
    return 1.0 / (_check_tau(tau) + 1.0)


def adasgd_beta(tau_thres: float) -> float:
    """β of AdaSGD's exp(−βτ) such that exp(−β·τ_thres) = 1/(τ_thres+1).

    For τ_thres → 0 the limit ln(1+t)/t → 1 is used (no history yet: a neutral decay).
    """
    t = _check_tau(tau_thres)
    return 1.0 if t < 1e-12 else math.log1p(t) / t


def exp_dampening(tau: float, beta: float) -> float:
    """exp(−β·τ)."""
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number ≥ 0, got {beta!r}")
    return math.exp(-beta * _check_tau(tau))


def fedbuff_weight(tau: float) -> float:
    """FedBuff's staleness weight 1/√(1+τ)."""
    return 1.0 / math.sqrt(1.0 + _check_tau(tau))


def fedasync_weight(
    tau: float, function: str = "polynomial", a: float = 0.5, b: float = 4
) -> float:
    """FedAsync's staleness function s(τ) ∈ (0, 1]."""
    t = _check_tau(tau)
    if function == "constant":
        return 1.0
    if function == "polynomial":
        return float((t + 1.0) ** (-a))
    if function == "hinge":
        return 1.0 if t <= b else 1.0 / (a * (t - b) + 1.0)
    raise ValueError(
        f"FedAsync staleness function {function!r} is unknown; use one of {FEDASYNC_FUNCTIONS}"
    )


def label_distribution(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts normalised to sum 1 (all zeros stay zeros)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or not np.isfinite(c).all() or (c < 0).any():
        raise ValueError("label counts must be a 1-D vector of finite numbers ≥ 0")
    total = c.sum()
    return c / total if total > 0 else c


def bhattacharyya(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Bhattacharyya coefficient Σ_c √(p_c q_c) of two label histograms (normalised here):
    1 for identical distributions, 0 for disjoint supports."""
    pn, qn = label_distribution(p), label_distribution(q)
    if pn.shape != qn.shape:
        raise ValueError(f"label histograms differ in length: {pn.shape[0]} vs {qn.shape[0]}")
    return float(min(1.0, np.sqrt(pn * qn).sum()))


def similarity_boost(similarity: float, floor: float = 0.1) -> float:
    """AdaSGD's boost 1/max(floor, BC): between 1 and 1/floor (10× by default)."""
    if not 0 < floor <= 1:
        raise ValueError(f"boost floor must be in (0, 1], got {floor!r}")
    return 1.0 / max(floor, min(1.0, float(similarity)))
