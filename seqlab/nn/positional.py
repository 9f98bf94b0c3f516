"""Positional encodings: attention alone is blind to order, so each position adds a vector of its own.

The additive ones take x: (B, T, D) and return x + P[offset : offset + T] (then dropout); `offset` is the
position of the first of the T tokens, i.e. the number of tokens already decoded. `RotaryEmbedding` instead
rotates attention's queries and keys, (B, H, T, dh), by angles that grow with the position.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.nn.dropout import Dropout


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
        self.dropout = Dropout(dropout)

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
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        T = x.size(1)
        _check_length(offset, T, self.max_len)
        positions = torch.arange(offset, offset + T, device=x.device)  # (T,)
        return self.dropout(x + self.embedding(positions))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al., 2021; RoFormer): each pair of channels (i, i + dh/2) of a query or
    key at position p is rotated by the angle p * base^(-2i/dh), so q·k depends on the distance between the two
    positions only. A buffer, not a parameter (a pure function of the shape)."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary positions need an even width per head, got {head_dim}")
        inverse = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (dh/2,)
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inverse  # (max_len, dh/2)
        cos, sin = angles.cos(), angles.sin()
        # both halves' factors side by side, so a rotation is two products and a sum (x1, x2 the halves):
        # [x1, x2] * [cos, cos] + [x2, x1] * [-sin, sin] = [x1 cos - x2 sin, x2 cos + x1 sin]
        self.register_buffer("cos", torch.cat([cos, cos], dim=-1), persistent=False)  # (max_len, dh)
        self.register_buffer("sin", torch.cat([-sin, sin], dim=-1), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: (..., T, dh) at positions offset..offset+T-1 (e.g. (B, H, T, dh), or queries and keys stacked)
        -> the same shape, rotated."""
        T = x.size(-2)
        if offset + T > self.cos.size(0):
            raise ConfigError(f"sequence reaches position {offset + T} but the rotary table has "
                              f"max_len={self.cos.size(0)}; raise max_len or shorten the input")
        cos, sin = self.cos[offset:offset + T], self.sin[offset:offset + T]
        if cos.dtype != x.dtype:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return x * cos + x.roll(x.size(-1) // 2, dims=-1) * sin  # the roll is [x2, x1]
