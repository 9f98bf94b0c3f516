"""The bag of n-grams at corpus level: a vocabulary of words and word bigrams, and every text's ids, computed
for the whole corpus at once over flat numpy arrays of word ids (no bigram strings, no per-text loop).

A corpus is its texts' tokens as one flat array: `Corpus.of(token_lists)` numbers the distinct words in
order of first occurrence (`words`), `ids: (total tokens,)` holds each token's word number and `starts`,
`lengths: (texts,)` where each text lies. A bigram is the pair of its word numbers, one int64 key
`a * W + b`. The results equal the per-text path exactly (`ngrams_iterator` strings counted by
`Vocab.build` and looked up by `Vocab.encode`: tests/test_corpus.py): the same entries in the same order
(by count, ties by first occurrence in the stream "text 1's words, text 1's bigrams, text 2's words, ..."),
the same ids per text in torchtext's order (the words, then the bigrams).

It needs tokens without whitespace (a bigram entry is "a b": its two words are found again by splitting at
the space); `Corpus.spaced` says when that fails (the `char` tokenizer), and the caller takes the per-text
path."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from seqlab.data.batching import Packed
from seqlab.data.vocab import Vocab


@dataclass
class Corpus:
    """Texts' tokens as word numbers: `ids[starts[i]:starts[i] + lengths[i]]` is text i."""

    words: list[str]  # word number -> word, in order of first occurrence
    ids: np.ndarray  # (total,) int64
    starts: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64

    @classmethod
    def of(cls, token_lists: Iterable[list[str]], chunk: int = 2048) -> Corpus:
        """Number the words of texts' tokens, `chunk` texts at a time: only one chunk's token strings need
        to be alive (`token_lists` may tokenize lazily)."""
        index: dict[str, int] = {}
        ids, lengths = [], []
        texts = iter(token_lists)
        while batch := list(itertools.islice(texts, chunk)):
            flat = list(itertools.chain.from_iterable(batch))
            for w in dict.fromkeys(flat):  # the chunk's words in order of first occurrence
                if w not in index:
                    index[w] = len(index)
            ids.append(np.fromiter(map(index.__getitem__, flat), dtype=np.int64, count=len(flat)))
            lengths.append(np.fromiter(map(len, batch), dtype=np.int64, count=len(batch)))
        lengths_ = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        starts = np.zeros(len(lengths_), dtype=np.int64)
        np.cumsum(lengths_[:-1], out=starts[1:])
        return cls(list(index), np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64), starts, lengths_)

    @property
    def spaced(self) -> bool:
        """Whether some token holds whitespace (then a bigram string "a b" cannot be split back)."""
        return any(len(w.split()) != 1 for w in self.words)

    def pair_positions(self) -> np.ndarray:
        """(bigrams,) the flat position of each bigram's first word (bigrams never cross texts)."""
        inner = np.ones(len(self.ids), dtype=bool)
        ends = self.starts + self.lengths - 1  # each text's last token starts no bigram
        inner[ends[self.lengths > 0]] = False
        return np.flatnonzero(inner)

    def stream_positions(self, flat: np.ndarray, pair: bool = False) -> np.ndarray:
        """(K,) where the tokens at flat positions `flat` (K,), or the bigrams they start when `pair`, come
        in the stream text 1's words, text 1's bigrams, text 2's words, ..."""
        n = self.lengths
        first = np.zeros(len(n), dtype=np.int64)
        np.cumsum((n + np.maximum(n - 1, 0))[:-1], out=first[1:])
        text = np.searchsorted(self.starts, flat, side="right") - 1  # an empty text never holds a token
        return first[text] + (n[text] if pair else 0) + flat - self.starts[text]

    def texts(self, a: int, b: int) -> Corpus:
        """Texts a..b-1 as a corpus of their own (views of the arrays; the same word numbers)."""
        lo = int(self.starts[a]) if a < len(self.starts) else len(self.ids)
        hi = int(self.starts[b - 1] + self.lengths[b - 1]) if b > a else lo
        return Corpus(self.words, self.ids[lo:hi], self.starts[a:b] - lo, self.lengths[a:b])


