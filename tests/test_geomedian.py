"""Geometric median solvers (fl.robust.geomedian): independent reference and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl.robust.geomedian import _Span, geometric_median

METHODS = ["weiszfeld", "vardi"]
SOLVERS = ["gram", "gemv"]
TIGHT = {"tol": 1e-12, "max_iter": 2000}


def reference_weiszfeld(
    x: np.ndarray, w: np.ndarray, nu: float = 1e-6, iters: int = 5000
) -> np.ndarray:
    """Straightforward smoothed Weiszfeld in float64, explicit loops over the points."""
    n, d = x.shape
    w = w / w.sum()
    v = np.zeros(d)
    for i in range(n):
        v += w[i] * x[i]
    for _ in range(iters):
        num, den = np.zeros(d), 0.0
        for i in range(n):
            dist = math.sqrt(float(np.sum((x[i] - v) ** 2)))
            b = w[i] / max(nu, dist)
            num += b * x[i]
            den += b
        new = num / den
        if np.linalg.norm(new - v) <= 1e-14 * (1.0 + np.linalg.norm(v)):
            return new
        v = new
    return v


def rel_err(a: torch.Tensor, b: torch.Tensor | np.ndarray) -> float:
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((a.double() - b).norm() / b.norm().clamp(min=1e-300))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("n", "d", "weighted"),
    [(7, 4, False), (6, 3, True), (12, 40, True), (33, 7, True), (64, 500, False)],
)
def test_agrees_with_reference(method: str, solver: str, n: int, d: int, weighted: bool) -> None:
    rng = np.random.default_rng(n * 1000 + d)
    x = rng.standard_normal((n, d)) + 2.0
    w = rng.uniform(0.1, 5.0, size=n) if weighted else np.ones(n)
    ref = reference_weiszfeld(x, w)
    # the median is not at a data point, where every Weiszfeld variant converges sublinearly
    assert np.linalg.norm(x - ref, axis=1).min() > 0.1
    res = geometric_median(
        torch.tensor(x),
        torch.tensor(w) if weighted else None,
        method=method,
        solver=solver,
        **TIGHT,
    )
    assert res.converged
    assert rel_err(res.median, ref) < 1e-4
    expected_obj = float(np.sum(w / w.sum() * np.linalg.norm(x - ref, axis=1)))
    assert res.objective == pytest.approx(expected_obj, rel=1e-6)


def test_float32_agrees_with_reference_and_keeps_dtype() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 2000)).astype(np.float32)
    ref = reference_weiszfeld(x.astype(np.float64), np.ones(32))
    for method in METHODS:
        res = geometric_median(torch.from_numpy(x), method=method, **TIGHT)
        assert res.median.dtype == torch.float32
        assert rel_err(res.median, ref) < 1e-4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_points(method: str, dtype: torch.dtype) -> None:
    p = torch.tensor([3.0, -1.5, 1e-3, 7.25], dtype=dtype)
    res = geometric_median(p.repeat(9, 1), method=method)
    assert res.converged
    torch.testing.assert_close(res.median, p, rtol=1e-6, atol=1e-9)
    assert res.objective == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_translation_and_scale_equivariance(method: str) -> None:
    g = torch.Generator().manual_seed(3)
    X = torch.randn(15, 20, generator=g, dtype=torch.float64)
    w = torch.rand(15, generator=g, dtype=torch.float64) + 0.1
    t = torch.randn(20, generator=g, dtype=torch.float64) * 10
    base = geometric_median(X, w, method=method, **TIGHT).median
    shifted = geometric_median(X + t, w, method=method, **TIGHT).median
    scaled = geometric_median(-3.5 * X, w, method=method, **TIGHT).median
    tiny = geometric_median(1e-30 * X, w, method=method, nu=1e-36, tol=1e-42, max_iter=2000).median
    torch.testing.assert_close(shifted, base + t, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scaled, -3.5 * base, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tiny, 1e-30 * base, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    ("dtype", "factor"),
    [
        (torch.float32, 1e30),
        (torch.float32, 1e-30),
        (torch.float64, 1e200),
        (torch.float64, 1e-300),
    ],
)
def test_extreme_magnitudes(solver: str, dtype: torch.dtype, factor: float) -> None:
    """Products would overflow or underflow in the native dtype: the float64 chunked Gram path."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(12, 20, generator=g, dtype=torch.float64)
    for method in METHODS:
        base = geometric_median(X, method=method, **TIGHT).median
        kw = {"nu": 1e-6 * factor, "tol": 1e-12 * (factor if method == "vardi" else 1.0)}
        res = geometric_median(
            (X * factor).to(dtype), method=method, solver=solver, max_iter=2000, **kw
        )
        assert res.converged and res.median.dtype == dtype
        assert rel_err(res.median.double() / factor, base) < (
            1e-5 if dtype == torch.float32 else 1e-9
        )


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dtype", "offset"), [(torch.float64, 1e7), (torch.float32, 1e3)])
def test_far_from_origin_cancellation_guard(
    method: str, solver: str, dtype: torch.dtype, offset: float
) -> None:
    """Points with spread 1 at distance `offset` ≫ 1 from the origin: ||x||² − 2x·y + ||y||²
    cancels catastrophically, so the guard must recompute distances exactly."""
    g = torch.Generator().manual_seed(5)
    X = torch.randn(20, 50, generator=g, dtype=torch.float64)
    far = X + offset
    ref = geometric_median(X, method=method, **TIGHT).median
    res = geometric_median(far.to(dtype), method=method, solver=solver, **TIGHT)
    # float32 stores the shifted points only to ~ulp(1e3) = 6e-5 per coordinate
    assert rel_err(res.median.double() - offset, ref) < (2e-3 if dtype == torch.float32 else 1e-6)


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_guarded_distances_match_exact(dtype: torch.dtype, gram: bool) -> None:
    g = torch.Generator().manual_seed(6)
    X = (torch.randn(10, 300, generator=g, dtype=torch.float64) * 1e-2 + 5.0).to(dtype)
    X[3] = X[0]  # a pair of coincident points
    c = torch.zeros(10, dtype=torch.float64)
    c[0] = 1.0  # y = x_0
    for coeffs in (c, torch.full((10,), 0.1, dtype=torch.float64)):
        span = _Span(X, None, 4.0, gram=gram)
        got = span.distances(coeffs) * 4.0
        y = coeffs.to(dtype) @ X
        exact = torch.linalg.vector_norm(X.double() - y.double(), dim=1)
        torch.testing.assert_close(got, exact, rtol=1e-6, atol=1e-12)
    assert float(_Span(X, None, 4.0, gram=gram).distances(c)[3]) == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_symmetric_points_give_centre(method: str) -> None:
    g = torch.Generator().manual_seed(7)
    centre = torch.randn(12, generator=g, dtype=torch.float64)
    v = torch.randn(6, 12, generator=g, dtype=torch.float64)
    X = torch.cat([centre + v, centre - v])
    res = geometric_median(X, method=method, **TIGHT)
    torch.testing.assert_close(res.median, centre, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(res.median, X.mean(0), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_robust_to_40_percent_far_outliers(method: str) -> None:
    g = torch.Generator().manual_seed(8)
    centre = torch.full((30,), 2.0, dtype=torch.float64)
    inliers = centre + torch.randn(60, 30, generator=g, dtype=torch.float64)
    outliers = 1e4 + torch.randn(40, 30, generator=g, dtype=torch.float64)
    X = torch.cat([inliers, outliers])
    res = geometric_median(X, method=method, tol=1e-8, max_iter=500)
    # GM bias under contamination α: ≲ α/(1-2α)·(inlier spread) — far below the outliers' 1e4
    assert float((res.median - centre).norm()) < 10.0
    assert float((X.mean(0) - centre).norm()) > 1e4


@pytest.mark.parametrize("solver", SOLVERS)
def test_vardi_iterate_lands_on_a_data_point(solver: str) -> None:
    g = torch.Generator().manual_seed(9)
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    X = torch.cat([p.repeat(7, 1), p + 3 * torch.randn(5, 3, generator=g, dtype=torch.float64)])
    res = geometric_median(X, method="vardi", tol=1e-10, solver=solver)
    assert res.converged and res.iterations < 100
    assert torch.equal(res.median, p)  # snapped exactly onto the majority point
    smooth = geometric_median(X, method="weiszfeld", tol=1e-12, max_iter=1000, solver=solver)
    assert float((smooth.median - p).norm()) < 1e-5  # ν-smoothing: within ~ν of it
    # float32 and exactly-coincident start (the majority point is the weighted mean)
    Y = torch.cat([p.repeat(4, 1), torch.stack([p + 1.0, p - 1.0])]).float()
    r32 = geometric_median(Y, method="vardi", solver=solver)
    assert r32.converged and torch.equal(r32.median, p.float())


def test_on_max_iter_zero_reproduces_authors_quirk() -> None:
    g = torch.Generator().manual_seed(10)
    X = torch.randn(10, 8, generator=g, dtype=torch.float64)
    X[:3] += 50.0
    last = geometric_median(X, method="vardi", tol=1e-12, max_iter=2, on_max_iter="last")
    zero = geometric_median(X, method="vardi", tol=1e-12, max_iter=2, on_max_iter="zero")
    assert not last.converged and not zero.converged and zero.iterations == 2
    assert float(last.median.norm()) > 0
    assert torch.equal(zero.median, torch.zeros(8, dtype=torch.float64))
    assert zero.objective == pytest.approx(float(X.norm(dim=1).mean()))
    ok = geometric_median(X, method="vardi", tol=1e-5, max_iter=500, on_max_iter="zero")
    assert ok.converged and float(ok.median.norm()) > 0
    w = geometric_median(X, method="weiszfeld", tol=0.0, max_iter=3, on_max_iter="zero")
    assert not w.converged and float(w.median.abs().max()) == 0.0
    g2 = geometric_median(
        X, method="vardi", tol=1e-12, max_iter=2, on_max_iter="zero", solver="gemv"
    )
    assert torch.equal(g2.median, zero.median) and g2.objective == pytest.approx(zero.objective)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solvers_agree_including_warm_start_and_weights(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(13)
    X = (torch.randn(40, 3000, generator=g) * torch.rand(40, 1, generator=g) * 3).to(dtype)
    w = torch.rand(40, generator=g, dtype=torch.float64)
    init = torch.randn(3000, generator=g, dtype=dtype)
    for method in METHODS:
        for kw in ({}, {"init": init}):
            a = geometric_median(X, w, method=method, solver="gram", tol=1e-9, **kw)
            b = geometric_median(X, w, method=method, solver="gemv", tol=1e-9, **kw)
            assert a.converged and b.converged
            if dtype == torch.float64:  # float32 rounding noise can move the stopping iteration
                assert a.iterations == b.iterations
            # float32: the two solvers may stop a few Weiszfeld iterations apart (5 vs 7 with
            # this machine's BLAS), both at the float32 floor of a flat objective (objectives
            # agree to 1.3e-8): the medians then differ by up to 3.4e-5 (measured), not 1e-5.
            assert rel_err(a.median, b.median) < (1e-4 if dtype == torch.float32 else 1e-10)
            assert a.objective == pytest.approx(b.objective, rel=1e-6)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("method", METHODS)
def test_warm_start_from_answer(method: str, solver: str) -> None:
    g = torch.Generator().manual_seed(11)
    X = torch.randn(20, 100, generator=g, dtype=torch.float64) + torch.linspace(
        0, 3, 100, dtype=torch.float64
    )
    best = geometric_median(X, method=method, **TIGHT)
    tol = 1e-6 if method == "weiszfeld" else 1e-5
    warm = geometric_median(X, method=method, tol=tol, init=best.median, solver=solver)
    assert warm.converged and warm.iterations <= 2
    torch.testing.assert_close(warm.median, best.median, rtol=1e-5, atol=1e-6)
    cold = geometric_median(X, method=method, tol=tol)
    assert cold.iterations > warm.iterations


def test_zero_weights_ignore_points() -> None:
    g = torch.Generator().manual_seed(12)
    X = torch.randn(8, 5, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 0.0, 1.0, 0.0, 3.0, 1.0, 1.0], dtype=torch.float64)
    keep = w > 0
    for method in METHODS:
        a = geometric_median(X, w, method=method, **TIGHT).median
        b = geometric_median(X[keep], w[keep], method=method, **TIGHT).median
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"points": torch.tensor([[0.0, float("nan")]])}, "points contains NaN"),
        ({"points": torch.tensor([[0.0, float("inf")]])}, "points contains NaN or Inf"),
        ({"points": torch.zeros(3)}, "points must be a 2-D"),
        ({"points": torch.zeros(0, 3)}, "points must have at least one row"),
        ({"points": torch.zeros(2, 3, dtype=torch.int64)}, "points must be float32 or float64"),
        ({"weights": torch.ones(3)}, r"weights must have shape \(2,\)"),
        ({"weights": torch.tensor([1.0, -1.0])}, "weights must be non-negative"),
        ({"weights": torch.zeros(2)}, "weights must have a positive sum"),
        ({"weights": torch.tensor([1.0, float("nan")])}, "weights contains NaN"),
        ({"init": torch.zeros(4)}, r"init must be a tensor of shape \(3,\)"),
        ({"init": torch.tensor([0.0, float("nan"), 0.0])}, "init contains NaN"),
        ({"method": "newton"}, "method = 'newton' is invalid"),
        ({"on_max_iter": "raise"}, "on_max_iter = 'raise' is invalid"),
        ({"nu": 0.0}, "nu = 0.0 is invalid"),
        ({"tol": -1.0}, "tol = -1.0 is invalid"),
        ({"max_iter": -1}, "max_iter = -1 is invalid"),
        ({"solver": "cg"}, "solver = 'cg' is invalid"),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    args = {"points": torch.zeros(2, 3)} | kwargs
    with pytest.raises(ValueError, match=match):
        geometric_median(**args)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    data=arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 6)), elements=finite),
    method=st.sampled_from(METHODS),
    solver=st.sampled_from(SOLVERS),
    f32=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_finite_and_permutation_invariant(
    data: np.ndarray, method: str, solver: str, f32: bool, seed: int
) -> None:
    X = torch.from_numpy(data).to(torch.float32 if f32 else torch.float64)
    res = geometric_median(X, method=method, tol=1e-12, max_iter=300, solver=solver)
    assert res.median.dtype == X.dtype and res.median.shape == (X.shape[1],)
    assert bool(torch.isfinite(res.median).all()) and math.isfinite(res.objective)
    # inside the bounding box of the points
    span = float(X.abs().max()) + 1.0
    assert float(res.median.abs().max()) <= span * (1 + 1e-5)
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))
    other = geometric_median(X[perm], method=method, tol=1e-12, max_iter=300, solver=solver)
    scale = float(X.double().abs().max()) + 1e-3
    tol = 1e-4 if f32 else 1e-6
    # Points closer than the smoothing ν = 1e-6 are indistinguishable to the solver, so the
    # median is only defined up to ν there (found by hypothesis: two points 1.8e-7 apart).
    assert float((res.median.double() - other.median.double()).abs().max()) <= tol * scale + 1e-6


@settings(max_examples=150, deadline=None)
@given(
    data=arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 6)), elements=finite),
    offset=st.floats(-1e6, 1e6, allow_nan=False),
    method=st.sampled_from(METHODS),
    solver=st.sampled_from(SOLVERS),
    f32=st.booleans(),
)
def test_property_inside_the_bounding_box_of_the_points(
    data: np.ndarray, offset: float, method: str, solver: str, f32: bool
) -> None:
    # The GM lies in the convex hull of the points, so in their bounding box: checked per
    # coordinate against min/max of the points (not a cube around the origin), with the points
    # shifted off the origin so a box around 0 would not contain them.
    X = torch.from_numpy(data + offset).to(torch.float32 if f32 else torch.float64)
    res = geometric_median(X, method=method, tol=1e-12, max_iter=300, solver=solver)
    lo, hi = X.double().min(0).values, X.double().max(0).values
    slack = (1e-5 if f32 else 1e-9) * (float(X.double().abs().max()) + 1.0)
    m = res.median.double()
    assert bool((m >= lo - slack).all()) and bool((m <= hi + slack).all()), (m, lo, hi)
