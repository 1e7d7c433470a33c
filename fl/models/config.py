"""Model configuration: which architecture to build and its size knobs.

`ModelConfig` is a frozen (hashable) dataclass so it can be used as a cache key, stored in
experiment records and passed across process boundaries. It validates itself on
construction, so a bad value fails at the point where it was written, with a
:class:`fl.schema.ConfigError` naming the key (``model.<field>``) and the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fl.schema import ConfigError

MODELS: tuple[str, ...] = ("logreg", "mlp", "cnn", "char_lstm")
"""Names accepted by `ModelConfig.name` / `build_model`."""


def _is_int(value: Any) -> bool:
    """True for real integers (``bool`` is excluded: ``True`` is not a layer size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(field: str, value: Any) -> None:
    """Raise ``ConfigError`` (a ValueError) naming `field` unless `value` is an integer >= 1."""
    if not _is_int(value) or value < 1:
        raise ConfigError(field, value, "a positive integer")


def check_size_tuple(field: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    """Validate a tuple (or list) of positive integer sizes and return it as a tuple."""
    if not isinstance(value, tuple | list):
        raise ConfigError(field, value, "a list of positive integers")
    sizes = tuple(value)
    if length is not None and len(sizes) != length:
        raise ConfigError(field, value, f"a list of exactly {length} positive integers")
    if not all(_is_int(s) and s >= 1 for s in sizes):
        raise ConfigError(field, value, "a list of positive integers only")
    return sizes


@dataclass(frozen=True)
class ModelConfig:
    """Architecture choice and hyper-parameters for `build_model`.

    Attributes:
        name: one of `MODELS`: ``"logreg"`` (multinomial logistic regression),
            ``"mlp"`` (ReLU multi-layer perceptron), ``"cnn"`` (two conv/pool blocks + linear
            classifier), ``"char_lstm"`` (embedding + stacked LSTM next-character model).
        hidden: MLP hidden-layer widths (ignored by other models). Must be non-empty for
            ``"mlp"``; use ``"logreg"`` for a model without hidden layers.
        cnn_channels: output channels of the two 3x3 conv layers of ``"cnn"``.
        embed_dim: character-embedding width of ``"char_lstm"``. LEAF's Shakespeare model
            uses 8, as do we.
        lstm_hidden: LSTM hidden size of ``"char_lstm"``. LEAF uses 256; the default 128 is a
            CPU-friendly choice (~4x fewer recurrent FLOPs and ~3.7x fewer parameters).
        lstm_layers: number of stacked LSTM layers of ``"char_lstm"`` (LEAF: 2).
        dropout: dropout probability in [0, 1). Applied after each MLP hidden activation,
            before the CNN classifier, and between LSTM layers and before the LSTM head.
            Logistic regression ignores it.
    """

    name: str = "mlp"
    hidden: tuple[int, ...] = (64,)
    cnn_channels: tuple[int, int] = (16, 32)
    embed_dim: int = 8
    lstm_hidden: int = 128
    lstm_layers: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        """Validate every field; coerce list-valued sizes (e.g. from JSON) to tuples."""
        if not isinstance(self.name, str) or self.name not in MODELS:
            raise ConfigError("model.name", self.name, f"one of {', '.join(MODELS)}")
        # Frozen dataclass: coerce via object.__setattr__ so configs read from JSON/CLI
        # (lists) stay hashable.
        object.__setattr__(self, "hidden", check_size_tuple("model.hidden", self.hidden))
        object.__setattr__(
            self, "cnn_channels", check_size_tuple("model.cnn_channels", self.cnn_channels, 2)
        )
        check_positive_int("model.embed_dim", self.embed_dim)
        check_positive_int("model.lstm_hidden", self.lstm_hidden)
        check_positive_int("model.lstm_layers", self.lstm_layers)
        dropout = self.dropout
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not math.isfinite(dropout)
            or not 0.0 <= dropout < 1.0
        ):
            raise ConfigError("model.dropout", dropout, "a number in [0, 1)")
