"""A small two-block CNN for MNIST-sized and tiny (8x8 digits) images.

Architecture (``c1, c2 = cnn_channels``)::

    Conv3x3(C->c1, pad 1) -> ReLU -> MaxPool2x2(ceil)
    Conv3x3(c1->c2, pad 1) -> ReLU -> MaxPool2x2(ceil)
    Flatten -> [Dropout] -> Linear(c2 * ceil(H/4) * ceil(W/4) -> num_classes)

Padding 1 keeps the conv output the same size as its input, and ``ceil_mode`` pooling halves
each side rounding up, so the net works for any image of at least 4x4: 28x28 -> 14 -> 7 and
8x8 -> 4 -> 2. The classifier's input width is computed from the input shape at build time.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MIN_IMAGE_SIDE = 4
"""Smallest accepted image height/width (two 2x2 poolings still leave >= 1 pixel)."""


def image_shape_for(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Interpret a per-example input shape as a ``(C, H, W)`` image.

    * ``(C, H, W)`` is used as is (channels first).
    * ``(H, W)`` is treated as a single-channel image ``(1, H, W)``.
    * ``(N,)`` with ``N`` a perfect square is treated as a flattened row-major square
      single-channel image ``(1, sqrt(N), sqrt(N))``; this is how scikit-learn's 8x8 digits
      arrive (``(64,)``), and flattened MNIST (``(784,)``) works the same way.

    Raises:
        ValueError: naming ``input_shape`` for anything else (e.g. text sequences ``(80,)``,
            non-square flat vectors, rank > 3) or for images smaller than 4x4.
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        c, h, w = shape
    elif len(shape) == 2:
        c, (h, w) = 1, shape
    elif len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        c, h = 1, math.isqrt(shape[0])
        w = h
    else:
        raise ValueError(
            f"input_shape={shape!r} is not an image: model 'cnn' needs (C, H, W), (H, W), "
            "or a flat (N,) vector with N a perfect square"
        )
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        raise ValueError(
            f"input_shape={shape!r}: model 'cnn' needs images of at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}, got {h}x{w} (channels first)"
        )
    return c, h, w


class SmallCNN(nn.Module):
    """Two conv/ReLU/max-pool blocks and a linear classifier (see module docstring)."""

    input_dtype = torch.float32

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        channels: tuple[int, int] = (16, 32),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.image_shape = image_shape_for(input_shape)
        c, h, w = self.image_shape
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        # Two ceil-mode 2x2 poolings: ceil(ceil(n / 2) / 2) == ceil(n / 4).
        out_h, out_w = -(-h // 4), -(-w // 4)
        head: list[nn.Module] = [nn.Flatten()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(c2 * out_h * out_w, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a ``(B, *input_shape)`` (or ``(B, C, H, W)``) batch to ``(B, num_classes)``."""
        x = x.reshape(x.shape[0], *self.image_shape).to(dtype=next(self.parameters()).dtype)
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}"
