"""Block-coordinate geometric median descent (BGMD): Acharya, Hashemi, Jain, Sanghavi, Dhillon,
Topcu, "Robust Training in High Dimensions via Block Coordinate Geometric Median Descent",
AISTATS 2022 (arXiv 2106.08882), Algorithms 1–2.

One aggregation, with G (n×d) the rows to aggregate (the step size already folded in) and m̂ the
memory (d,):

    Gm = G + 1·m̂ᵀ                                   (memory added to every row)
    I  = C_k(Gm), k = max(1, int(β·d))               (block of columns)
    step[I] = GM(Gm[:, I]) over the rows, 0 elsewhere (geometric median in R^k)
    m̂' = reduce_rows(Gm with the columns I zeroed)   (memory; 0 on I)

Choices:
- selector "topk" (default): the k largest column L2 norms — the authors' code
  (``_active_norm_sampling``); "sample": k columns without replacement with probability
  ∝ ||Gm[:, j]||² — the paper's Algorithm 2 (successive sampling, drawn with Gumbel-top-k).
- memory_reduce "mean" (default, faithful): the (weighted) mean of the residual rows, as in
  Algorithm 1 and the code. It is not robust: outside the block the memory carries the plain mean
  of all rows, corrupted ones included (see the README). "median": the coordinate-wise median of
  the residual rows (unweighted; mean of the two middle values for even n) — a robust deviation,
  NOT in the paper.
- aggregate "gm" (default): `geometric_median` with ``gm_kwargs`` (the authors used
  method="vardi", tol=1e-5, max_iter=50, on_max_iter="zero"); "mean": the weighted mean (for
  tests: with it, Σ steps + final memory = Σ mean rows of G, exactly up to rounding).

Gm is never materialised: its column norms come from an expansion, and only the n×k block is
copied. Not differentiable (``torch.no_grad``); CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fl.robust.geomedian import GMResult, geometric_median

__all__ = ["BlockGMResult", "block_geometric_median", "select_block"]

SELECTORS = ("topk", "sample")
MEMORY_REDUCE = ("mean", "median")
AGGREGATE = ("gm", "mean")


@dataclass
class BlockGMResult:
    """step (d,): the aggregate (zero off the block); block (k,): column indices, ascending;
    memory (d,): the new memory (zero on the block); gm: the solver's result (None for "mean")."""

    step: torch.Tensor
    block: torch.Tensor
    memory: torch.Tensor
    gm: GMResult | None


