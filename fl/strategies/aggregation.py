"""Aggregation rules over a stack of client updates: the pieces strategies compose.

A rule maps G ∈ R^{n×d} (one client delta per row, float64) and optional weights w ∈ R^n_{≥0}
to one step vector s ∈ R^d. Rules are small picklable objects (checkpoints pickle strategies):
``rule(G, weights=None) -> torch.Tensor``, with ``rule.info`` a dict describing the last call
(solver iterations, rows selected, ...). `make_aggregator(name, options)` builds one by name;
`AGGREGATORS` lists the names. Notation (byzfl style): x_1..x_n the rows of G, f the number of
Byzantine rows tolerated, [·]_j coordinate j, ‖·‖ the Euclidean norm.

- ``mean``: s = Σ_i w_i x_i / Σ_i w_i (uniform 1/n without weights).
- ``geomedian``: s = argmin_y Σ_i w_i ‖y − x_i‖ (smoothed Weiszfeld / RFA or Vardi–Zhang,
  `fl.robust.geomedian.geometric_median`).
- ``bgmd``: block geometric median with memory m (`fl.robust.bgmd.block_geometric_median`):
  G_m = G + 1mᵀ, I = the k = max(1, ⌊β·d⌋) columns of largest norm, s_I = GM(G_m[:, I]),
  s_{∖I} = 0, m ← reduce_rows(G_m)_{∖I} (0 on I). Stateful: m carries over between calls.
- ``median``: [s]_j = median_i [x_i]_j (coordinate-wise; mean of the two middle values for even n).
- ``trimmed_mean``: [s]_j = 1/(n − 2b) Σ_{i=b+1}^{n−b} [x_(i)]_j, with [x_(1)]_j ≤ … ≤ [x_(n)]_j
  the sorted j-th coordinates and b = ⌊β·n⌋.
- ``krum``: s = x_{i*}, i* = argmin_i Σ_{j ∈ N_i} ‖x_i − x_j‖², N_i the max(1, n − f − 2)
  nearest other rows of x_i.
- ``multikrum``: s = (1/m) Σ_{i ∈ S} x_i, S the m rows with the smallest Krum scores
  (default m = n − f).
- ``bulyan``: θ = n − 2f rows chosen by Krum one at a time (each chosen row leaves the pool),
  then [s]_j = the mean of the β = θ − 2f values of {[x_i]_j : i chosen} closest to their
  median. Needs n ≥ 4f + 3 (El Mhamdi et al., 2018).

Only ``mean`` and ``geomedian``/``bgmd`` use the weights (the GM as w_i in its objective); the
order-statistic rules (median, trimmed_mean, krum, multikrum, bulyan) ignore them, as Flower's
FedMedian, FedTrimmedAvg, Krum and Bulyan do.

Weights from what clients report (`num-examples`) are attacker-controlled: one node claiming
10⁹ examples owns a weighted median. `bounded_weights` is the rule the robust strategies apply
when asked to weight: w_i = min(n_i, c · median_j n_j). With a fraction α < 1/2 of lying rows
the median lies in the honest range [N_min, N_max], every honest weight is ≥ N_min (c ≥ 1) and
every lying one ≤ c · N_max, so the liars hold less than half the weight — the weighted GM's
breakdown condition — whenever α < 1 / (1 + c · N_max / N_min): 1/2 for c = 1 and equal honest
counts, lower as honest counts spread (0 if an honest node reports 0 examples; if half the
rows report 0 every weight is 0 and the strategies fall back to unweighted). Unweighted (the
default), the GM's breakdown point is 1/2 whatever is reported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, Message

from fl.protocol import stack
from fl.protocol.records import fast as records_fast
from fl.robust.bgmd import MEMORY_REDUCE, SELECTORS, block_geometric_median
from fl.robust.geomedian import METHODS, geometric_median
from fl.strategies.flatten import Layout, flatten

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "BlockGeoMedianRule",
    "BulyanRule",
    "GeoMedianRule",
    "KrumRule",
    "MeanRule",
    "MedianRule",
    "MultiKrumRule",
    "TrimmedMeanRule",
    "bounded_weights",
    "check_weight_clip",
    "make_aggregator",
    "reply_matrix",
    "reply_model",
]


def _check_stack(G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor | None:
    if not isinstance(G, torch.Tensor) or G.ndim != 2 or G.shape[0] == 0 or G.shape[1] == 0:
        raise ValueError(
            f"G must be a non-empty 2-D tensor (n, d), got {getattr(G, 'shape', type(G))}"
        )
    if weights is None:
        return None
    w = torch.as_tensor(weights).detach().to(dtype=torch.float64)
    if (
        w.shape != (G.shape[0],)
        or not bool(torch.isfinite(w).all())
        or bool((w < 0).any())
        or not float(w.sum()) > 0
    ):
        raise ValueError(
            f"weights must be finite, ≥ 0, of shape ({G.shape[0]},) with a positive sum"
        )
    return w


def check_weight_clip(clip: float) -> float:
    """`clip` as a float, or ValueError: it must be a number ≥ 1 (`math.inf`: unbounded)."""
    if not (isinstance(clip, int | float) and not isinstance(clip, bool) and clip >= 1):
        raise ValueError(f"weight_clip = {clip!r} is invalid: must be ≥ 1 (inf: unbounded)")
    return float(clip)


def bounded_weights(reported: torch.Tensor, clip: float = 1.0) -> tuple[torch.Tensor, int]:
    """(w, how many were clipped): w_i = min(n_i, clip · median(n)) over the reported counts n
    (the lower median for even n). `clip` ≥ 1; `math.inf` trusts the reports unbounded."""
    check_weight_clip(clip)
    n = torch.as_tensor(reported, dtype=torch.float64)
    if math.isinf(clip):
        return n, 0
    cap = float(clip) * float(n.median())
    return n.clamp(max=cap), int((n > cap).sum())


@dataclass
class Aggregator:
    """Base of the rules: `__call__(G, weights=None)` → step (d,); `info` describes the last
    call."""

    name: ClassVar[str] = ""
    info: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def min_inputs(self) -> int:
        """The fewest rows the rule accepts."""
        return 1

    def __call__(self, G: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        w = _check_stack(G, weights)
        if G.shape[0] < self.min_inputs():
            raise ValueError(
                f"{self.name} needs at least {self.min_inputs()} updates, got {G.shape[0]}"
            )
        self.info = {}
        return self.aggregate(G, w)

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The rule's options (for logs and `describe`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}


@dataclass
class MeanRule(Aggregator):
    """s = Σ_i w_i x_i / Σ_i w_i; uniform weights 1/n when none are given."""

    name: ClassVar[str] = "mean"

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if weights is None:
            return G.mean(dim=0)
        return (weights / weights.sum()).to(G.dtype) @ G


@dataclass
class GeoMedianRule(Aggregator):
    """s = argmin_y Σ_i w_i ‖y − x_i‖ (weights uniform when none are given).

    Options: method ("weiszfeld" | "vardi"), nu (smoothing), tol, max_iter, warm_start (start
    the solver at the previous call's median).
    """

    name: ClassVar[str] = "geomedian"
    method: str = "weiszfeld"
    nu: float = 1e-6
    tol: float = 1e-6
    max_iter: int = 100
    warm_start: bool = False
    previous: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _gm_checks(self.method, self.nu, self.tol, self.max_iter)

    def gm_kwargs(self) -> dict[str, Any]:
        return {"method": self.method, "nu": self.nu, "tol": self.tol, "max_iter": self.max_iter}

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        init = self.previous if self.warm_start and self.previous is not None else None
        if init is not None and init.shape != (G.shape[1],):
            init = None
        res = geometric_median(G, weights, init=init, **self.gm_kwargs())
        self.previous = res.median
        self.info = {"gm_iterations": res.iterations, "gm_converged": int(res.converged)}
        return res.median


def _gm_checks(method: str, nu: float, tol: float, max_iter: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is invalid: must be one of {', '.join(METHODS)}")
    if not (isinstance(nu, int | float) and math.isfinite(nu) and nu > 0):
        raise ValueError(f"nu = {nu!r} is invalid: must be > 0")
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol = {tol!r} is invalid: must be > 0")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter = {max_iter!r} is invalid: must be an integer ≥ 1")


@dataclass
class BlockGeoMedianRule(Aggregator):
    """BGMD: G_m = G + 1mᵀ; I = top-k (or sampled) columns of G_m, k = max(1, ⌊β·d⌋);
    s_I = GM_w(G_m[:, I]), s elsewhere 0; m ← reduce_rows(G_m) off I, 0 on I.

    Options: beta (β ∈ (0, 1]), selector ("topk" | "sample"), memory_reduce ("mean" | "median"),
    seed (for "sample"), and the GM's method, nu, tol, max_iter. The memory m is state: it
    persists across calls (and through pickling).
    """

    name: ClassVar[str] = "bgmd"
    beta: float = 0.1
    selector: str = "topk"
    memory_reduce: str = "mean"
    seed: int = 0
    method: str = "weiszfeld"
    nu: float = 1e-6
    tol: float = 1e-6
    max_iter: int = 100
    memory: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    generator: torch.Generator | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, int | float) and 0 < self.beta <= 1):
            raise ValueError(f"beta = {self.beta!r} is invalid: must be in (0, 1]")
        if self.selector not in SELECTORS:
            raise ValueError(
                f"selector = {self.selector!r} is invalid: must be one of {', '.join(SELECTORS)}"
            )
        if self.memory_reduce not in MEMORY_REDUCE:
            raise ValueError(
                f"memory_reduce = {self.memory_reduce!r} is invalid: must be one of "
                f"{', '.join(MEMORY_REDUCE)}"
            )
        _gm_checks(self.method, self.nu, self.tol, self.max_iter)
        self.generator = torch.Generator().manual_seed(int(self.seed))

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if self.memory is None or self.memory.shape != (G.shape[1],):
            self.memory = torch.zeros(G.shape[1], dtype=G.dtype)
        res = block_geometric_median(
            G,
            self.memory,
            float(self.beta),
            selector=self.selector,
            memory_reduce=self.memory_reduce,
            gm_kwargs={
                "method": self.method,
                "nu": self.nu,
                "tol": self.tol,
                "max_iter": self.max_iter,
            },
            weights=weights,
            generator=self.generator,
        )
        self.memory = res.memory
        self.info = {"block_size": int(res.block.numel()), "memory_norm": float(res.memory.norm())}
        if res.gm is not None:
            self.info.update(
                {"gm_iterations": res.gm.iterations, "gm_converged": int(res.gm.converged)}
            )
        return res.step


@dataclass
class MedianRule(Aggregator):
    """[s]_j = median_i [x_i]_j, coordinate-wise (mean of the two middle values for even n,
    as np.median and Flower's FedMedian). Weights are ignored."""

    name: ClassVar[str] = "median"

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        n = G.shape[0]
        s = G.sort(dim=0).values
        return (s[(n - 1) // 2] + s[n // 2]) / 2


@dataclass
class TrimmedMeanRule(Aggregator):
    """[s]_j = mean of the sorted j-th coordinates with b = ⌊β·n⌋ dropped at each end.

    Option: beta ∈ [0, 0.5) (Flower's FedTrimmedAvg default 0.2). Weights are ignored.
    """

    name: ClassVar[str] = "trimmed_mean"
    beta: float = 0.2

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, int | float) and 0 <= self.beta < 0.5):
            raise ValueError(f"beta = {self.beta!r} is invalid: must be in [0, 0.5)")

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        n = G.shape[0]
        b = int(self.beta * n)
        self.info = {"trimmed": 2 * b}
        return G.sort(dim=0).values[b : n - b].mean(dim=0)


def _check_f(f: Any) -> None:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"f = {f!r} is invalid: must be an integer ≥ 0 (Byzantine rows)")


def _krum_scores(G: torch.Tensor, f: int) -> torch.Tensor:
    """Σ over the max(1, n − f − 2) nearest other rows of the squared distance, per row."""
    n = G.shape[0]
    d2 = torch.cdist(G, G).pow(2)
    if n == 1:
        return torch.zeros(1, dtype=G.dtype)
    closest = max(1, n - f - 2)
    closest = min(closest, n - 1)
    d2.fill_diagonal_(math.inf)
    return d2.sort(dim=1).values[:, :closest].sum(dim=1)


@dataclass
class KrumRule(Aggregator):
    """s = x_{i*}, i* = argmin_i Σ_{j ∈ N_i} ‖x_i − x_j‖² over the max(1, n − f − 2) nearest
    rows N_i (Blanchard et al., 2017). Option: f (alias num_malicious_nodes). Weights ignored."""

    name: ClassVar[str] = "krum"
    f: int = 0

    def __post_init__(self) -> None:
        _check_f(self.f)

    def min_inputs(self) -> int:
        """Krum's guarantee needs n ≥ 2f + 3 rows (n − f − 2 ≥ f + 1 neighbours)."""
        return 2 * self.f + 3

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        i = int(_krum_scores(G, self.f).argmin())
        self.info = {"selected": str(i)}
        return G[i].clone()


@dataclass
class MultiKrumRule(Aggregator):
    """s = (1/m) Σ_{i ∈ S} x_i, S the m rows of smallest Krum score (m = n − f by default,
    capped at n). Options: f (alias num_malicious_nodes), m (alias num_krum). Weights ignored."""

    name: ClassVar[str] = "multikrum"
    f: int = 0
    m: int | None = None

    def __post_init__(self) -> None:
        _check_f(self.f)
        if self.m is not None and (
            isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1
        ):
            raise ValueError(f"m = {self.m!r} is invalid: must be None or an integer ≥ 1")

    def min_inputs(self) -> int:
        """As Krum's: n ≥ 2f + 3 rows."""
        return 2 * self.f + 3

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        n = G.shape[0]
        m = max(1, n - self.f) if self.m is None else min(self.m, n)
        chosen = torch.sort(_krum_scores(G, self.f), stable=True).indices[:m]
        self.info = {"selected": " ".join(str(int(i)) for i in chosen.sort().values)}
        return G[chosen].mean(dim=0)


@dataclass
class BulyanRule(Aggregator):
    """θ = n − 2f rows chosen by Krum one at a time (each chosen row leaves the pool); then
    [s]_j = mean of the β = θ − 2f chosen j-th coordinates closest to their median (El Mhamdi,
    Guerraoui, Rouault, 2018). Needs n ≥ 4f + 3. Option: f (alias num_malicious_nodes).
    Weights ignored."""

    name: ClassVar[str] = "bulyan"
    f: int = 0

    def __post_init__(self) -> None:
        _check_f(self.f)

    def min_inputs(self) -> int:
        return 4 * self.f + 3

    def aggregate(self, G: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        n, f = G.shape[0], self.f
        theta = n - 2 * f
        pool = list(range(n))
        chosen: list[int] = []
        for _ in range(theta):
            scores = _krum_scores(G[pool], f)
            i = pool[int(scores.argmin())]
            chosen.append(i)
            pool.remove(i)
        S = G[chosen]
        med = MedianRule().aggregate(S, None)
        beta = theta - 2 * f
        idx = (S - med).abs().argsort(dim=0, stable=True)[:beta]
        self.info = {"selected": " ".join(str(i) for i in sorted(chosen))}
        return S.gather(0, idx).mean(dim=0)


_RULES: dict[str, type[Aggregator]] = {
    cls.name: cls
    for cls in (
        MeanRule,
        GeoMedianRule,
        BlockGeoMedianRule,
        MedianRule,
        TrimmedMeanRule,
        KrumRule,
        MultiKrumRule,
        BulyanRule,
    )
}

AGGREGATORS: tuple[str, ...] = tuple(_RULES)
"""Names of the rules an asynchronous strategy's `aggregator` option may take."""

_ALIASES = {"num_malicious_nodes": "f", "num_krum": "m"}


def make_aggregator(name: str, options: Mapping[str, Any] | None = None) -> Aggregator:
    """The rule `name` built from `options`; ValueError naming an unknown or invalid option."""
    if name not in _RULES:
        raise ValueError(
            f"aggregator = {name!r} is invalid: must be one of {', '.join(AGGREGATORS)}"
        )
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"aggregator_options = {options!r} is invalid: must be a mapping")
    cls = _RULES[name]
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in dict(options or {}).items():
        target = _ALIASES.get(key, key) if _ALIASES.get(key) in allowed else key
        if target not in allowed:
            raise ValueError(
                f"aggregator_options.{key} is not an option of aggregator {name!r}; "
                f"options: {', '.join(allowed) or '(none)'}"
            )
        if target in kwargs:
            raise ValueError(f"aggregator_options.{key} duplicates {target!r}")
        kwargs[target] = value
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"aggregator_options for {name!r}: {exc}") from exc


# ------------------------------------------------------------ the matrix G of a round
def reply_model(reply: Message) -> ArrayRecord:
    """The (first) ArrayRecord of a reply: its model."""
    return next(r for r in reply.content.values() if isinstance(r, ArrayRecord))


def reply_matrix(
    replies: list[Message],
    reference: ArrayRecord,
    layout: Layout,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Row i: `flatten(model of replies[i], layout, dtype)`; `layout` is `reference`'s."""
    records = [reply_model(r) for r in replies]
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    if records_fast() and tuple(layout.keys) == tuple(reference.keys()):
        values = stack.model_matrix(records, reference, np_dtype)
        if values is not None:
            return torch.from_numpy(values)
    return torch.stack([flatten(rec, layout, dtype) for rec in records])
