"""Word vectors (task `vectors`): word2vec's skip-gram and CBOW with negative sampling (Mikolov et al., 2013),
with fastText's character n-grams (Bojanowski et al., 2017): the lecture's embedding, trained on its own.

    input:  a bag of rows of one table: a word's own row and its character n-grams' hashed rows (skip-gram:
            the centre word; CBOW: every context word), averaged -> h (B, D)
    output: one row per word (`output`), scored against h: logits (B, 1 + K) = [target, K negatives]

The table's rows are the vocabulary's words, then `buckets` n-gram rows; a word that was never seen has a
vector all the same, the mean of its n-grams' rows. As fastText updates them, every row of an input bag gets
the whole gradient of h (not 1/n of it): h's value is the mean, its gradient flows to each row in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from seqlab.options import NonNegative, Positive


@dataclass
class FastTextConfig:
    """Defaults: fastText's `skipgram` (dim 100, n-grams of 3-6 characters in 2M buckets)."""

    dim: Positive = 100  # the vectors' size
    mode: Literal["skipgram", "cbow"] = "skipgram"  # predict the context from the word, or the word from it
    buckets: NonNegative = 2_000_000  # hashed character n-gram rows (0: none, word2vec)


class FastText(nn.Module):
    """`forward(ids, offsets, targets, bag_of=None) -> logits (B, 1 + K)`: ids (N,) rows of C bags cut at offsets
    (C,); targets (B, 1 + K) output words (the true one first); bag_of (B,) each pair's bag (None: bag b, C = B)."""

    Config = FastTextConfig
    # fastText's 5 epochs and linear decay to 0, but row-wise Adagrad: a step sums the gradients of 1,000 centres'
    # pairs, where a frequent word can come back hundreds of times, and plain SGD at fastText's 0.05 per pair
    # diverges (the C code applies the pairs one by one); the accumulator bounds each row's step
    recipe: ClassVar[dict] = {"train.optimizer": "adagrad", "train.lr": 0.2, "train.schedule": "linear",
                              "train.epochs": 5, "train.batch_size": 1000, "train.bucket": False}

    def __init__(self, cfg: FastTextConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.input = nn.EmbeddingBag(vocab_size + cfg.buckets, cfg.dim, mode="sum", sparse=True)
        self.output = nn.Embedding(vocab_size, cfg.dim, sparse=True)
        with torch.no_grad():  # fastText's: input uniform in ±1/dim, output zero
            self.input.weight.uniform_(-1.0 / cfg.dim, 1.0 / cfg.dim)
            self.output.weight.zero_()

    def hidden(self, ids: Tensor, offsets: Tensor) -> Tensor:
        """The mean of each bag's rows, (B, D); the gradient reaches every row whole."""
        total = self.input(ids, offsets)  # (B, D)
        counts = torch.diff(offsets, append=offsets.new_tensor([ids.numel()])).clamp(min=1)
        mean = total / counts[:, None].to(total.dtype)
        return mean.detach() + (total - total.detach())

    def forward(self, ids: Tensor, offsets: Tensor, targets: Tensor, bag_of: Tensor | None = None) -> Tensor:
        h = self.hidden(ids, offsets)  # (C, D)
        if bag_of is not None:  # pairs sharing a bag (skip-gram: a centre's contexts): its gradient is their sum
            h = h[bag_of]  # (B, D)
        return torch.einsum("bd,bkd->bk", h, self.output(targets))  # (B, 1 + K)

    @torch.no_grad()
    def vectors(self, ids: Tensor, offsets: Tensor) -> Tensor:
        """The vectors of B bags, (B, D): the mean of their rows (fastText's word vector)."""
        total = self.input(ids, offsets)
        counts = torch.diff(offsets, append=offsets.new_tensor([ids.numel()])).clamp(min=1)
        return total / counts[:, None].to(total.dtype)
