"""Word n-grams, two ways: as strings in torchtext's order (the lecture's bag of n-grams, looked up in a
vocabulary) and as fastText's hashed ids (n-grams share `buckets` extra embedding rows after the words)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from seqlab.errors import ConfigError

FASTTEXT_MULTIPLIER = 116049371  # fastText's Dictionary::addWordNgrams: h = h * 116049371 + id (uint64)
_MASK64 = (1 << 64) - 1
_NUMPY_FROM = 24  # below this many ids the plain loop is faster than numpy's per-call overhead


def ngrams_iterator(tokens: Sequence[str], n: int) -> Iterator[str]:
    """torchtext's `ngrams_iterator`: every token, then every bigram "a b", then every trigram, ... up to
    n-grams, each in sentence order."""
    yield from tokens
    for k in range(2, n + 1):
        for i in range(len(tokens) - k + 1):
            yield " ".join(tokens[i : i + k])


def hashed_ngram_ids(ids: Sequence[int], n: int, buckets: int, offset: int) -> list[int]:
    """fastText's word n-gram ids for a sentence of word ids (`Dictionary::addWordNgrams`).

    For each start i, the hash of the 2..n-gram starting at i is extended one word at a time,
    h = h * 116049371 + ids[j] in uint64 arithmetic, and each n-gram gets id `offset + h % buckets`
    (`offset` = vocabulary size: the n-gram rows follow the word rows). Order as in fastText: by start
    position, then by length. Returns [] when n < 2."""
    if n < 2 or len(ids) < 2:
        return []
    if buckets < 1:
        raise ConfigError(f"buckets must be positive for word n-grams, got {buckets}")
    if len(ids) < _NUMPY_FROM:
        out = []
        length = len(ids)
        for i in range(length):
            h = ids[i]
            for j in range(i + 1, min(i + n, length)):
                h = (h * FASTTEXT_MULTIPLIER + ids[j]) & _MASK64
                out.append(offset + h % buckets)
        return out
    # Vectorised: column k-2 of `h` holds the hash of the k-gram starting at each position i.
    x = np.asarray(ids, dtype=np.uint64)  # (L,)
    length = len(x)
    h = np.empty((length, n - 1), dtype=np.uint64)  # (L, n-1)
    valid = np.zeros((length, n - 1), dtype=bool)
    current = x.copy()
    for k in range(2, n + 1):
        m = length - k + 1  # number of k-grams
        if m <= 0:
            break
        current = current[:m] * np.uint64(FASTTEXT_MULTIPLIER) + x[k - 1 : k - 1 + m]  # wraps mod 2**64
        h[:m, k - 2] = current
        valid[:m, k - 2] = True
    return (h[valid] % np.uint64(buckets) + np.uint64(offset)).astype(np.int64).tolist()
