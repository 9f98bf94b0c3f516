"""Dropout that costs nothing when it drops nothing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Dropout):
    """`nn.Dropout` (same arguments, same state: none) that returns its input itself, dispatching no operation,
    in eval mode or at p = 0: a one-token decoding step of a Transformer language model passes 13 of them."""

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, True, self.inplace) if self.training and self.p > 0 else x

    # Called as `forward` itself, without nn.Module's hook machinery (no hook runs on it): on a 2-core VM that
    # machinery cost 2.3 us a call to hand back the input in eval mode, 13 times in a one-token decoding step.
    __call__ = forward
