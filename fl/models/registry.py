"""`build_model`: one entry point that turns a `ModelConfig` into an initialised module."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fl.models.cnn import SmallCNN
from fl.models.config import MODELS, ModelConfig, check_positive_int
from fl.models.init import materialise_and_init
from fl.models.linear import MLP, LogisticRegression
from fl.models.lstm import CharLSTM


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    if not isinstance(input_shape, tuple | list | torch.Size) or not input_shape:
        raise ValueError(f"input_shape must be a non-empty tuple of sizes, got {input_shape!r}")
    shape = tuple(input_shape)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must contain positive integers, got {input_shape!r}")
    return shape


def _construct(
    cfg: ModelConfig, shape: tuple[int, ...], num_classes: int, vocab_size: int | None
) -> nn.Module:
    """Instantiate the architecture (on whatever default device is active)."""
    if cfg.name == "logreg":
        return LogisticRegression(shape, num_classes)
    if cfg.name == "mlp":
        if not cfg.hidden:
            raise ValueError("hidden must be non-empty for name='mlp' (use name='logreg')")
        return MLP(shape, num_classes, cfg.hidden, cfg.dropout)
    if cfg.name == "cnn":
        return SmallCNN(shape, num_classes, cfg.cnn_channels, cfg.dropout)
    if cfg.name == "char_lstm":
        if vocab_size is None:
            raise ValueError("vocab_size is required for name='char_lstm', got None")
        check_positive_int("vocab_size", vocab_size)
        if len(shape) != 1:
            raise ValueError(
                f"input_shape must be (T,) token positions for name='char_lstm', got {shape!r}"
            )
        return CharLSTM(
            vocab_size,
            num_classes,
            cfg.embed_dim,
            cfg.lstm_hidden,
            cfg.lstm_layers,
            cfg.dropout,
        )
    raise ValueError(f"name must be one of {MODELS}, got {cfg.name!r}")  # pragma: no cover


def build_model(
    cfg: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """Build the model described by `cfg` for per-example inputs of shape `input_shape`.

    Args:
        cfg: architecture and sizes.
        input_shape: per-example input shape, no batch dimension: ``(64,)`` for digits,
            ``(1, 28, 28)`` for MNIST, ``(T,)`` token ids for ``char_lstm``.
        num_classes: number of output logits (for next-character prediction, the vocabulary
            size).
        vocab_size: embedding table size; required for ``char_lstm``, ignored otherwise.
        seed: initialisation seed. The same (cfg, shapes, seed) always gives identical
            parameters; the global torch RNG is neither used nor modified.

    Returns:
        A CPU ``nn.Module`` in training mode mapping ``(B, *input_shape)`` to
        ``(B, num_classes)`` logits.

    Raises:
        ValueError: naming the offending field and value (unknown ``name``, non-positive
            sizes, missing ``vocab_size``, non-image input for ``cnn``, ...).
    """
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    shape = _check_input_shape(input_shape)
    check_positive_int("num_classes", num_classes)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    with torch.device("meta"):
        model = _construct(cfg, shape, num_classes, vocab_size)
    return materialise_and_init(model, seed).train()
