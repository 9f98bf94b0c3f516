"""Batches: the lecture's flat token tensor + offsets (EmbeddingBag), padded tensors + lengths for
CNN/RNN/Transformer models, and batch plans (lists of example indices) that are a pure function of a
seed, so a resumed run replays the same order.

Sequences are stored as one flat int64 array plus boundaries (`Packed`), which is compact and lets
a batch be cut out with numpy slicing instead of Python loops over tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Packed:
    """Many variable-length id sequences: `ids[starts[i]:starts[i] + lengths[i]]` is sequence i."""

    ids: np.ndarray  # (total,) int64
    starts: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]]) -> Packed:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        starts = np.zeros(len(seqs), dtype=np.int64)
        if len(seqs) > 1:
            np.cumsum(lengths[:-1], out=starts[1:])
        ids = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
        return cls(ids, starts, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def get(self, i: int) -> np.ndarray:
        return self.ids[self.starts[i] : self.starts[i] + self.lengths[i]]

    def subset(self, index: Sequence[int] | np.ndarray) -> Packed:
        index = np.asarray(index, dtype=np.int64)
        return Packed.from_lists([self.get(i) for i in index])


def bag_batch(data: Packed, index: Sequence[int], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's `generate_batch`: all sequences of the batch concatenated into one flat tensor
    `text: (sum of lengths,)`, and `offsets: (B,)` where each sequence starts."""
    index = np.asarray(index, dtype=np.int64)
    lengths = data.lengths[index]
    if max_len is not None:
        lengths = np.minimum(lengths, max_len)
    starts = data.starts[index]
    # gather every token position of the batch in one vectorised step
    offsets = np.zeros(len(index), dtype=np.int64)
    if len(index) > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    pos = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return torch.from_numpy(data.ids[pos]), torch.from_numpy(offsets)


def pad_batch(
    data: Packed, index: Sequence[int], pad_id: int, max_len: int | None = None, min_len: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """`tokens: (B, T)` right-padded with `pad_id`, and `lengths: (B,)`; sequences longer than
    `max_len` are truncated; T is at least `min_len` (e.g. the widest convolution)."""
    index = np.asarray(index, dtype=np.int64)
    lengths = data.lengths[index]
    if max_len is not None:
        lengths = np.minimum(lengths, max_len)
    lengths = np.maximum(lengths, 1)  # an empty sequence still gets one (pad) position
    T = max(int(lengths.max()) if len(index) else 1, min_len)
    out = np.full((len(index), T), pad_id, dtype=np.int64)
    for row, (i, n) in enumerate(zip(index, lengths, strict=True)):
        seq = data.get(i)[:n]
        out[row, : len(seq)] = seq
    real = np.minimum(data.lengths[index], lengths)
    return torch.from_numpy(out), torch.from_numpy(np.maximum(real, 1))


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def shuffled_batches(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """A random permutation of range(n) cut into batches (the last may be smaller)."""
    perm = torch.randperm(n, generator=_generator(seed)).numpy()
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def sequential_batches(n: int, batch_size: int) -> list[np.ndarray]:
    idx = np.arange(n, dtype=np.int64)
    return [idx[i : i + batch_size] for i in range(0, n, batch_size)]


def bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, pool: int = 50) -> list[np.ndarray]:
    """Length-bucketed batches: shuffle, sort within pools of `pool * batch_size` examples by length,
    cut into batches, shuffle the batches. Little padding, still random."""
    g = _generator(seed)
    perm = torch.randperm(len(lengths), generator=g).numpy()
    chunk = pool * batch_size
    batches = []
    for i in range(0, len(perm), chunk):
        part = perm[i : i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[k] for k in order]
