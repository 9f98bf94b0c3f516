"""Boolean masks and the masked softmax every attention in seqlab uses.

One convention everywhere in `seqlab.nn`: in a mask, **True means blocked** (a padding position, or a
future position the query may not see), as in `nn.MultiheadAttention`'s `key_padding_mask`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B, T) bool mask, True at padding: position t of sequence b is padding when t >= lengths[b].

    lengths: (B,) integer lengths; max_len: T (default: the longest length).
    """
    if max_len is None:
        max_len = int(lengths.max())
    positions = torch.arange(max_len, device=lengths.device)  # (T,)
    return positions[None, :] >= lengths[:, None]  # (B, T)


def causal_mask(T: int, device: torch.device | str | None = None, key_len: int | None = None) -> Tensor:
    """(T, key_len) bool mask, True where a query would see the future.

    With key_len > T (incremental decoding: T new queries after key_len - T cached positions), query i
    sits at position key_len - T + i and may see keys 0..key_len - T + i. key_len defaults to T,
    which gives the usual strictly-upper-triangular (T, T) mask.
    """
    key_len = T if key_len is None else key_len
    ones = torch.ones(T, key_len, dtype=torch.bool, device=device)
    return ones.triu(key_len - T + 1)


def masked_softmax(scores: Tensor, blocked: Tensor | None) -> Tensor:
    """Softmax of `scores` over the last dim that gives blocked positions exactly zero weight.

    `blocked` is a bool mask broadcastable to `scores`. A row whose every position is blocked
    (e.g. a fully padded sequence) gets all-zero weights instead of NaN, and passes no NaN gradient.
    """
    if blocked is None:
        return torch.softmax(scores, dim=-1)
    fully_blocked = blocked.all(dim=-1, keepdim=True)
    scores = scores.masked_fill(blocked & ~fully_blocked, float("-inf"))  # a fully blocked row stays finite
    return torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)
