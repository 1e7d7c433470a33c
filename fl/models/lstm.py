"""Character-level LSTM for next-character prediction (LEAF Shakespeare style).

LEAF's reference model embeds each of the 80 characters into 8 dimensions, runs a 2-layer
LSTM with 256 hidden units over an 80-character window and predicts the next character from
the last step. We keep that structure; the default hidden size is 128 (see `ModelConfig`)
to keep CPU simulations fast.
"""

from __future__ import annotations

import torch
from torch import nn


class CharLSTM(nn.Module):
    """``Embedding -> LSTM (stacked, batch_first) -> last step -> [Dropout] -> Linear``.

    Input: int64 token ids of shape ``(B, T)``. Output: ``(B, num_classes)`` logits, where
    for next-character prediction ``num_classes == vocab_size``.
    """

    input_dtype = torch.int64

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 8,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T)`` token ids to ``(B, num_classes)`` next-token logits."""
        if x.is_floating_point():
            raise TypeError(f"char_lstm expects integer token ids, got dtype {x.dtype}")
        out, _ = self.lstm(self.embedding(x.long()))
        return self.fc(self.dropout(out[:, -1, :]))
