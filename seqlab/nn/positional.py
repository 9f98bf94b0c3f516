"""Positional encodings: attention alone is blind to order, so each position adds a vector of its own.

Both modules take x: (B, T, D) and return x + P[offset : offset + T] (then dropout); `offset` is the
position of the first of the T tokens, i.e. the number of tokens already decoded.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError


def _check_length(offset: int, T: int, max_len: int) -> None:
    if offset + T > max_len:
        raise ConfigError(f"sequence reaches position {offset + T} but the positional encoding has "
                          f"max_len={max_len}; raise max_len or shorten the input")


class SinusoidalPositionalEncoding(nn.Module):
    """Vaswani et al. (2017): PE[pos, 2i] = sin(pos / 10000^(2i/D)), PE[pos, 2i+1] = cos(pos / 10000^(2i/D)).

    The table is a buffer, not a parameter, and is not saved in checkpoints (it is a pure function of
    the shape).
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0):
        super().__init__()
        self.max_len = max_len
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(D / 2),)
        div_term = torch.exp(two_i * (-math.log(10000.0) / d_model))  # 1 / 10000^(2i/D)
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term[: d_model // 2])  # an odd d_model has one cos fewer
        self.register_buffer("pe", pe, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        T = x.size(1)
        _check_length(offset, T, self.max_len)
        return self.dropout(x + self.pe[offset : offset + T])


class LearnedPositionalEmbedding(nn.Module):
    """One learned vector per position (as in BERT and GPT)."""

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        T = x.size(1)
        _check_length(offset, T, self.max_len)
        positions = torch.arange(offset, offset + T, device=x.device)  # (T,)
        return self.dropout(x + self.embedding(positions))