def bigram_vocab(corpus: Corpus, min_freq: int = 1, max_size: int | None = None,
                 specials: Sequence[str] = ("<unk>", "<pad>"), unk_token: str | None = "<unk>",
                 pad_token: str | None = "<pad>") -> Vocab:
    """`Vocab.build` over the words and bigrams of every text, computed on the corpus's arrays."""
    W = len(corpus.words)
    word_count = np.bincount(corpus.ids, minlength=W)
    # words are numbered in order of first occurrence: a word first occurs where the running maximum grows
    rising = np.maximum.accumulate(corpus.ids)
    first_index = np.flatnonzero(np.concatenate([[True], rising[1:] > rising[:-1]])) if len(rising) else rising
    del rising
    word_first = corpus.stream_positions(first_index)
    p = corpus.pair_positions()
    keys = corpus.ids[p] * W + corpus.ids[p + 1]
    pair_keys, pair_first, pair_count = np.unique(keys, return_index=True, return_counts=True)
    pair_first = corpus.stream_positions(p[pair_first], pair=True)
    del p, keys
    for s in specials:  # Vocab.build never counts a special (a bigram string holds a space: never one)
        if s in corpus.words:
            word_count[corpus.words.index(s)] = 0
    count = np.concatenate([word_count, pair_count])
    first = np.concatenate([word_first, pair_first])
    order = np.lexsort((first, -count))
    order = order[count[order] >= max(min_freq, 1)]
    if max_size is not None:
        order = order[: max(0, max_size - len(specials))]
    words = corpus.words
    ranked = [words[e] if e < W else f"{words[(k := int(pair_keys[e - W])) // W]} {words[k % W]}"
              for e in order.tolist()]
    vocab = Vocab([*specials, *ranked], specials, unk_token, pad_token)
    ids = np.arange(len(order), dtype=np.int64) + len(specials)
    is_word = order < W
    word_vid = np.full(W, -1, dtype=np.int64)
    word_vid[order[is_word]] = ids[is_word]
    for i, t in enumerate(specials):  # a special written in a text is that special in its bigrams
        if t in corpus.words:
            word_vid[corpus.words.index(t)] = i
    pairs = pair_keys[order[~is_word] - W]
    vocab.bigrams = _bigram_table(len(vocab), word_vid[pairs // W], word_vid[pairs % W], ids[~is_word])
    return vocab


def encode_bag(vocab: Vocab, corpus: Corpus, ngrams: int, drop_unknown: bool = True, chunk: int = 4096) -> Packed:
    """Each text's vocabulary ids in torchtext's order (its words, then its bigrams when `ngrams` is 2),
    unknown ones left out when `drop_unknown`: the per-text `vocab.encode(ngrams_iterator(tokens))`.
    Encoded `chunk` texts at a time, so that the intermediate arrays stay small."""
    get = vocab.stoi.get
    known = np.fromiter((get(w, -1) for w in corpus.words), dtype=np.int64, count=len(corpus.words))  # (W,)
    parts = [_encode_chunk(vocab, corpus.texts(a, min(a + chunk, len(corpus.lengths))), known, ngrams, drop_unknown)
             for a in range(0, len(corpus.lengths), chunk)]
    ids = np.concatenate([q.ids for q in parts]) if parts else np.zeros(0, dtype=np.int64)
    lengths = np.concatenate([q.lengths for q in parts]) if parts else np.zeros(0, dtype=np.int64)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return Packed(ids, starts, lengths)


def _encode_chunk(vocab: Vocab, corpus: Corpus, known: np.ndarray, ngrams: int, drop_unknown: bool) -> Packed:
    """`encode_bag` of a few texts, `known: (W,)` each word number's vocabulary id (-1: none)."""
    unk = vocab.unk_index
    vid = known[corpus.ids]  # (total,) vocabulary ids, -1: not in the vocabulary
    n = corpus.lengths
    if ngrams == 1:
        out, text_len = np.where(vid < 0, unk, vid), n
    else:
        word_pos = corpus.stream_positions(np.arange(len(vid)))
        p = corpus.pair_positions()
        out = np.empty(len(vid) + len(p), dtype=np.int64)
        out[word_pos] = vid
        out[corpus.stream_positions(p, pair=True)] = _pair_ids(vocab, vid[p], vid[p + 1])
        out[word_pos[vid < 0]] = unk
        text_len = n + np.maximum(n - 1, 0)
    if drop_unknown and unk is not None:
        keep = out != unk
        text = np.repeat(np.arange(len(n)), text_len)
        text_len = np.bincount(text[keep], minlength=len(n)).astype(np.int64)
        out = out[keep]
    return Packed(out, np.zeros(0, dtype=np.int64), text_len)  # starts: set by encode_bag


def _pair_ids(vocab: Vocab, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The vocabulary id of each bigram (a[i], b[i]) of vocabulary word ids (-1: a word not in the
    vocabulary, so no bigram entry either), or unk."""
    table = vocab.bigrams
    if table is None:  # a vocabulary read from a run: its bigram entries "x y" split at the space
        stoi = vocab.stoi
        found = [(i, stoi.get(x, -1), stoi.get(y, -1)) for i, (x, _, y) in
                 ((i, t.partition(" ")) for i, t in enumerate(vocab.itos) if " " in t)]
        arr = np.asarray(found, dtype=np.int64).reshape(-1, 3)
        table = vocab.bigrams = _bigram_table(len(vocab), arr[:, 1], arr[:, 2], arr[:, 0])
    q = np.where((a < 0) | (b < 0), -1, a * len(vocab) + b)
    return table.get(q, vocab.unk_index)


def _bigram_table(V: int, a: np.ndarray, b: np.ndarray, ids: np.ndarray) -> IntTable:
    """The bigram entries' ids keyed by a * V + b (their words' vocabulary ids; pairs with a word missing
    from the vocabulary, which `Vocab.build`'s order never gives, are left out)."""
    ok = (a >= 0) & (b >= 0)
    return IntTable(a[ok] * V + b[ok], ids[ok])


class IntTable:
    """A hash table from int64 keys (≥ 0) to int64 values, built and queried for whole arrays at once:
    open addressing with linear probing at load ≤ 1/2, Fibonacci hashing (4× faster than a binary search
    of sorted keys for millions of queries)."""

    _MULT = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, keys: np.ndarray, values: np.ndarray):
        bits = max(4, int(2 * len(keys)).bit_length())
        self.mask = (1 << bits) - 1
        self.shift = np.uint64(64 - bits)
        self.keys = np.full(self.mask + 1, -1, dtype=np.int64)  # -1: empty slot
        self.values = np.zeros(self.mask + 1, dtype=np.int64)
        slot = self.slot(keys)
        pending = np.arange(len(keys))
        while len(pending):
            s = slot[pending]
            free = self.keys[s] == -1
            taken, first = np.unique(s[free], return_index=True)  # one key per free slot this round
            winners = pending[free][first]
            self.keys[taken], self.values[taken] = keys[winners], values[winners]
            placed = np.zeros(len(keys), dtype=bool)
            placed[winners] = True
            pending = pending[~placed[pending]]
            slot[pending] = (slot[pending] + 1) & self.mask

    def slot(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * self._MULT) >> self.shift).astype(np.int64)

    def get(self, keys: np.ndarray, default: int) -> np.ndarray:
        """(N,) the value of each key, `default` where a key is absent (negative keys are always absent)."""
        out = np.full(len(keys), default, dtype=np.int64)
        active = np.flatnonzero(keys >= 0)
        s = self.slot(keys[active])
        while len(active):
            k = self.keys[s]
            hit = k == keys[active]
            out[active[hit]] = self.values[s[hit]]
            more = ~hit & (k != -1)
            active, s = active[more], (s[more] + 1) & self.mask
        return out
