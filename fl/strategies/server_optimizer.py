"""A server-side optimizer: the aggregate client update as a pseudo-gradient, stepped by SGD.

Robust aggregation rules return one step s ∈ R^d from the clients' deltas (δ_i = w_i − g). A
plain server applies w ← w + s. The BGMD authors instead load the aggregate into ``.grad`` and
call ``torch.optim.SGD`` (momentum 0.9, Nesterov, weight decay): momentum and weight decay act
*after* aggregation. `ServerSGD` is that optimizer on a flat parameter vector, with the
pseudo-gradient p = −s:

    p ← −s + λ·w                                  (weight decay λ)
    b ← p on the first step, μ·b + p after        (momentum μ; b is the buffer)
    p ← p + μ·b if Nesterov, else b               (when μ > 0)
    w ← w − η·p                                   (learning rate η)

exactly as ``torch.optim.SGD`` (dampening 0) computes it, with the same operations in the same
order, so the two agree bit for bit on the same dtype. With η = 1, μ = 0, λ = 0 the step is
w + s exactly. The buffer is state on the object (a tensor): it pickles with the strategy that
owns it, so a checkpointed run resumes with the same momentum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ServerSGD"]


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ServerSGD:
    """SGD on the server with the aggregate delta as the negative gradient (torch's semantics).

    Parameters
    ----------
    lr : float
        Learning rate η > 0 (1.0 applies the aggregate as it is).
    momentum : float (default: 0.0)
        Momentum μ ∈ [0, 1); 0 keeps no buffer.
    nesterov : bool (default: False)
        Nesterov momentum (p + μ·b instead of b); needs momentum > 0, as in torch.
    weight_decay : float (default: 0.0)
        L2 penalty λ ≥ 0 added to the pseudo-gradient: p = −s + λ·w.

    Attributes
    ----------
    buffer : torch.Tensor | None
        The momentum buffer b (None before the first step or without momentum).
    steps : int
        Steps taken.
    """

    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    buffer: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    steps: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        if not (_real(self.lr) and self.lr > 0):
            raise ValueError(f"server_lr = {self.lr!r} is invalid: must be a finite number > 0")
        if not (_real(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"server_momentum = {self.momentum!r} is invalid: must be in [0, 1)")
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"nesterov = {self.nesterov!r} is invalid: must be true or false")
        if self.nesterov and self.momentum == 0:
            raise ValueError(
                "nesterov = True is invalid with server_momentum = 0: must be used with "
                "momentum > 0 (as torch.optim.SGD requires)"
            )
        if not (_real(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"weight_decay = {self.weight_decay!r} is invalid: must be a finite number ≥ 0"
            )

    @property
    def is_identity(self) -> bool:
        """Whether a step is exactly w + s (η = 1, μ = 0, λ = 0)."""
        return self.lr == 1 and self.momentum == 0 and self.weight_decay == 0

    def step(self, w: torch.Tensor, aggregate_delta: torch.Tensor) -> torch.Tensor:
        """The new parameters from `w` (d,) and the aggregate delta s (d,); `w` is not changed."""
        if w.shape != aggregate_delta.shape or w.ndim != 1:
            raise ValueError(
                f"w and aggregate_delta must be vectors of one shape, got {tuple(w.shape)} "
                f"and {tuple(aggregate_delta.shape)}"
            )
        d_p = aggregate_delta.neg()
        if self.weight_decay != 0:
            d_p = d_p.add(w, alpha=self.weight_decay)
        if self.momentum != 0:
            buf = self.buffer
            if buf is None or buf.shape != d_p.shape or buf.dtype != d_p.dtype:
                buf = torch.clone(d_p).detach()
            else:
                buf.mul_(self.momentum).add_(d_p)
            self.buffer = buf
            d_p = d_p.add(buf, alpha=self.momentum) if self.nesterov else buf
        self.steps += 1
        return w.add(d_p, alpha=-self.lr)

    def describe(self) -> dict[str, Any]:
        """The optimizer's settings, for logs."""
        return {
            "server_lr": self.lr,
            "server_momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }
