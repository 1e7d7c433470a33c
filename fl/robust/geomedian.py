"""Geometric median of n points in R^d: smoothed Weiszfeld (RFA) and Vardi–Zhang.

The geometric median (GM) minimises f(y) = Σ_i w_i ||y − x_i|| (weights normalised to sum 1).

- ``method="weiszfeld"``: the smoothed Weiszfeld iteration of RFA (Weiszfeld 1937; Pillutla,
  Kakade & Harchaoui, "Robust Aggregation for Federated Learning", IEEE TSP 2022):
  ``β_i = w_i / max(ν, ||y − x_i||)``, ``β ← β / Σβ``, ``y ← Σ β_i x_i``, starting at the
  weighted mean (or ``init``); stop when ``|f(y_prev) − f(y)| ≤ tol · f(y)``.
- ``method="vardi"``: the modified Weiszfeld of Vardi & Zhang (PNAS 2000), as the BGMD authors'
  code uses it (eps = tol = 1e-5, max_iter = 50 in their experiments). With Z the points that
  coincide with y (``||y − x_i|| ≤ ζ_i``), η = Σ_{i∈Z} w_i, T̃ = Σ_{i∉Z} (w_i/D_i) x_i / S with
  S = Σ_{i∉Z} w_i/D_i and r = S·||T̃ − y||:
  ``y ← max(0, 1 − η/r)·T̃ + min(1, η/r)·y``; stop when ``||y_new − y|| < tol`` (absolute).
  If r ≤ η the iterate is optimal at a data point; it is then snapped to the nearest coincident
  point exactly (a floating-point realisation of the paper's fixed point). ζ_i = max(ν,
  4·eps(dtype)·||x_i||): coincidence up to ν or the input's rounding.

``on_max_iter``: ``"last"`` returns the last iterate; ``"zero"`` returns a zero vector when
max_iter is exhausted without meeting the stopping rule — the authors' quirk (their
``GeometricMedian`` prints "Ran out of Max iter" and returns 0, i.e. the step is skipped).

Numerics. Every iterate is a combination y = Σ_j c_j z_j of the points (and of ``init``, if
given), so the solver works on the coefficients c (float64, n-vectors) and the squared distances
come from the expansion ``||x_i − y||² = ||x_i||² − 2 x_i·y + ||y||²``:

- ``solver="gram"`` (default): with G = Z Zᵀ computed once (one GEMM, O(n²d)),
  ``x_i·y = (G c)_i`` and ``||y||² = cᵀ G c``: each iteration costs O(n²), independent of d; the
  median is materialised once at the end (one GEMV). Extra memory O(n² + d).
- ``solver="gemv"``: y is materialised every iteration (``c @ X``) and ``x_i·y = (X @ y)_i``: two
  GEMVs, O(nd) per iteration (four for Vardi), extra memory O(n + d). The cost model of the usual
  implementations (and of BGMD's speed claims); cheaper than "gram" only for ≲ 2 iterations.

Neither forms an n×d temporary. The expansion cancels when y is close to x_i relative to their
norms: its absolute error is about δ·(||x_i|| + Σ|c_j| ||z_j||)² with δ the relative error of the
dot products (≈1e-6 for float32 at d = 10⁶ with MKL, ≈1e-15 for float64). Squared distances are
clamped at 0, and any below κ times that bound (κ = 1e-2 for float32, 1e-8 for float64) are
recomputed exactly as ||x_i − y|| from the materialised y (one GEMV plus one row pass, in
float64); the same guard applies to the norms ||T̃ − y|| and ||y_new − y|| (Vardi). Outside the
guard the relative error of a squared distance is ≤ δ/κ (≈1e-4 for float32, ≈1e-7 for float64).
The points are rescaled internally by a power of two s (exact), and products fall back to a
chunked float64 Gram matrix when the native dtype could overflow or underflow.

Stopping caveat: RFA's relative-objective rule stops early when far outliers dominate f (with
outliers at distance R the inliers are resolved only to about tol·R); use a smaller tol (the
"gram" iterations are nearly free) or Vardi's absolute step rule when that matters.

The result is not differentiable (computed under ``torch.no_grad``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["GMResult", "geometric_median"]

METHODS = ("weiszfeld", "vardi")
ON_MAX_ITER = ("last", "zero")
SOLVERS = ("gram", "gemv")
_KAPPA = {torch.float32: 1e-2, torch.float64: 1e-8}  # exact-recompute threshold (relative)
_CHUNK = 1 << 15  # columns per chunk in the float64 fallback for the Gram matrix


@dataclass(frozen=True)
class GMResult:
    """Result of `geometric_median`.

    median: (d,), the dtype of the points. iterations: updates performed. converged: the stopping
    rule was met (False if max_iter ran out). objective: Σ w_i ||median − x_i|| with the weights
    normalised to sum 1 (for uniform weights, the mean distance).
    """

    median: torch.Tensor
    iterations: int
    converged: bool
    objective: float


class _Span:
    """The points z_j (rows of X, then ``init`` if given) in units of s; iterates are
    coefficient vectors c (m,), y = Σ c_j z_j. ``gram``: distances from the Gram matrix (O(m²)
    per call); otherwise from y itself (two GEMVs per call)."""

    def __init__(self, X: torch.Tensor, init: torch.Tensor | None, s: float, gram: bool) -> None:
        self.X, self.init, self.s = X, init, s
        self.n = X.shape[0]
        self.m = self.n + (init is not None)
        self.kappa = _KAPPA[X.dtype]
        self.G = _gram(X, init, s) if gram or not _native_safe(X, s) else None
        if self.G is not None:
            sq = self.G.diagonal().clamp(min=0)
        else:
            sq = torch.stack([torch.dot(x, x) for x in X]).double()  # BLAS dots: fast, accurate
            if init is not None:
                sq = torch.cat([sq, (init @ init).double().reshape(1)])
            sq = sq / (s * s)
        self.sq_norms = sq  # ||z_j||² / s²
        self.norms = sq.sqrt()

    def materialize(self, c: torch.Tensor) -> torch.Tensor:
        """Σ_j c_j z_j in the points' dtype (one GEMV)."""
        y = c[: self.n].to(self.X.dtype) @ self.X
        if self.init is not None:
            y = y + float(c[self.n]) * self.init
        return y

    def distances(self, c: torch.Tensor) -> torch.Tensor:
        """||x_i − y|| / s for y = Σ c_j z_j, float64 (n,), guarded against cancellation."""
        n, s2 = self.n, self.s * self.s
        y: torch.Tensor | None = None
        if self.G is not None:
            Gc = self.G @ c
            xy, yy = Gc[:n], float(c @ Gc)
        else:
            y = self.materialize(c)
            xy, yy = (self.X @ y).double() / s2, float(y @ y) / s2
        sq = (self.sq_norms[:n] - 2 * xy + yy).clamp(min=0)
        bound = (self.norms[:n] + c.abs() @ self.norms) ** 2
        inexact = (sq < self.kappa * bound).nonzero().flatten().tolist()
        if inexact:
            y64 = (self.materialize(c) if y is None else y).double()
            for i in inexact:
                sq[i] = float(torch.linalg.vector_norm((self.X[i].double() - y64) / self.s)) ** 2
        return sq.sqrt()

    def norm(self, a: torch.Tensor) -> float:
        """||Σ_j a_j z_j|| / s, guarded against cancellation (always exact without Gram)."""
        if self.G is not None:
            sq = max(float(a @ self.G @ a), 0.0)
            if sq >= self.kappa * float(a.abs() @ self.norms) ** 2:
                return math.sqrt(sq)
        return float(torch.linalg.vector_norm(self.materialize(a).double() / self.s))


