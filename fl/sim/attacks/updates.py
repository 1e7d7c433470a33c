"""Update-attack formulas: what a malicious node does to its update δ (omniscient ones also
see the honest updates)."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from fl.sim.attacks.config import MINMAX_DIRECTIONS, MINMAX_GAMMA_INIT, MINMAX_REL_TOL


# ------------------------------------------------------------------ update-attack formulas
def sign_flip(delta: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled sign flip, δ' = −scale·δ: BGMD's "bit flip" attack with scale 5
    (Acharya et al. 2022, `grad_attack_models.py`); scale 1 is FLPoison's sign flipping."""
    return -scale * delta


def gaussian_update(delta: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Random update, δ' ~ N(0, std²) independently per coordinate, ignoring δ: the Gaussian
    Byzantine worker of Blanchard et al. 2017 (Krum paper, §5)."""
    return std * torch.randn(delta.shape, generator=gen, dtype=delta.dtype)


def additive_noise(delta: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Additive noise, δ' = δ + N(0, std²): BGMD's additive gradient attack (std 10 on
    MNIST/FMNIST, "g̃ = g + z, z ~ N(0, 100)")."""
    return delta + std * torch.randn(delta.shape, generator=gen, dtype=delta.dtype)


def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019 ("A Little Is Enough"), §4: s = ⌊n/2 + 1⌋ − f workers must be won
    over, and z = Φ⁻¹((n − s)/n) is the largest shift that stays within the crowd.

    s is clamped to [1, n − 1] so that z is finite; n = 1 gives z = 0. E.g. n = 10, f = 2:
    s = 4, z = Φ⁻¹(0.6) ≈ 0.2533.
    """
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"alie_z needs n ≥ 1 and 0 ≤ f ≤ n, got n={n}, f={f}")
    if n == 1:
        return 0.0
    s = min(max(math.floor(n / 2 + 1) - f, 1), n - 1)
    return NormalDist().inv_cdf((n - s) / n)


def alie(honest: torch.Tensor, z: float) -> torch.Tensor:
    """ALIE (Baruch et al. 2019): δ' = μ − z·σ per coordinate, with μ and σ the mean and the
    population standard deviation (ddof 0, as FLPoison) of the honest updates (rows)."""
    mu = honest.mean(dim=0)
    sigma = honest.std(dim=0, correction=0)
    return mu - z * sigma


def ipm(honest: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Inner-product manipulation (Xie et al. 2020, "Fall of Empires"): δ' = −ε·μ, which makes
    the inner product of the aggregate with the true mean negative when enough attackers send
    it (small ε defeats Krum, large ε median-like rules)."""
    return -epsilon * honest.mean(dim=0)


def minmax_direction(honest: torch.Tensor, direction: str) -> torch.Tensor:
    """Min-max perturbation p: −σ ("std"), −μ/‖μ‖ ("unit"; 0 if μ = 0) or −sign(μ) ("sign")."""
    mu = honest.mean(dim=0)
    if direction == "std":
        return -honest.std(dim=0, correction=0)
    if direction == "unit":
        norm = torch.linalg.vector_norm(mu)
        return -mu / norm if norm > 0 else torch.zeros_like(mu)
    if direction == "sign":
        return -torch.sign(mu)
    raise ValueError(f"minmax direction {direction!r}: must be one of {MINMAX_DIRECTIONS}")


def max_pairwise_distance(honest: torch.Tensor) -> float:
    """max_{i,j} ‖δ_i − δ_j‖ over the rows (exact differences, no Gram-matrix shortcut)."""
    best = 0.0
    for i in range(honest.shape[0] - 1):
        d = torch.linalg.vector_norm(honest[i + 1 :] - honest[i], dim=1).max()
        best = max(best, float(d))
    return best


def minmax_gamma(honest: torch.Tensor, p: torch.Tensor) -> float:
    """The largest γ ≥ 0 with max_i ‖μ + γp − δ_i‖ ≤ max_{i,j} ‖δ_i − δ_j‖, by bisection.

    ‖μ + γp − δ_i‖² = a_i + 2γ·b_i + γ²·c with a_i = ‖μ − δ_i‖², b_i = p·(μ − δ_i), c = ‖p‖²:
    convex in γ and feasible at γ = 0, so the feasible γ form an interval [0, γ*]. γ doubles
    from MINMAX_GAMMA_INIT until infeasible, then the bracket is halved to MINMAX_REL_TOL;
    the returned γ is always feasible.
    """
    mu = honest.mean(dim=0)
    diff = mu.unsqueeze(0) - honest
    a = (diff * diff).sum(dim=1)
    b = diff @ p
    c = float(p @ p)
    bound2 = max_pairwise_distance(honest) ** 2
    if c == 0.0 or bound2 == 0.0:
        return 0.0

    def feasible(gamma: float) -> bool:
        return float((a + 2 * gamma * b + gamma * gamma * c).max()) <= bound2

    lo, hi = 0.0, MINMAX_GAMMA_INIT
    while feasible(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > MINMAX_REL_TOL * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
    return lo


def minmax(honest: torch.Tensor, direction: str) -> torch.Tensor:
    """Min-max (Shejwalkar & Houmansadr, NDSS 2021): δ' = μ + γ·p with p from
    `minmax_direction` and γ from `minmax_gamma`: the malicious update is no farther from any
    honest update than the two farthest honest updates are from each other."""
    p = minmax_direction(honest, direction)
    return honest.mean(dim=0) + minmax_gamma(honest, p) * p
