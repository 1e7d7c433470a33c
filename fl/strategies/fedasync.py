"""FedAsync (Xie, Koyejo, Gupta, 2019): mix each client model into the global one.

On every update w ← (1 − α_τ) w + α_τ w_client, with α_τ = α · s(τ) and s the staleness function
(`constant`, `polynomial` (τ+1)^−a, or `hinge`: 1 if τ ≤ b else 1/(a(τ−b)+1)). w_client is the
node's trained model, i.e. the version it was sent plus its delta; the mix is against the current
model, so a stale client also pulls the model back towards its old version, as in the paper.
With `buffer_size` > 1 the window's updates are mixed in one after another, in arrival order.
Only `aggregator = "mean"` is accepted: the sequential mixing has no stack of deltas to give a
robust rule (use FedBuff × a rule instead).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fl.strategies.asynchronous import AsyncStrategy
from fl.strategies.staleness import FEDASYNC_FUNCTIONS, fedasync_weight
from fl.strategies.updates import Update


class FedAsync(AsyncStrategy):
    """FedAsync: w ← (1 − α s(τ)) w + α s(τ) w_client.

    Parameters (beyond AsyncStrategy's)
    -----------------------------------
    mixing : float
        α ∈ (0, 1], the weight of a fresh client model.
    staleness_function : str
        s(τ): "constant" (1), "polynomial" ((1 + τ)^−a) or "hinge" (1 for τ ≤ b, else
        1 / (a(τ − b) + 1)).
    a : float
        The staleness function's exponent ("polynomial") or slope ("hinge").
    b : float
        The hinge's knee ("hinge").
    """

    def __init__(
        self,
        *,
        mixing: float = 0.6,
        staleness_function: str = "polynomial",
        a: float = 0.5,
        b: float = 4.0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("aggregator", "mean") != "mean":
            raise ValueError(
                f"aggregator = {kwargs['aggregator']!r} is not supported by FedAsync: it mixes "
                "each client model into the global one in turn, so there is no stack of deltas "
                "for a robust rule to aggregate; use FedBuff, AsyncSGD, DynSGD or AdaSGD"
            )
        for key, neutral in (("server_lr", 1.0), ("lr_decay", 0.0), ("weighting", "uniform")):
            if kwargs.get(key, neutral) != neutral:
                raise ValueError(
                    f"{key} = {kwargs[key]!r} is not used by FedAsync (its step is `mixing`)"
                )
        super().__init__(**kwargs)
        if not (math.isfinite(mixing) and 0 < mixing <= 1):
            raise ValueError(f"mixing = {mixing!r} is invalid: must be in (0, 1]")
        if staleness_function not in FEDASYNC_FUNCTIONS:
            raise ValueError(
                f"staleness_function = {staleness_function!r} is invalid: must be one of "
                f"{', '.join(FEDASYNC_FUNCTIONS)}"
            )
        if not (math.isfinite(a) and a >= 0) or not (math.isfinite(b) and b >= 0):
            raise ValueError(f"a = {a!r}, b = {b!r} are invalid: must be finite numbers ≥ 0")
        self.mixing = float(mixing)
        self.staleness_function = staleness_function
        self.a = float(a)
        self.b = float(b)

    def update_weight(self, update: Update) -> tuple[float, dict[str, float]]:
        alpha = self.mixing * fedasync_weight(
            update.staleness, self.staleness_function, self.a, self.b
        )
        return alpha, {"alpha": alpha}

    def apply_window(self, window: list[Update], weights: list[float]) -> torch.Tensor:
        """Mix each client model in turn: w ← w + α_i (w_client_i − w)."""
        assert self.weights is not None
        w = self.weights
        for u, alpha in zip(window, weights, strict=True):
            w = w + alpha * (u.model - w)
        return w

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "mixing": self.mixing,
            "staleness_function": self.staleness_function,
            "a": self.a,
            "b": self.b,
        }