def _native_safe(X: torch.Tensor, s: float) -> bool:
    """Whether products of the points (entries ≤ 2s) in their own dtype can neither overflow nor
    lose precision to underflow."""
    fi = torch.finfo(X.dtype)
    return s * s >= fi.tiny / fi.eps and 16 * X.shape[1] * s * s <= fi.max


def _gram(X: torch.Tensor, init: torch.Tensor | None, s: float) -> torch.Tensor:
    """Float64 Gram matrix of the rows of X (and init, appended last), divided by s²."""
    n, d = X.shape
    m = n + (init is not None)
    if _native_safe(X, s):
        G = torch.empty(m, m, dtype=torch.float64)
        G[:n, :n] = X @ X.T
        if init is not None:
            p = X @ init
            G[:n, n] = p
            G[n, :n] = p
            G[n, n] = init @ init
        return G / (s * s)
    G = torch.zeros(m, m, dtype=torch.float64)
    buf = torch.empty(m, min(d, _CHUNK), dtype=torch.float64)
    for lo in range(0, d, _CHUNK):
        hi = min(d, lo + _CHUNK)
        b = buf[:, : hi - lo]
        b[:n].copy_(X[:, lo:hi])
        if init is not None:
            b[-1].copy_(init[lo:hi])
        b.div_(s)
        G.addmm_(b, b.T)
    return G


def _check_finite(name: str, t: torch.Tensor) -> float:
    """Max |t| (0 for empty); ValueError if t has NaN or Inf."""
    lo, hi = torch.aminmax(t)
    lo_f, hi_f = float(lo), float(hi)
    if not (math.isfinite(lo_f) and math.isfinite(hi_f)):
        raise ValueError(f"{name} contains NaN or Inf")
    return max(-lo_f, hi_f)


