"""The word embedding of the padded classifiers (CNN, RNN, Transformer): a lookup table whose padding
row is zero and never trained, with dropout; and `copy_vectors`, which puts pretrained word vectors (read
by `seqlab.data.vectors`) into any embedding table. Rows without a vector keep their random
initialisation, rescaled to the spread of the pretrained vectors so that the two kinds of row look alike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class WordEmbedding(nn.Module):
    """tokens (B, T) -> dropout(embedding) (B, T, D); the padding row is zero and gets no gradient.

    `sparse=True`: only the rows a batch uses get a gradient (the trainer then updates them with
    SparseAdam, or SGD), which saves most of an optimiser step when the vocabulary is large.
    """

    def __init__(self, vocab_size: int, dim: int, padding_idx: int, dropout: float = 0.0, sparse: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=padding_idx, sparse=sparse)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 1/D): vectors of about unit length, small enough for the optimiser to move them fast
        (torch's N(0, 1) makes 300-d vectors so long that rare words barely leave their random start)."""
        nn.init.normal_(self.embedding.weight, std=self.embedding.embedding_dim**-0.5)
        if self.embedding.padding_idx is not None:
            self.embedding.weight[self.embedding.padding_idx].zero_()

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    def forward(self, tokens: Tensor) -> Tensor:
        return self.dropout(self.embedding(tokens))


@torch.no_grad()
def copy_vectors(weight: Tensor, index: Tensor, table: Tensor, padding_idx: int | None = None) -> None:
    """weight: (V, D) an embedding table; table: (found, D) the vectors of rows `index` (found,). The other
    rows (but padding) are rescaled to the spread of the vectors, then the vectors are copied in."""
    if len(index) == 0:
        return
    missing = torch.ones(weight.size(0), dtype=torch.bool)
    missing[index] = False
    if padding_idx is not None:
        missing[padding_idx] = False
    if int(missing.sum()) > 1:
        weight[missing] *= table.std() / weight[missing].std().clamp(min=1e-8)
    weight[index] = table.to(weight.dtype)
