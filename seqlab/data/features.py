"""How a text becomes a classifier's input, chosen by the model (`inputs = "bag"` or `"padded"` on the model
class) when the model is built, so that the classify task never asks which model it has:

- `BagFeatures`, the lecture's EmbeddingBag input: the text's tokens and word n-grams (vocabulary entries
  in torchtext's order, or fastText's hashed ids after the vocabulary rows), unknown ones left out (or
  `<unk>`), as one flat tensor plus offsets.
- `TokenFeatures`, for the CNN/RNN/Transformer: token ids right-padded to the batch's longest (truncated
  at `max_len`, at least `min_len` long) plus lengths.

Both: `from_options(task options, min_len)`, `build_vocab(token lists, min_freq, max_size)` (the
vocabulary of the training texts), `encode(vocab, tokens)` (Packed ids), `rows(vocab)` (embedding rows),
`collate(data, index, vocab)` (the model's input tensors), `lengths(data)` (for batches of similar length;
None: no bucketing), `truncated(data)` (sequences cut at max_len), `names`/`axes` (ONNX inputs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from seqlab.data.batching import Packed, bag_batch, pad_batch
from seqlab.data.corpus import Corpus, bigram_vocab, encode_bag
from seqlab.data.ngrams import hashed_ngram_ids, ngrams_iterator
from seqlab.data.vocab import Vocab

CORPUS_FROM = 64  # texts from which the corpus-level path is faster than the per-text one (equal results)


class BagFeatures:
    """Tokens and n-grams as one flat tensor + offsets (see the module docstring)."""

    names = ("text", "offsets")
    axes = {"text": {0: "ids"}, "offsets": {0: "batch"}, "logits": {0: "batch"}}

    def __init__(self, ngrams: int, buckets: int = 0, drop_unknown: bool = True):
        self.ngrams, self.buckets, self.drop_unknown = ngrams, buckets, drop_unknown
        self.hashed = ngrams > 1 and buckets > 0
        self.kept_buckets: np.ndarray | None = None  # after `seqlab quantize --cutoff`: the hash buckets kept
        self._kept: tuple[Sequence[list[str]], Corpus] | None = None  # the vocabulary's corpus, for its encoding

    @classmethod
    def from_options(cls, opt, min_len: int = 1) -> BagFeatures:
        """From the classify task's options (`ngrams`, `ngram_buckets`, `drop_unknown`)."""
        return cls(opt.ngrams, opt.ngram_buckets, opt.drop_unknown)

    def vocab_tokens(self, tokens: list[str]) -> list[str]:
        """The tokens, and the n-gram strings when n-grams are vocabulary entries (torchtext's order)."""
        return tokens if self.ngrams == 1 or self.hashed else list(ngrams_iterator(tokens, self.ngrams))

    def corpus(self, tokens: Sequence[list[str]]) -> Corpus | None:
        """The texts as a `Corpus` when the corpus-level path applies (words and bigrams as vocabulary
        entries, tokens without whitespace, enough texts to pay numpy's overhead), else None."""
        if self.hashed or self.ngrams > 2 or len(tokens) < CORPUS_FROM:
            return None
        if self._kept is not None and self._kept[0] is tokens:
            return self._kept[1]
        corpus = Corpus.of(tokens)
        return None if corpus.spaced else corpus

    def build_vocab(self, tokens: Sequence[list[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """`Vocab.build` over each text's `vocab_tokens` (at corpus level for word bigrams: same result)."""
        corpus = self.corpus(tokens) if self.ngrams == 2 else None
        if corpus is not None:
            self._kept = (tokens, corpus)  # the training texts are encoded next: their corpus is kept for it
            return bigram_vocab(corpus, min_freq, max_size)
        return Vocab.build((self.vocab_tokens(t) for t in tokens), min_freq=min_freq, max_size=max_size)

    def encode(self, vocab: Vocab, tokens: Sequence[list[str]]) -> Packed:
        unk = vocab.unk_index
        corpus = self.corpus(tokens) if unk is not None else None
        self._kept = None
        if corpus is not None:
            return encode_bag(vocab, corpus, self.ngrams, self.drop_unknown)
        seqs = []
        for t in tokens:
            ids = vocab.encode(self.vocab_tokens(t))
            if self.hashed:
                ids = ids + self.bucket_rows(hashed_ngram_ids(ids, self.ngrams, self.buckets, len(vocab)), vocab)
            if self.drop_unknown:
                ids = [j for j in ids if j != unk]
            seqs.append(ids)
        return Packed.from_lists(seqs)

    def bucket_rows(self, ids: list[int], vocab: Vocab) -> list[int]:
        """Hashed n-gram ids (len(vocab) + bucket) as embedding rows: themselves, or after pruning the row of
        their bucket among the kept ones (a pruned bucket reads as unknown)."""
        if self.kept_buckets is None or not ids:
            return ids
        V, kept = len(vocab), self.kept_buckets
        b = np.asarray(ids, dtype=np.int64) - V
        pos = np.minimum(np.searchsorted(kept, b), len(kept) - 1)
        return np.where(kept[pos] == b, V + pos, vocab.unk_index).tolist()

    def rows(self, vocab: Vocab) -> int:
        """Rows of the embedding: the vocabulary, plus the hash buckets of fastText-style n-grams (those kept)."""
        if not self.hashed:
            return len(vocab)
        return len(vocab) + (self.buckets if self.kept_buckets is None else len(self.kept_buckets))

    def collate(self, data: Packed, index: np.ndarray, vocab: Vocab) -> tuple[torch.Tensor, ...]:
        return bag_batch(data, index)

    def lengths(self, data: Packed) -> None:
        return None  # a bag has no padding: nothing to gain from batches of similar length

    def truncated(self, data: Packed) -> int:
        return 0


class TokenFeatures:
    """Token ids padded per batch + lengths (see the module docstring)."""

    names = ("tokens", "lengths")
    axes = {"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "logits": {0: "batch"}}

    def __init__(self, max_len: int | None = None, min_len: int = 1):
        self.max_len, self.min_len = max_len, min_len

    @classmethod
    def from_options(cls, opt, min_len: int = 1) -> TokenFeatures:
        """From the classify task's options (`max_len`) and the model's shortest input (`min_len`)."""
        return cls(opt.max_len, min_len)

    def build_vocab(self, tokens: Sequence[list[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        return Vocab.build(tokens, min_freq=min_freq, max_size=max_size)

    def encode(self, vocab: Vocab, tokens: Sequence[list[str]]) -> Packed:
        return Packed.from_lists([vocab.encode(t) for t in tokens])

    def rows(self, vocab: Vocab) -> int:
        return len(vocab)

    def collate(self, data: Packed, index: np.ndarray, vocab: Vocab) -> tuple[torch.Tensor, ...]:
        return pad_batch(data, index, vocab.pad_index, self.max_len, self.min_len)

    def lengths(self, data: Packed) -> np.ndarray:
        return data.lengths

    def truncated(self, data: Packed) -> int:
        """How many sequences are longer than `max_len` (and cut)."""
        return int((data.lengths > self.max_len).sum()) if self.max_len else 0


FEATURES = {"bag": BagFeatures, "padded": TokenFeatures}
