"""The lecture's text classifier ("TextSentiment"): a bag of word n-grams.

    EmbeddingBag(mean) over the tokens (and their n-grams) of each text -> Linear -> logits

A batch is the lecture's flat token tensor plus offsets (see `seqlab.data.batching.bag_batch`): no
padding at all. With `sparse=True` only the rows of the embedding that a batch touches receive a
gradient, which is what makes this model as fast as fastText's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from seqlab.options import Dropout, Positive, PositiveFloat


@dataclass
class BagConfig:
    dim: Positive = 32  # the lecture's EMBED_DIM
    mode: Literal["mean", "sum"] = "mean"  # how the n-gram vectors of a text are pooled
    sparse: bool = True  # sparse embedding gradients: only the rows a batch touches are updated
    init_range: PositiveFloat = 0.5  # uniform(-r, r) init of embedding and classifier, as in the lecture
    dropout: Dropout = 0.0  # on the pooled vector


class BagClassifier(nn.Module):
    """`forward(text: (N,), offsets: (B,)) -> logits: (B, C)`."""

    Config = BagConfig
    inputs: ClassVar[str] = "bag"

    def __init__(self, cfg: BagConfig, vocab_size: int, num_classes: int, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.EmbeddingBag(vocab_size, cfg.dim, mode=cfg.mode, sparse=cfg.sparse)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.dim, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        r = self.cfg.init_range
        nn.init.uniform_(self.embedding.weight, -r, r)
        nn.init.uniform_(self.fc.weight, -r, r)
        nn.init.zeros_(self.fc.bias)

    def forward(self, text: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(text, offsets)  # (B, D); an empty bag gives zeros
        return self.fc(self.dropout(embedded))  # (B, C)