def _validate(
    points: torch.Tensor,
    weights: torch.Tensor | None,
    init: torch.Tensor | None,
    method: str,
    nu: float,
    tol: float,
    max_iter: int,
    on_max_iter: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is invalid: must be one of {METHODS}")
    if on_max_iter not in ON_MAX_ITER:
        raise ValueError(f"on_max_iter = {on_max_iter!r} is invalid: must be one of {ON_MAX_ITER}")
    if not (nu >= 0 and math.isfinite(nu)) or (method == "weiszfeld" and nu == 0):
        raise ValueError(f"nu = {nu!r} is invalid: must be finite and > 0 (≥ 0 for 'vardi')")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol = {tol!r} is invalid: must be finite and ≥ 0")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter = {max_iter!r} is invalid: must be an int ≥ 0")
    if not isinstance(points, torch.Tensor) or points.ndim != 2:
        raise ValueError(
            f"points must be a 2-D tensor (n, d), got {getattr(points, 'shape', type(points))}"
        )
    if points.dtype not in _KAPPA:
        raise ValueError(f"points must be float32 or float64, got {points.dtype}")
    n, d = points.shape
    if n == 0 or d == 0:
        raise ValueError(
            f"points must have at least one row and one column, got shape {tuple(points.shape)}"
        )
    X = points.detach().contiguous()
    scale = _check_finite("points", X)
    if weights is None:
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    else:
        w = torch.as_tensor(weights).detach().to(dtype=torch.float64)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()):
            raise ValueError("weights contains NaN or Inf")
        if bool((w < 0).any()):
            raise ValueError("weights must be non-negative")
        total = float(w.sum())
        if not total > 0:
            raise ValueError("weights must have a positive sum")
        w = w / total
    if init is not None:
        if not isinstance(init, torch.Tensor) or init.shape != (d,):
            raise ValueError(
                f"init must be a tensor of shape ({d},), got {getattr(init, 'shape', type(init))}"
            )
        if not init.is_floating_point():
            raise ValueError(f"init must be a floating-point tensor, got {init.dtype}")
        init = init.detach().to(dtype=X.dtype).contiguous()
        scale = max(scale, _check_finite("init", init))
    return X, w, init, scale


@torch.no_grad()
def geometric_median(
    points: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    method: str = "weiszfeld",
    nu: float = 1e-6,
    tol: float = 1e-6,
    max_iter: int = 100,
    init: torch.Tensor | None = None,
    on_max_iter: str = "last",
    solver: str = "gram",
) -> GMResult:
    """Geometric median of the rows of ``points`` (n, d), float32 or float64.

    weights: (n,) ≥ 0 with a positive sum (default uniform); only their ratios matter.
    method: "weiszfeld" (smoothed, RFA; ``tol`` is the relative objective decrease) or "vardi"
    (Vardi–Zhang; ``tol`` is the absolute step length, the authors' ``eps``).
    nu: smoothing ν (absolute, in the points' units): Weiszfeld divides by max(ν, ||y − x_i||);
    Vardi treats points within max(ν, 4·eps·||x_i||) of y as coinciding with it.
    init: warm start (d,) instead of the weighted mean. on_max_iter: "last" | "zero" (see module).
    solver: "gram" (O(n²d) once, O(n²) per iteration) | "gemv" (O(nd) per iteration).
    Raises ValueError on NaN/Inf, wrong shapes or dtypes, negative or zero-sum weights.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver = {solver!r} is invalid: must be one of {SOLVERS}")
    X, w, init, maxabs = _validate(points, weights, init, method, nu, tol, max_iter, on_max_iter)
    n = X.shape[0]
    s = math.ldexp(1.0, min(max(math.frexp(maxabs)[1], -1000), 1000)) if maxabs > 0 else 1.0
    span = _Span(X, init, s, gram=solver == "gram")
    m = span.m
    nu_s, tol_s = nu / s, tol / s
    zeta = torch.clamp(4 * torch.finfo(X.dtype).eps * span.norms[:n], min=nu_s)

    c = torch.zeros(m, dtype=torch.float64)
    if init is None:
        c[:n] = w
    else:
        c[n] = 1.0
    dist = span.distances(c)
    obj = float(w @ dist)
    iterations, converged = 0, False
    while iterations < max_iter:
        iterations += 1
        prev_c, prev_obj = c, obj
        c = torch.zeros(m, dtype=torch.float64)
        if method == "weiszfeld":
            beta = w / dist.clamp(min=nu_s)
            c[:n] = beta / beta.sum()
        else:
            near = dist <= zeta
            inv = torch.where(near, 0.0, w / dist.clamp(min=torch.finfo(torch.float64).tiny))
            S, eta = float(inv.sum()), float(w[near].sum())
            c[:n] = inv / S if S > 0 else 0.0
            r = S * span.norm(c - prev_c) if S > 0 else 0.0
            if near.any() and r <= eta:  # optimal at a data point: snap to it exactly
                c.zero_()
                c[int(torch.where(near, dist, math.inf).argmin())] = 1.0
            elif eta > 0:
                g = eta / r
                c = (1 - g) * c + g * prev_c
        dist = span.distances(c)
        obj = float(w @ dist)
        if method == "weiszfeld":
            converged = abs(prev_obj - obj) <= tol * obj
        else:
            converged = span.norm(c - prev_c) < tol_s
        if converged:
            break
    if not converged and on_max_iter == "zero":
        median = torch.zeros_like(X[0])
        obj = float(w @ span.norms[:n])
    else:
        median = span.materialize(c)
    return GMResult(median=median, iterations=iterations, converged=converged, objective=obj * s)
