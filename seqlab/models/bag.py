"""The lecture's text classifier ("TextSentiment"): a bag of word n-grams.

    EmbeddingBag(mean) over the tokens (and their n-grams) of each text -> Linear -> logits

A batch is the lecture's flat token tensor plus offsets (see `seqlab.data.batching.bag_batch`): no
padding at all. With `sparse=True` only the rows of the embedding that a batch touches receive a
gradient, which is what makes this model as fast as fastText's.

`seqlab quantize` stores the embedding product-quantized, as `fasttext quantize` does (Jégou et al., 2011):
each row's direction is cut into sub-vectors of `dsub` numbers, each sub-vector replaced by the nearest of 256
centroids learnt for its position by k-means, and its norm by the nearest of 256 norms (fastText's
`-qnorm`), so a row costs one byte per sub-vector and one for its norm. Such weights (`embedding.codes`,
`embedding.codebooks`, `embedding.norm_codes`, `embedding.norm_codebook`) load into this model like any
others: the rows are rebuilt.
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
    # chosen on the valid splits of six datasets, short sentences to long documents, 2 to 8 classes
    # (bench/bench_bag_defaults.py; docs/benchmarks.md): row-wise Adagrad decaying linearly, as fastText's
    # SGD does; the lecture's recipe (SGD 4.0, StepLR) is a preset
    recipe: ClassVar[dict] = {"train.optimizer": "adagrad", "train.lr": 0.3, "train.schedule": "linear",
                              "train.batch_size": 64, "train.epochs": 10, "train.early_stopping": 3,
                              "task.min_freq": 2}
    # `seqlab tune` searches these beside TrainConfig.space (no weight decay: sparse gradients have none)
    space: ClassVar[dict] = {"model.dim": {"times": [0.5, 4]}, "model.dropout": {"low": 0.0, "high": 0.5},
                             "task.ngrams": [1, 2, 3], "task.min_freq": [1, 2, 3]}

    def __init__(self, cfg: BagConfig, vocab_size: int, num_classes: int, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.EmbeddingBag(vocab_size, cfg.dim, mode=cfg.mode, sparse=cfg.sparse)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.dim, num_classes)
        self.init_weights()
        self._register_load_state_dict_pre_hook(_dequantize_hook)

    def init_weights(self) -> None:
        r = self.cfg.init_range
        nn.init.uniform_(self.embedding.weight, -r, r)
        nn.init.uniform_(self.fc.weight, -r, r)
        nn.init.zeros_(self.fc.bias)

    def forward(self, text: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(text, offsets)  # (B, D); an empty bag gives zeros
        return self.fc(self.dropout(embedded))  # (B, C)


def product_quantize(weight: torch.Tensor, dsub: int, ksub: int = 256, iters: int = 25,
                     sample: int = 65_536, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (V, D) -> (codes (V, D // dsub) uint8, codebooks (D // dsub, ksub, dsub)): k-means with `ksub`
    centroids per sub-vector position, learnt on up to `sample` rows (seeded), every row then coded by its
    nearest centroids. D must be a multiple of dsub; ksub at most 256 (a code is one byte)."""
    V, D = weight.shape
    if D % dsub or not 1 <= ksub <= 256:
        raise ValueError(f"dsub {dsub} must divide the dimension {D}, and ksub must be 1..256")
    g = torch.Generator().manual_seed(seed)
    x = weight.detach().float().cpu().view(V, D // dsub, dsub)
    train = x[torch.randperm(V, generator=g)[:sample]]  # (S, M, dsub)
    k = min(ksub, len(train))
    codebooks = torch.empty(D // dsub, ksub, dsub)
    codes = torch.empty(V, D // dsub, dtype=torch.uint8)
    for m in range(D // dsub):
        points = train[:, m]  # (S, dsub)
        centroids = points[torch.randperm(len(points), generator=g)[:k]].clone()
        for _ in range(iters):
            nearest = torch.cdist(points, centroids).argmin(1)
            sums = torch.zeros_like(centroids).index_add_(0, nearest, points)
            counts = torch.bincount(nearest, minlength=k).float()
            empty = counts == 0  # re-seeded at random points
            centroids = torch.where(empty[:, None], points[torch.randint(len(points), (k,), generator=g)],
                                    sums / counts.clamp(min=1)[:, None])
        codebooks[m, :k] = centroids
        codebooks[m, k:] = centroids[-1]
        for start in range(0, V, 65_536):
            chunk = x[start: start + 65_536, m]
            codes[start: start + 65_536, m] = torch.cdist(chunk, centroids).argmin(1).to(torch.uint8)
    return codes, codebooks


def quantize_rows(weight: torch.Tensor, dsub: int) -> dict[str, torch.Tensor]:
    """weight (V, D) -> the tensors of the quantized embedding: the unit rows product-quantized
    (`codes`, `codebooks`) and their norms quantized on their own (`norm_codes`, `norm_codebook`)."""
    norms = weight.norm(dim=1, keepdim=True).clamp(min=1e-12)  # (V, 1)
    codes, codebooks = product_quantize(weight / norms, dsub)
    norm_codes, norm_codebook = product_quantize(norms, 1)
    return {"codes": codes, "codebooks": codebooks, "norm_codes": norm_codes, "norm_codebook": norm_codebook}


def dequantize(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """The rows (V, M * dsub) that codes (V, M) and codebooks (M, ksub, dsub) stand for."""
    M = codes.shape[1]
    rows = codebooks[torch.arange(M)[None, :], codes.long()]  # (V, M, dsub)
    return rows.reshape(len(codes), -1)


def _dequantize_hook(state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict: product-quantized embedding weights become the rows they stand for."""
    key = f"{prefix}embedding."
    if f"{key}codes" in state_dict:
        rows = dequantize(state_dict.pop(f"{key}codes"), state_dict.pop(f"{key}codebooks"))
        norms = dequantize(state_dict.pop(f"{key}norm_codes"), state_dict.pop(f"{key}norm_codebook"))
        state_dict[f"{key}weight"] = rows * norms

