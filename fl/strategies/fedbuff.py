"""FedBuff (Nguyen et al., AISTATS 2022): buffered asynchronous aggregation.

The server buffers K = `buffer_size` client deltas (default 10) and then applies
w ← w + η_g · (1/K) Σ_i s(τ_i) Δ_i with s(τ) = 1/√(1+τ) (FedScale's FedBuff weight) and
η_g = `server_lr`. Updates staler than `max_staleness` are dropped (None: never).
With `aggregator = "<rule>"` (say "geomedian" or "bgmd") the average is replaced by the rule over
the pre-scaled deltas: w ← w + η_g · rule(s(τ_1) Δ_1, …, s(τ_K) Δ_K) (see `AsyncStrategy`).
"""

from __future__ import annotations

from typing import Any

from fl.strategies.asynchronous import AsyncStrategy
from fl.strategies.staleness import fedbuff_weight
from fl.strategies.updates import Update


class FedBuff(AsyncStrategy):
    """FedBuff: buffer K deltas, weight each by 1/√(1+τ), average, step by the server rate.

    Parameters (beyond AsyncStrategy's)
    -----------------------------------
    buffer_size : int
        K, the deltas averaged into one model update (FedBuff's default 10).
    """

    def __init__(self, *, buffer_size: int = 10, **kwargs: Any) -> None:
        super().__init__(buffer_size=buffer_size, **kwargs)

    def update_weight(self, update: Update) -> tuple[float, dict[str, float]]:
        return fedbuff_weight(update.staleness), {}
