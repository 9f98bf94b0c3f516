"""Word n-grams: torchtext's string order and fastText's hashed ids."""

from __future__ import annotations

import random

import pytest

from seqlab.data.ngrams import hashed_ngram_ids, ngrams_iterator
from seqlab.errors import ConfigError


def test_ngrams_iterator_is_torchtexts_order():
    tokens = ["here", "we", "are", "now"]
    assert list(ngrams_iterator(tokens, 1)) == tokens
    assert list(ngrams_iterator(tokens, 3)) == [
        "here", "we", "are", "now", "here we", "we are", "are now", "here we are", "we are now"]
    assert list(ngrams_iterator(["one"], 3)) == ["one"]


def fasttext_add_word_ngrams(ids, n, buckets, offset):
    """fastText's Dictionary::addWordNgrams with Python integers reduced mod 2**64 (uint64_t)."""
    out = []
    for i in range(len(ids)):
        h = ids[i]
        for j in range(i + 1, min(len(ids), i + n)):
            h = (h * 116049371 + ids[j]) % 2**64
            out.append(offset + h % buckets)
    return out


def test_hashed_ngram_ids_small_case_by_hand():
    # ids [3, 5, 7], n=3, 1000 buckets after a 10-word vocabulary:
    #   (3,5):   3*116049371 + 5 = 348148118            -> 118 -> 128
    #   (3,5,7): 348148118*116049371 + 7 = 40402370108733785 -> 785 -> 795
    #   (5,7):   5*116049371 + 7 = 580246862            -> 862 -> 872
    assert hashed_ngram_ids([3, 5, 7], 3, 1000, 10) == [128, 795, 872]


@pytest.mark.parametrize("length", [2, 5, 23, 24, 25, 60, 300])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_hashed_ngram_ids_match_fasttext_loop_including_uint64_wraparound(length, n):
    rng = random.Random(length * 10 + n)
    ids = [rng.randrange(2_000_000) for _ in range(length)]
    expected = fasttext_add_word_ngrams(ids, n, 2_000_000, 12345)
    assert hashed_ngram_ids(ids, n, 2_000_000, 12345) == expected
    assert all(12345 <= i < 12345 + 2_000_000 for i in expected)
    assert len(expected) == sum(min(n - 1, length - 1 - i) for i in range(length))


def test_hashed_ngram_ids_edge_cases():
    assert hashed_ngram_ids([1, 2, 3], 1, 100, 0) == []
    assert hashed_ngram_ids([1], 2, 100, 0) == []
    assert hashed_ngram_ids([], 2, 100, 0) == []
    with pytest.raises(ConfigError, match="buckets"):
        hashed_ngram_ids([1, 2], 2, 0, 0)
