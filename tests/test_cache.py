"""Tokenised corpora cached as memmaps: same ids as encoding in memory, hits skip tokenisation, misses on any
change, bounded memory on a big file, and the lm task reusing the cache across runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import seqlab
from seqlab.data.cache import cache_key, cached_token_ids, cached_tokenizer
from seqlab.data.lm import encode_corpus, read_corpus_lines
from seqlab.data.subword import TextTokenizer
from seqlab.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
LINES = ["the cat sat on the mat", "a bird sang in the tree", "the rain fell on the roof"]


def corpus(tmp_path, lines=30, name="text.txt"):
    path = tmp_path / name
    path.write_text("\n".join(LINES[i % 3] for i in range(lines)) + "\n", encoding="utf-8")
    return path


def tokenizer(path, kind):
    return TextTokenizer.train(kind, read_corpus_lines(path, keep_newlines=kind == "char"))


@pytest.mark.parametrize("kind", ["char", "word"])
def test_cached_ids_equal_encoding_in_memory_and_a_hit_does_not_tokenise(tmp_path, kind, monkeypatch):
    path = corpus(tmp_path)
    tk = tokenizer(path, kind)
    eos = kind == "word"
    ids = cached_token_ids(path, tk, tmp_path / "cache", add_eos_per_line=eos, lines_per_batch=7)
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    assert np.array_equal(ids, encode_corpus(path, tk, add_eos_per_line=eos))
    monkeypatch.setattr(TextTokenizer, "encode_batch", lambda *a, **k: pytest.fail("tokenised on a cache hit"))
    again = cached_token_ids(path, tk, tmp_path / "cache", add_eos_per_line=eos)
    assert np.array_equal(again, ids)
    assert len(list((tmp_path / "cache").glob("*.bin"))) == 1


def test_the_key_changes_with_the_file_the_tokenizer_and_the_framing(tmp_path):
    path = corpus(tmp_path)
    tk, other = tokenizer(path, "word"), tokenizer(path, "char")
    key = cache_key(path, tk, True, "utf-8")
    assert key == cache_key(path, tokenizer(path, "word"), True, "utf-8")  # equal tokenizers, same key
    assert key != cache_key(path, other, True, "utf-8")
    assert key != cache_key(path, tk, False, "utf-8")
    path.write_text(path.read_text() + "one more line\n")
    assert key != cache_key(path, tk, True, "utf-8")


def test_a_truncated_or_half_written_cache_is_rebuilt(tmp_path):
    path = corpus(tmp_path)
    tk = tokenizer(path, "word")
    ids = np.array(cached_token_ids(path, tk, tmp_path / "c"))
    bin_path = next((tmp_path / "c").glob("*.bin"))
    bin_path.write_bytes(bin_path.read_bytes()[:10])  # truncated
    assert np.array_equal(cached_token_ids(path, tk, tmp_path / "c"), ids)
    next((tmp_path / "c").glob("*.json")).unlink()  # killed before the metadata was written
    assert np.array_equal(cached_token_ids(path, tk, tmp_path / "c"), ids)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="no tokens"):
        cached_token_ids(empty, tk, tmp_path / "c")
    assert not list((tmp_path / "c").glob(".*tmp*"))


PEAK = """
import resource, sys
from seqlab.data.cache import cached_token_ids
from seqlab.data.lm import read_corpus_lines
from seqlab.data.subword import TextTokenizer
path, cache = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tk = TextTokenizer.train("word", read_corpus_lines(path, keep_newlines=False))
ids = cached_token_ids(path, tk, cache)
print(len(ids), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_peak_memory_of_tokenising_a_big_file_is_bounded(tmp_path):
    """20 MB of text, 5M word tokens: in memory as int64 they alone would take 40 MB; tokenizer training,
    tokenising and caching together stay below 30 MB over the interpreter's baseline."""
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(5000)])
    path = tmp_path / "big.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(50):
            f.write("\n".join(" ".join(row) for row in words[rng.integers(0, 5000, (4000, 24))]) + "\n")
    assert path.stat().st_size > 19e6
    out = subprocess.run([sys.executable, "-c", PEAK, str(path), str(tmp_path / "cache")], capture_output=True,
                         text=True, check=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    tokens, grown = map(int, out.split())
    assert tokens == 50 * 4000 * 25  # 24 words and <eos> per line
    assert grown < 30e6, f"peak memory grew by {grown / 1e6:.0f} MB"


def test_lm_runs_share_the_cache_and_train_as_without_it(tmp_path, monkeypatch):
    path = corpus(tmp_path, lines=60)
    base = {"task": "lm", "model": "rnn", "data.train": str(path), "data.valid_fraction": 0.1,
            "model.hidden": 16, "model.layers": 1, "task.bptt": 16, "train.batch_size": 4,
            "train.optimizer": "adam", "train.lr": 0.01, "train.epochs": 1, "task.tokenizer": "word"}
    plain = seqlab.train(base, out=tmp_path / "plain", quiet=True)
    cache = tmp_path / "tokens"
    a = seqlab.train({**base, "task.token_cache": str(cache)}, out=tmp_path / "a", quiet=True)
    (meta,) = cache.glob("*[0-9a-f].json")
    stamp = (cache / f"{meta.stem}.bin").stat().st_mtime_ns
    monkeypatch.setattr(TextTokenizer, "train", lambda *a, **k: pytest.fail("tokenizer learned again"))
    b = seqlab.train({**base, "task.token_cache": str(cache)}, out=tmp_path / "b", quiet=True)
    assert (cache / f"{meta.stem}.bin").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert json.loads(meta.read_text())["tokens"] == 60 * (6 + 1)  # six words and <eos> per line
    w = [load_file(str(r / "model.safetensors")) for r in (plain, a, b)]
    assert all(torch.equal(w[0][k], w[i][k]) for i in (1, 2) for k in w[0])
    texts = [(r / "tokenizer.json").read_text() for r in (plain, a, b)]
    assert texts[0] == texts[1] == texts[2]


def test_cached_tokenizer_is_learned_once_per_file_and_options(tmp_path, monkeypatch):
    path = corpus(tmp_path)
    first = cached_tokenizer(path, "bpe", tmp_path / "c", vocab_size=300)
    assert first == TextTokenizer.train("bpe", read_corpus_lines(path, keep_newlines=True), 300)
    assert cached_tokenizer(path, "word", tmp_path / "c") == tokenizer(path, "word")  # other options: learned
    learned, train = [], TextTokenizer.train

    def counting_train(*a, **k):
        learned.append(a[0])
        return train(*a, **k)

    monkeypatch.setattr(TextTokenizer, "train", counting_train)
    assert cached_tokenizer(path, "bpe", tmp_path / "c", vocab_size=300) == first
    assert not learned
    next((tmp_path / "c").glob("*.tokenizer.json")).write_text("{not json")  # damaged: learned again
    cached_tokenizer(path, "bpe", tmp_path / "c", vocab_size=300)
    cached_tokenizer(path, "word", tmp_path / "c")
    assert len(learned) == 1
