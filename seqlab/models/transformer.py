"""The Transformer text classifier (an encoder only, as BERT, trained from scratch):

    embedding (+ a learned [CLS] vector in front) + positions (sinusoidal or learned)
        -> layers x (multi-head self-attention, feed-forward; pre- or post-LayerNorm)
        -> pooling: the [CLS] position | mean | max | attention -> dropout -> Linear -> logits

Padding is masked out of every attention (key-padding mask) and of the pooling, so it changes nothing.
The weights shown by `seqlab predict --explain` are those of the attention pooling, or for [CLS] pooling
the last layer's attention of [CLS] over the tokens, averaged over the heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.models.embedding import WordEmbedding
from seqlab.nn import (
    AttentionPooling,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TransformerEncoder,
    padding_mask,
    pool_sequence,
)
from seqlab.options import DENSE_SPACE, Dropout, Positive


@dataclass
class TransformerConfig:
    dim: Positive = 128  # width of the embeddings and of every layer
    heads: Positive = 4  # attention heads (dim must divide by it)
    layers: Positive = 2  # encoder layers
    ff_dim: Positive = 256  # inner width of each feed-forward sub-layer
    dropout: Dropout = 0.1  # in every sub-layer, on embeddings + positions, and before the head
    activation: Literal["relu", "gelu"] = "gelu"  # of the feed-forward sub-layers
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"  # position encodings
    max_len: Positive = 512  # longest input (with [CLS]) the positions cover; see task.max_len
    norm_first: bool = True  # pre-LN (stable without warm-up); false: the paper's post-LN
    pooling: Literal["cls", "mean", "max", "attention"] = "cls"  # cls: a learned [CLS] token
    attention: Literal["additive", "dot"] = "additive"  # the scoring of pooling=attention
    sparse: bool = False  # sparse embedding gradients (see models/embedding.py)

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ConfigError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")


class TransformerClassifier(nn.Module):
    """`forward(tokens: (B, T), lengths: (B,)) -> logits: (B, C)`; with `return_attention=True` (pooling
    `cls` or `attention`) `(logits, weights: (B, T))`, the weights summing to 1 over each text's tokens."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = TransformerConfig
    inputs: ClassVar[str] = "padded"
    # trained as on SST-2 (sst2/transformer, chosen on its valid split), unless a preset or an override says otherwise
    recipe: ClassVar[dict] = {"train.optimizer": "adamw", "train.lr": 0.001, "train.weight_decay": 0.01,
                              "train.schedule": "linear", "train.warmup_steps": 300, "train.clip_grad_norm": 1.0,
                              "train.batch_size": 64, "train.epochs": 4}

    def __init__(self, cfg: TransformerConfig, vocab_size: int, num_classes: int, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.embedding = WordEmbedding(vocab_size, D, padding_idx, sparse=cfg.sparse)
        self.cls = nn.Parameter(torch.randn(D)) if cfg.pooling == "cls" else None  # as a scaled embedding
        if cfg.positions == "sinusoidal":
            self.positions: nn.Module = SinusoidalPositionalEncoding(D, cfg.max_len, cfg.dropout)
        else:
            self.positions = LearnedPositionalEmbedding(cfg.max_len, D, cfg.dropout)
        self.encoder = TransformerEncoder(cfg.layers, D, cfg.heads, cfg.ff_dim, cfg.dropout, cfg.activation,
                                          cfg.norm_first)
        self.pool = AttentionPooling(D, cfg.attention) if cfg.pooling == "attention" else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(D, num_classes)

    @property
    def attends(self) -> bool:
        """Whether the model has attention weights over its tokens to show."""
        return self.cfg.pooling in ("cls", "attention")

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if return_attention and not self.attends:
            raise ValueError("return_attention needs pooling=cls or pooling=attention")
        B, T = tokens.shape
        mask = padding_mask(lengths, T)  # (B, T), True at padding
        x = self.embedding(tokens) * self.cfg.dim**0.5  # (B, T, D), on the scale of the positions
        if self.cls is not None:
            x = torch.cat([self.cls.to(x.dtype).expand(B, 1, -1), x], dim=1)  # (B, 1 + T, D)
            mask = torch.cat([mask.new_zeros(B, 1), mask], dim=1)
        x = self.positions(x)
        need_weights = return_attention and self.cls is not None
        h, layer_weights = self.encoder(x, key_padding_mask=mask, need_weights=need_weights)  # (B, T', D)
        weights = None
        if self.cls is not None:
            pooled = h[:, 0]  # (B, D)
            if need_weights:
                w = layer_weights[-1][:, :, 0, 1:].mean(dim=1)  # [CLS] over the tokens, mean of heads: (B, T)
                weights = w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)  # without [CLS]'s weight on itself
        elif self.pool is not None:
            pooled, weights = self.pool(h, mask)  # (B, D), (B, T)
        else:
            pooled = pool_sequence(h, mask, self.cfg.pooling)
        logits = self.fc(self.dropout(pooled))  # (B, C)
        return (logits, weights) if return_attention else logits
