"""The convolutional text classifier of Kim (2014), "Convolutional Neural Networks for Sentence
Classification":

    embedding -> parallel 1-D convolutions of widths 3, 4, 5 (100 filters each: n-gram detectors)
              -> ReLU -> max over time -> dropout -> Linear -> logits

Each filter fires on the n-gram it has learned wherever it occurs; max-over-time keeps its strongest
match, so the features do not depend on the position of the n-gram, nor on the padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.models.embedding import WordEmbedding
from seqlab.nn import NgramConv1d, padding_mask
from seqlab.options import DENSE_SPACE, Dropout, Positive, PositiveInts


@dataclass
class CNNConfig:
    dim: Positive = 300  # word embedding size
    widths: PositiveInts = field(default_factory=lambda: [3, 4, 5])  # filter widths (n of the n-grams)
    filters: Positive = 100  # per width
    dropout: Dropout = 0.5  # on the pooled features, as in the paper
    embed_dropout: Dropout = 0.0  # on the word embeddings
    sparse: bool = False  # sparse embedding gradients (see models/embedding.py)

    def validate(self) -> None:
        if not self.widths:
            raise ConfigError("model.widths must list at least one filter width")


class CNNClassifier(nn.Module):
    """`forward(tokens: (B, T), lengths: (B,)) -> logits: (B, C)`."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = CNNConfig
    inputs: ClassVar[str] = "padded"
    # trained as on SST-2 (sst2/cnn, chosen on its valid split), unless a preset or an override says otherwise
    recipe: ClassVar[dict] = {"train.optimizer": "adam", "train.lr": 0.001, "train.schedule": "constant",
                              "train.batch_size": 50, "train.epochs": 3}

    def __init__(self, cfg: CNNConfig, vocab_size: int, num_classes: int, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        self.embedding = WordEmbedding(vocab_size, cfg.dim, padding_idx, cfg.embed_dropout, cfg.sparse)
        self.conv = NgramConv1d(cfg.dim, cfg.widths, cfg.filters)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.conv.output_dim, num_classes)

    @staticmethod
    def min_len(cfg: CNNConfig) -> int:
        """Batches are at least as long as the widest filter."""
        return max(cfg.widths)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(lengths, tokens.size(1))  # (B, T), True at padding
        features = self.conv(self.embedding(tokens), mask)  # (B, len(widths) * filters)
        return self.fc(self.dropout(features))  # (B, C)
