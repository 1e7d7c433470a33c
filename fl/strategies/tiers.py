"""TiFL's tier bookkeeping as pure functions: tiering, credits, selection probabilities.

Conventions: tiers are ordered fastest first (tier 0 has the lowest latencies); probability vectors
have one entry per tier and sum to 1. The TiFL strategy's docstring lists the choices made where
the paper's text leaves room.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

TIERINGS = ("quantile", "histogram")
RANK_FORMULAS = ("paper", "fltk")
STATIC_POLICIES = ("uniform", "fast", "slow", "random")
RANDOM_POLICY_5 = (0.7, 0.1, 0.1, 0.05, 0.05)  # TiFL's 'random' vector for 5 tiers [unverified]


def split_tiers(
    latency: Mapping[int, float], num_tiers: int, method: str = "quantile"
) -> list[list[int]]:
    """Group nodes into `num_tiers` tiers by latency, fastest tier first.

    `quantile`: equal-count groups of the nodes sorted by latency (ties by node id), as
    `np.array_split` cuts them (sizes differ by at most one). `histogram`: equal-width latency
    bins between the minimum and the maximum; a bin may be empty.
    """
    if num_tiers < 1:
        raise ValueError(f"num_tiers = {num_tiers!r} is invalid: must be ≥ 1")
    if method not in TIERINGS:
        raise ValueError(f"tiering = {method!r} is invalid: must be one of {', '.join(TIERINGS)}")
    nodes = sorted(latency, key=lambda n: (latency[n], n))
    if method == "quantile":
        # split positions, not ids: Flower's node ids are 64-bit unsigned (beyond int64)
        return [
            [int(nodes[i]) for i in part]
            for part in np.array_split(np.arange(len(nodes)), num_tiers)
        ]
    tiers: list[list[int]] = [[] for _ in range(num_tiers)]
    if not nodes:
        return tiers
    lo, hi = latency[nodes[0]], latency[nodes[-1]]
    width = (hi - lo) / num_tiers
    for n in nodes:
        idx = int((latency[n] - lo) / width) if width > 0 else 0
        tiers[min(idx, num_tiers - 1)].append(n)
    return tiers


def equal_credits(num_rounds: int, num_tiers: int) -> list[int]:
    """Every tier may be chosen ceil(R/m) times (fltk's and the paper's default)."""
    return [math.ceil(num_rounds / num_tiers)] * num_tiers


def credits_from_fractions(fractions: Sequence[float], num_rounds: int) -> list[int]:
    """Split R rounds by the given fractions (largest remainder: the credits sum to R)."""
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or len(f) == 0 or np.any(f < 0) or not np.isfinite(f).all() or f.sum() <= 0:
        raise ValueError(
            f"credit_fractions = {list(fractions)!r} is invalid: need ≥ 0 numbers, sum > 0"
        )
    f = f / f.sum()
    raw = f * num_rounds
    base = np.floor(raw).astype(int)
    order = np.argsort(-(raw - base), kind="stable")
    base[order[: num_rounds - int(base.sum())]] += 1
    return [int(c) for c in base]


def dirichlet_credits(
    num_rounds: int, num_tiers: int, skew: float, rng: np.random.Generator
) -> list[int]:
    """Dirichlet-skewed credits (FLGo's formula): concentration (−4 ln(skew + 1e-7))⁴; the
    largest share goes to the fastest tier. skew = 0 is almost uniform, larger is more skewed."""
    if not 0 <= skew < 1:
        raise ValueError(f"credit_skew = {skew!r} is invalid: must be in [0, 1)")
    conc = (-4.0 * math.log(skew + 1e-7)) ** 4
    shares = np.sort(rng.dirichlet([conc] * num_tiers))[::-1]
    return credits_from_fractions(shares.tolist(), num_rounds)


def static_probabilities(
    policy: str, num_tiers: int, probabilities: Sequence[float] | None = None
) -> np.ndarray:
    """Selection probabilities of a static policy (an explicit vector overrides the name)."""
    if probabilities is not None:
        p = np.asarray(probabilities, dtype=float)
        if p.shape != (num_tiers,) or np.any(p < 0) or not np.isfinite(p).all() or p.sum() <= 0:
            raise ValueError(
                f"probabilities = {list(probabilities)!r} is invalid: need {num_tiers} "
                "non-negative numbers with a positive sum"
            )
        return p / p.sum()
    if policy == "uniform":
        return np.full(num_tiers, 1.0 / num_tiers)
    if policy in ("fast", "slow"):
        p = np.zeros(num_tiers)
        p[0 if policy == "fast" else -1] = 1.0
        return p
    if policy == "random":
        if num_tiers != len(RANDOM_POLICY_5):
            raise ValueError(
                "policy 'random' has a default vector for 5 tiers only; "
                f"give `probabilities` for {num_tiers}"
            )
        return np.asarray(RANDOM_POLICY_5, dtype=float)
    raise ValueError(f"policy = {policy!r} has no static probability vector")


def change_probs(
    accuracy: Sequence[float] | np.ndarray,
    credits: Sequence[float] | np.ndarray,
    formula: str = "paper",
) -> np.ndarray:
    """TiFL's ChangeProbs: rank the tiers that still have credits by accuracy, lowest first,
    and give rank i (1-based) probability (n − i)/D; tiers without credits get 0.

    `paper`: D = n(n−1)/2, so the most accurate eligible tier gets 0. `fltk`: D = n(n+1)/2
    with ranks from 0, so every eligible tier keeps at least 1/D. A single eligible tier gets 1.
    """
    if formula not in RANK_FORMULAS:
        raise ValueError(
            f"rank_formula = {formula!r} is invalid: must be one of {', '.join(RANK_FORMULAS)}"
        )
    acc = np.asarray(accuracy, dtype=float)
    cred = np.asarray(credits, dtype=float)
    eligible = [t for t in range(len(acc)) if cred[t] > 0]
    p = np.zeros(len(acc))
    if not eligible:
        return p
    order = sorted(eligible, key=lambda t: (acc[t], t))  # lowest accuracy first
    n = len(order)
    if n == 1:
        p[order[0]] = 1.0
        return p
    if formula == "paper":
        denom = n * (n - 1) / 2
        for i, t in enumerate(order, start=1):
            p[t] = (n - i) / denom
    else:
        denom = n * (n + 1) / 2
        for i, t in enumerate(order):
            p[t] = (n - i) / denom
    return p


def restrict(p: np.ndarray, allowed: Sequence[bool]) -> np.ndarray | None:
    """Zero the tiers not allowed and renormalise; fall back to uniform over the allowed
    tiers if p gives them no mass; None if no tier is allowed."""
    mask = np.asarray(allowed, dtype=bool)
    if not mask.any():
        return None
    q = np.where(mask, p, 0.0)
    if q.sum() <= 0:
        q = mask.astype(float)
    return q / q.sum()
