"""Dropout that costs nothing when it drops nothing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Dropout):
    """`nn.Dropout` (same arguments, same state: none) that returns its input itself, dispatching no operation,
    in eval mode or at p = 0: a one-token decoding step of a Transformer language model passes 13 of them."""

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, True, self.inplace) if self.training and self.p > 0 else x
