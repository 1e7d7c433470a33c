"""Byzantine-robust aggregation as Flower strategies: geometric median (RFA) and BGMD.

Both aggregate client *updates* (model deltas δ_i = w_i − g, where g is the model the server
sent): the new model is g + aggregate(δ_1..δ_n). Working on deltas makes the geometric median's
translation equivariance harmless and matches BGMD's formulation on gradients (the client's
learning rate is folded into δ, as the authors fold γ into G).

- `GeometricMedian`: the smoothed Weiszfeld geometric median of the deltas (Pillutla et al.,
  RFA), unweighted by default; `method="vardi"` for Vardi–Zhang.
- `BlockGeometricMedian`: BGMD (Acharya et al., AISTATS 2022): stack the deltas into G (n×d),
  add the memory, keep a block of k = β·d coordinates (top-k column norm, as the authors' code
  does; `selector="sample"` samples ∝ squared column norm, as the paper's Algorithm 2), take the
  geometric median of the block, and carry the residual of the other coordinates in a memory
  (mean over rows — the paper; `memory_reduce="median"` is a robust deviation, see the README).

Distrust by default: `num-examples` is what a client *says*, so it does not weight the median
unless `weighted=True`, and then each weight is clipped to `weight_clip` × the median reported
count (`fl.strategies.aggregation.bounded_weights`, which states the breakdown point); how many
weights were clipped is logged (`weights_clipped`). RFA weights by sample counts, which it can
trust; a weighted median with attacker-chosen weights has breakdown point 0.

Replies with NaN/Inf, wrong shapes or dtypes, or bad `num-examples` are rejected and counted
(`last_round_info["rejected"]`), never aggregated. With no valid reply the model is unchanged,
and a warning on Flower's logger says why (each rejected node and its reason).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fl.protocol.replies import split_replies
from fl.robust.bgmd import block_geometric_median
from fl.robust.geomedian import geometric_median
from fl.strategies.aggregation import bounded_weights, check_weight_clip, reply_matrix
from fl.strategies.flatten import Layout, flatten, layout_of, unflatten

GM_METHODS = ("weiszfeld", "vardi")


class GeometricMedian(FedAvg):
    """RFA: the new model is g + GM(δ_1..δ_n) (Pillutla et al., 2022).

    Parameters (beyond FedAvg's)
    ----------------------------
    weighted : bool
        Weight each delta by its reported `num-examples`, clipped (default False: unweighted,
        breakdown point 1/2 whatever clients report).
    weight_clip : float
        With `weighted`, w_i = min(n_i, weight_clip × median reported n); ≥ 1, `inf` trusts
        the reports unbounded.
    method : str
        "weiszfeld" (smoothed, RFA) or "vardi" (Vardi–Zhang).
    nu : float
        Smoothing of the Weiszfeld solver (distances below nu are treated as nu).
    tol : float
        Stopping tolerance of the solver (relative change of the objective).
    max_iter : int
        Solver iterations at most.
    warm_start : bool
        Start the solver at the previous round's aggregate delta instead of the mean.
    """

    def __init__(
        self,
        *,
        weighted: bool = False,
        weight_clip: float = 1.0,
        method: str = "weiszfeld",
        nu: float = 1e-6,
        tol: float = 1e-6,
        max_iter: int = 100,
        warm_start: bool = False,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        if method not in GM_METHODS:
            raise ValueError(
                f"method = {method!r} is invalid: must be one of {', '.join(GM_METHODS)}"
            )
        if not nu > 0 or not tol > 0 or max_iter < 1:
            raise ValueError(
                f"nu = {nu!r}, tol = {tol!r}, max_iter = {max_iter!r}: "
                "need nu > 0, tol > 0, max_iter ≥ 1"
            )
        self.weighted = weighted
        self.weight_clip = check_weight_clip(weight_clip)
        self.method = method
        self.gm_kwargs = {"method": method, "nu": nu, "tol": tol, "max_iter": max_iter}
        self.warm_start = warm_start
        self._global: ArrayRecord | None = None
        self._layout: Layout | None = None
        self._previous: torch.Tensor | None = None
        self.last_round_info: dict[str, Any] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the model sent (updates are measured against it), then sample as FedAvg."""
        self.set_reference(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def set_reference(self, arrays: ArrayRecord) -> None:
        """The model this round's updates were trained from (a selection strategy that
        borrows this aggregation, such as TiFL, calls this instead of configure_train)."""
        self._global = arrays

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, stack the deltas, aggregate robustly, apply."""
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train")
        valid, rejected = split_replies(replies, self._global, self.weighted_by_key)
        ok = [r for r in valid if not r.has_error()]
        self.last_round_info = {"rejected_by_strategy": len(rejected)}
        if not ok:
            self.last_round_info["aggregation"] = "skipped: no valid update"
            reasons = "; ".join(f"node {n}: {why}" for n, why in sorted(rejected.items()))
            log(
                logging.WARNING,
                "%s: round %s aggregated nothing (model unchanged): %d replies rejected (%s), "
                "%d error replies",
                type(self).__name__,
                server_round,
                len(rejected),
                reasons or "none",
                len(valid) - len(ok),
            )
            return None, None
        layout = self._layout = self._layout or layout_of(self._global)
        g = flatten(self._global, layout)
        G = reply_matrix(ok, self._global, layout) - g
        weights = None
        if self.weighted:
            weights, clipped = clipped_reply_weights(ok, self.weighted_by_key, self.weight_clip)
            self.last_round_info["weights_clipped"] = clipped
        step = self._aggregate(G, weights)  # (the round loop times aggregation, not us)
        new = unflatten(g + step, layout, self._global)
        metrics = self.train_metrics_aggr_fn([r.content for r in ok], self.weighted_by_key)
        return new, metrics

    def _aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        init = self._previous if self.warm_start else None
        res = geometric_median(G, weights, init=init, **self.gm_kwargs)  # type: ignore[arg-type]
        self._previous = res.median
        self.last_round_info.update(
            {"gm_iterations": res.iterations, "gm_converged": int(res.converged)}
        )
        return res.median


def clipped_reply_weights(
    replies: list[Message], key: str, clip: float
) -> tuple[torch.Tensor | None, int]:
    """(weights, how many were clipped): the replies' reported `key` (validated: finite, ≥ 0)
    through `bounded_weights`; None when every weight is 0 (nothing to weight by)."""
    reported = torch.tensor(
        [float(_metrics(r)[key]) for r in replies],  # type: ignore[arg-type]
        dtype=torch.float64,
    )
    weights, clipped = bounded_weights(reported, clip)
    return (weights if float(weights.sum()) > 0 else None), clipped


def _metrics(reply: Message) -> MetricRecord:
    """The (first) MetricRecord of a reply (without building Flower's `metric_records` view)."""
    return next(r for r in reply.content.values() if isinstance(r, MetricRecord))


class BlockGeometricMedian(GeometricMedian):
    """BGMD: geometric median on a block of k = β·d coordinates, memory for the rest.

    Defaults follow the authors' experiments: β = 0.1, top-k, mean memory; their Vardi–Zhang
    solver is `method="vardi", tol=1e-5, max_iter=50`. `warm_start` is refused: the block
    changes between rounds, so the previous median lies on other coordinates.

    Parameters (beyond GeometricMedian's)
    -------------------------------------
    beta : float
        β ∈ (0, 1], the block fraction: the median runs on k = ⌈β·d⌉ coordinates.
    selector : str
        "topk" (the k coordinates of largest memory-corrected norm, the paper's rule) or
        "sample" (k coordinates drawn with probability ∝ their squared norm).
    memory_reduce : str
        How the memory of unselected coordinates is updated: "mean" (the paper's) or "median"
        (coordinate-wise median, a robust deviation not in the paper).
    seed : int
        Seeds `selector="sample"`.
    """

    def __init__(
        self,
        *,
        beta: float = 0.1,
        selector: str = "topk",
        memory_reduce: str = "mean",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("warm_start"):
            raise ValueError(
                "warm_start = True is invalid for bgmd: each round's block is other "
                "coordinates, so the previous median is no starting point (use geomedian)"
            )
        super().__init__(**kwargs)
        if not 0 < beta <= 1:
            raise ValueError(f"beta = {beta!r} is invalid: must be in (0, 1]")
        if selector not in ("topk", "sample"):
            raise ValueError(f"selector = {selector!r} is invalid: must be 'topk' or 'sample'")
        if memory_reduce not in ("mean", "median"):
            raise ValueError(
                f"memory_reduce = {memory_reduce!r} is invalid: must be 'mean' or 'median'"
            )
        self.beta = beta
        self.selector = selector
        self.memory_reduce = memory_reduce
        self.generator = torch.Generator().manual_seed(seed)
        self.memory: torch.Tensor | None = None

    def _aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if self.memory is None:
            self.memory = torch.zeros(G.shape[1], dtype=G.dtype)
        res = block_geometric_median(
            G,
            self.memory,
            self.beta,
            selector=self.selector,
            memory_reduce=self.memory_reduce,
            gm_kwargs=dict(self.gm_kwargs),
            weights=weights,
            generator=self.generator,
        )
        self.memory = res.memory
        info: dict[str, Any] = {
            "block_size": int(res.block.numel()),
            "memory_norm": float(res.memory.norm()),
        }
        if res.gm is not None:
            info.update({"gm_iterations": res.gm.iterations, "gm_converged": int(res.gm.converged)})
        self.last_round_info.update(info)
        return res.step