def _column_sq_norms(G: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """||G[:, j] + shift_j||² for every column (d,), without forming G + shift:
    Σ_i G_ij² + shift_j·(2 Σ_i G_ij + n·shift_j), clamped at 0 (cancellation only affects columns
    whose norm is tiny, i.e. never selected). Retried in float64 if the native dtype overflows."""
    sq = torch.zeros(G.shape[1], dtype=G.dtype)
    for row in G:  # O(d) memory; faster than einsum or (G * G).sum(0) on CPU
        sq.addcmul_(row, row)
    if shift is not None and bool(shift.any()):
        sq.addcmul_(shift, 2 * G.sum(0) + G.shape[0] * shift).clamp_(min=0)
    if G.dtype != torch.float64 and not bool(torch.isfinite(sq).all()):
        return _column_sq_norms(G.double(), None if shift is None else shift.double())
    return sq


def _select(
    sq_norms: torch.Tensor, k: int, method: str, generator: torch.Generator | None
) -> torch.Tensor:
    if method == "topk":
        keys = sq_norms
    elif method == "sample":
        # Gumbel-top-k: the top k of log p_j + Gumbel noise is a sample of k columns without
        # replacement, drawn successively with probability ∝ p_j (zero columns come last).
        u = torch.rand(sq_norms.shape, generator=generator, dtype=torch.float64)
        u = u.clamp(min=torch.finfo(torch.float64).tiny)
        keys = sq_norms.double().log() - (-u.log()).log()
    else:
        raise ValueError(f"selector = {method!r} is invalid: must be one of {SELECTORS}")
    idx = torch.topk(keys, k, sorted=False).indices
    return torch.from_numpy(np.sort(idx.numpy()))  # ascending; numpy's sort is far faster here


def select_block(
    G: torch.Tensor, k: int, method: str = "topk", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices (k,) of columns of G (n, d), ascending: "topk" = the k largest column L2 norms
    (ties broken arbitrarily); "sample" = k columns without replacement, probability ∝ squared
    column norm (seeded by ``generator``)."""
    if G.ndim != 2:
        raise ValueError(f"G must be a 2-D tensor (n, d), got shape {tuple(G.shape)}")
    if not 1 <= k <= G.shape[1]:
        raise ValueError(f"k = {k!r} is invalid: must be in [1, d = {G.shape[1]}]")
    return _select(_column_sq_norms(G), k, method, generator)


def _coordinate_median(G: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median over the rows (mean of the two middle values for even n, as
    np.median); np.partition is ~3× faster than torch.median over dim 0 on CPU."""
    n = G.shape[0]
    mid = sorted({(n - 1) // 2, n // 2})
    part = np.partition(G.numpy(), mid, axis=0)
    return torch.from_numpy((part[(n - 1) // 2] + part[n // 2]) / 2)


@torch.no_grad()
def block_geometric_median(
    G: torch.Tensor,
    memory: torch.Tensor,
    beta: float,
    *,
    selector: str = "topk",
    memory_reduce: str = "mean",
    aggregate: str = "gm",
    gm_kwargs: dict[str, Any] | None = None,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> BlockGMResult:
    """One BGMD aggregation of the rows of G (n, d) with memory (d,); see the module docstring.

    beta ∈ (0, 1]: block fraction, k = max(1, int(beta·d)). weights (n,): for the GM and the mean
    (memory "mean" and aggregate "mean"); default uniform. With beta = 1 the memory is always 0 and
    step == geometric_median(G + memory). The caller applies x ← x − step (lr already in G).
    """
    if not isinstance(G, torch.Tensor) or G.ndim != 2 or G.shape[0] == 0 or G.shape[1] == 0:
        raise ValueError(
            f"G must be a non-empty 2-D tensor (n, d), got {getattr(G, 'shape', type(G))}"
        )
    if G.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"G must be float32 or float64, got {G.dtype}")
    n, d = G.shape
    if not isinstance(memory, torch.Tensor) or memory.shape != (d,):
        raise ValueError(
            f"memory must be a tensor of shape ({d},), got {getattr(memory, 'shape', type(memory))}"
        )
    if not 0 < beta <= 1:
        raise ValueError(f"beta = {beta!r} is invalid: must be in (0, 1]")
    if memory_reduce not in MEMORY_REDUCE:
        raise ValueError(
            f"memory_reduce = {memory_reduce!r} is invalid: must be one of {MEMORY_REDUCE}"
        )
    if aggregate not in AGGREGATE:
        raise ValueError(f"aggregate = {aggregate!r} is invalid: must be one of {AGGREGATE}")
    if selector not in SELECTORS:
        raise ValueError(f"selector = {selector!r} is invalid: must be one of {SELECTORS}")
    if weights is None:
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    else:
        w = torch.as_tensor(weights).detach().to(dtype=torch.float64)
        if (
            w.shape != (n,)
            or not bool(torch.isfinite(w).all())
            or bool((w < 0).any())
            or not w.sum() > 0
        ):
            raise ValueError(f"weights must be finite, ≥ 0, of shape ({n},) with a positive sum")
        w = w / w.sum()
    G, memory = G.detach().contiguous(), memory.detach().to(G.dtype)

    k = max(1, int(beta * d))
    sq_norms = _column_sq_norms(G, memory)
    if not bool(torch.isfinite(sq_norms).all()):
        raise ValueError("G or memory contains NaN or Inf (or values whose squares overflow)")
    block = _select(sq_norms, k, selector, generator)
    sub = G.index_select(1, block).add_(memory[block])  # the n×k block of Gm

    step = torch.zeros(d, dtype=G.dtype)
    gm: GMResult | None = None
    if aggregate == "gm":
        gm = geometric_median(sub, weights, **(gm_kwargs or {}))
        step[block] = gm.median
    else:
        step[block] = (w @ sub.double()).to(G.dtype)

    if memory_reduce == "mean":
        new_memory = (w.to(G.dtype) @ G) + memory
    else:
        new_memory = _coordinate_median(G) + memory  # the median commutes with the shift
    new_memory[block] = 0
    return BlockGMResult(step=step, block=block, memory=new_memory, gm=gm)
