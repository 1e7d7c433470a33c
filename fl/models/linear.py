"""Fully connected models: multinomial logistic regression and a ReLU MLP.

Both flatten whatever per-example shape they are given (``(64,)`` digits, ``(1, 28, 28)``
MNIST, ...), so they work for every data set in the simulator.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _flat_float(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Flatten all but the batch dimension and cast to the parameters' dtype.

    The cast lets callers feed float64 NumPy-derived tensors (e.g. scikit-learn digits)
    without a separate conversion; it is a no-op for float32 input.
    """
    return x.flatten(start_dim=1).to(dtype=like.dtype)


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one affine layer producing class logits.

    Pair with ``nn.CrossEntropyLoss`` (softmax is applied by the loss, not here).
    """

    input_dtype = torch.float32

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.fc = nn.Linear(math.prod(self.input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a ``(B, *input_shape)`` batch to ``(B, num_classes)`` logits."""
        return self.fc(_flat_float(x, self.fc.weight))

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}"


class MLP(nn.Module):
    """ReLU multi-layer perceptron: ``Linear -> ReLU [-> Dropout]`` per hidden layer, then a
    linear classifier producing logits."""

    input_dtype = torch.float32

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: tuple[int, ...],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        layers: list[nn.Module] = []
        width = math.prod(self.input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a ``(B, *input_shape)`` batch to ``(B, num_classes)`` logits."""
        return self.net(_flat_float(x, next(self.parameters())))

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}"
