"""The word embedding of the padded classifiers (CNN, RNN, Transformer): a lookup table whose padding
row is zero and never trained, with dropout, and the loading of pretrained word vectors into it.

Pretrained vectors are read from the text format of word2vec and GloVe, one word per line followed by
its numbers (`the 0.418 0.24968 -0.41242 ...`); a first line of two integers (`400000 300`, word2vec's
header) is skipped; `.gz` files are read as such. A vocabulary word takes the vector of the same word,
else of the first word of the file that lowercases to it. Rows without a vector keep their random
initialisation, rescaled to the spread of the pretrained vectors so that the two kinds of row look alike.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError, DataError


def _open(path: str | os.PathLike):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8")


def read_vectors(path: str | os.PathLike, stoi: dict[str, int], dim: int) -> dict[int, Tensor]:
    """{vocabulary index: its (dim,) vector} for the words of `stoi` found in the file at `path`."""
    exact: dict[int, Tensor] = {}
    lowered: dict[int, Tensor] = {}
    lower_stoi = {w.lower(): i for w, i in reversed(stoi.items())}  # the first of a case family wins
    checked = False
    try:
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n\r ")
                if not line:
                    continue
                parts = line.rsplit(" ", dim)  # a word may itself hold spaces (GloVe 840B)
                if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec's "count dim" header
                got = len(parts) - 1 if checked else len(line.split(" ")) - 1
                if got != dim:
                    raise ConfigError(f"pretrained vectors have {got} dimensions but the model's embedding has "
                                      f"{dim}; set the model's embedding size to {got}", path=path, line=lineno)
                checked = True
                word = parts[0]
                index = stoi.get(word)
                if index is not None:
                    target = exact
                elif (index := lower_stoi.get(word.lower())) is not None and index not in lowered:
                    target = lowered
                else:
                    continue
                try:
                    target[index] = torch.tensor([float(x) for x in parts[1:]])
                except ValueError:
                    raise DataError(f"not a number in the vector of {word!r}", path=path, line=lineno) from None
    except FileNotFoundError:
        raise ConfigError("pretrained vectors file not found", path=path) from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"cannot read pretrained vectors ({e.__class__.__name__})", path=path) from None
    return {**lowered, **exact}


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
    def load_pretrained(self, path: str | os.PathLike, itos: Sequence[str], freeze: bool = False) -> dict[str, int]:
        """Copy the vectors of the vocabulary `itos` found in `path` into the table (see the module
        docstring); `freeze` stops the whole table from training. Returns the coverage:
        {"found": words with a vector, "vocab": rows of the table other than padding}."""
        weight = self.embedding.weight
        if len(itos) != weight.size(0):
            raise ConfigError(f"the vocabulary has {len(itos)} words but the embedding {weight.size(0)} rows")
        pad = self.embedding.padding_idx
        stoi = {w: i for i, w in enumerate(itos) if i != pad}
        vectors = read_vectors(path, stoi, weight.size(1))
        if vectors:
            index = torch.tensor(sorted(vectors))
            table = torch.stack([vectors[i] for i in index.tolist()])  # (found, D)
            missing = torch.ones(weight.size(0), dtype=torch.bool)
            missing[index] = False
            if pad is not None:
                missing[pad] = False
            if int(missing.sum()) > 1:
                weight[missing] *= table.std() / weight[missing].std().clamp(min=1e-8)
            weight[index] = table.to(weight.dtype)
        self.embedding.weight.requires_grad_(not freeze)
        return {"found": len(vectors), "vocab": len(stoi)}
