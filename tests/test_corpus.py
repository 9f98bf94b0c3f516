"""The corpus-level bag of n-grams (seqlab/data/corpus.py) equals the per-text path exactly."""

import random

import numpy as np
import pytest

from seqlab.data.corpus import Corpus, IntTable, bigram_vocab, encode_bag
from seqlab.data.features import CORPUS_FROM, BagFeatures
from seqlab.data.ngrams import ngrams_iterator
from seqlab.data.tokenizers import basic_english
from seqlab.data.vocab import Vocab


def per_text_vocab(tokens, min_freq, max_size):
    return Vocab.build((list(ngrams_iterator(t, 2)) for t in tokens), min_freq=min_freq, max_size=max_size)


def per_text_encode(vocab, tokens, ngrams, drop_unknown):
    seqs = [vocab.encode(list(ngrams_iterator(t, ngrams))) for t in tokens]
    return [[j for j in s if j != vocab.unk_index] if drop_unknown else s for s in seqs]


def as_lists(packed):
    return [packed.get(i).tolist() for i in range(len(packed))]


def random_corpus(rng, words, texts=6, longest=7):
    return [[rng.choice(words) for _ in range(rng.randint(0, longest))] for _ in range(rng.randint(1, texts))]


@pytest.mark.parametrize("seed", range(40))
def test_vocab_and_ids_equal_the_per_text_path(seed):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(rng.randint(1, 9))] + ["<unk>", "<pad>"]  # specials can occur as text
    train = random_corpus(rng, words)
    min_freq, max_size = rng.randint(1, 3), rng.choice([None, 3, 5, 9])
    chunk = rng.randint(1, 4)  # texts numbered and encoded a few at a time: the same as all at once
    vocab = bigram_vocab(Corpus.of(iter(train), chunk=chunk), min_freq, max_size)
    assert vocab.itos == per_text_vocab(train, min_freq, max_size).itos
    test = random_corpus(rng, [*words, "new", "other"])
    for ngrams in (1, 2):
        for drop in (True, False):
            for v in (vocab, Vocab(vocab.itos)):  # built here, and as read back from a run (no bigram table)
                for c in (chunk, 4096):
                    assert as_lists(encode_bag(v, Corpus.of(test), ngrams, drop, chunk=c)) == \
                        per_text_encode(vocab, test, ngrams, drop)


def test_real_text_equals_and_featurizer_switches_paths():
    texts = ["A film, (not) a movie!", "Not a film; a movie.", "the film's end", "", "a a a a"] * 30
    tokens = [basic_english(t) for t in texts]
    feats = BagFeatures(2)
    assert feats.corpus(tokens) is not None and len(tokens) >= CORPUS_FROM
    vocab = feats.build_vocab(tokens, 2)
    assert vocab.itos == per_text_vocab(tokens, 2, None).itos
    assert as_lists(feats.encode(vocab, tokens)) == per_text_encode(vocab, tokens, 2, True)
    few = tokens[:3]  # below CORPUS_FROM: the per-text path, same ids
    assert feats.corpus(few) is None
    assert as_lists(feats.encode(vocab, few)) == per_text_encode(vocab, few, 2, True)


def test_tokens_with_spaces_take_the_per_text_path():
    chars = [list("ab ba"), list("a b")] * 40  # the char tokenizer: " " is a token, "a  " is ambiguous
    feats = BagFeatures(2)
    assert Corpus.of(chars).spaced and feats.corpus(chars) is None
    vocab = feats.build_vocab(chars)
    assert vocab.itos == per_text_vocab(chars, 1, None).itos


def test_int_table_finds_every_key_and_only_those():
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 10**12, 5000))
    table = IntTable(keys, np.arange(len(keys)))
    assert table.get(keys, -1).tolist() == list(range(len(keys)))
    absent = np.setdiff1d(rng.integers(0, 10**12, 5000), keys)
    assert (table.get(absent, -1) == -1).all() and (table.get(np.array([-1, -5]), 7) == 7).all()
