"""The recurrent text classifier:

    embedding -> RNN | LSTM | GRU (layers, optionally bidirectional; packed, so padding is invisible)
              -> pooling over time -> activation -> dropout -> Linear -> logits

Pooling `last` takes the final hidden state (of each direction), `mean`/`max` pool every position's
output, `concat` joins the three (ULMFiT's concat pooling: [last, max, mean]), and `attention` weighs
the positions with a learned query (additive or dot-product) and exposes the weights, which `seqlab predict
--explain` shows.

The lecture's LSTMNet is `cell=lstm, layers=1, bidirectional=false, dim=hidden=128,
pooling=last, activation=relu` (*/lstmnet): final hidden state -> ReLU -> Linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.embedding import WordEmbedding
from seqlab.nn import AttentionPooling, RNNEncoder, padding_mask, pool_sequence
from seqlab.options import DENSE_SPACE, Dropout, Positive

ACTIVATIONS = {"none": lambda x: x, "relu": F.relu, "tanh": torch.tanh}


@dataclass
class RNNConfig:
    dim: Positive = 128  # word embedding size
    hidden: Positive = 128  # per direction
    cell: Literal["rnn", "lstm", "gru"] = "lstm"  # the recurrence
    layers: Positive = 1  # stacked recurrent layers
    bidirectional: bool = True  # read the text both ways (outputs concatenated)
    pooling: Literal["last", "mean", "max", "concat", "attention"] = "max"  # the outputs over time -> one vector
    attention: Literal["additive", "dot"] = "additive"  # the scoring of pooling=attention
    activation: Literal["none", "relu", "tanh"] = "none"  # on the pooled vector
    dropout: Dropout = 0.5  # on the pooled vector, and between stacked layers
    embed_dropout: Dropout = 0.0  # on the word embeddings
    sparse: bool = False  # sparse embedding gradients (see models/embedding.py)


class RNNClassifier(nn.Module):
    """`forward(tokens: (B, T), lengths: (B,)) -> logits: (B, C)`; with `return_attention=True` (pooling
    `attention` only) `(logits, weights: (B, T))`, the weights summing to 1 over each text's tokens."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = RNNConfig
    inputs: ClassVar[str] = "padded"
    # trained as on SST-2 (sst2/rnn, chosen on its valid split), unless a preset or an override says otherwise
    recipe: ClassVar[dict] = {"train.optimizer": "adam", "train.lr": 0.001, "train.schedule": "constant",
                              "train.batch_size": 64, "train.epochs": 4}

    def __init__(self, cfg: RNNConfig, vocab_size: int, num_classes: int, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        self.embedding = WordEmbedding(vocab_size, cfg.dim, padding_idx, cfg.embed_dropout, cfg.sparse)
        self.encoder = RNNEncoder(cfg.dim, cfg.hidden, cfg.layers, cfg.cell, cfg.bidirectional,
                                  cfg.dropout)
        dim = self.encoder.output_dim
        self.pool = AttentionPooling(dim, cfg.attention) if cfg.pooling == "attention" else None
        self.activation = ACTIVATIONS[cfg.activation]
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(dim * 3 if cfg.pooling == "concat" else dim, num_classes)

    @property
    def attends(self) -> bool:
        """Whether the model has attention weights over its tokens to show."""
        return self.pool is not None

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if return_attention and not self.attends:
            raise ValueError("return_attention needs pooling=attention")
        mask = padding_mask(lengths, tokens.size(1))  # (B, T), True at padding
        # (B, T, H * dirs), (B, H * dirs); the state is not needed, so one direction runs unpacked (faster)
        outputs, final, _ = self.encoder(self.embedding(tokens), lengths, need_state=False)
        weights = None
        if self.cfg.pooling == "last":
            pooled = final
        elif self.cfg.pooling == "concat":  # (B, 3 * H * dirs)
            pooled = torch.cat([final, pool_sequence(outputs, mask, "max"), pool_sequence(outputs, mask, "mean")], -1)
        elif self.pool is not None:
            pooled, weights = self.pool(outputs, mask)  # (B, H * dirs), (B, T)
        else:
            pooled = pool_sequence(outputs, mask, self.cfg.pooling)
        logits = self.fc(self.dropout(self.activation(pooled)))  # (B, C)
        return (logits, weights) if return_attention else logits
