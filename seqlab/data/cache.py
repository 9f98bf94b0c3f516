"""Tokenised corpora cached on disk as memory-mapped numpy arrays, reused across runs.

A corpus is tokenised once, streaming: lines are read lazily, encoded `lines_per_batch` at a time, and each
batch's ids are appended to a raw binary file (uint16 when the vocabulary fits, else uint32), so memory stays
bounded by one batch of lines (their encodings are the bulk of it) however large the file is. The file is
then opened as a read-only `np.memmap` (nanoGPT's train.bin), which costs no memory until pages are touched.
A later run with the same file contents and the same tokenizer finds the cache by its key and skips
tokenisation:

    cache_dir/<key>.bin    the token ids, native byte order
    cache_dir/<key>.json   {"tokens": N, "dtype": "uint16", "source": path, "tokenizer": kind}

key = sha256(file bytes, tokenizer definition, framing options). Both files are written under temporary names
and renamed into place (the .json last), so a crash never leaves a cache that looks complete.

The tokenizer is learned in one streaming pass over the same lazy lines (`TextTokenizer.train` consumes an
iterator) and cached too (`cached_tokenizer`: cache_dir/<key>.tokenizer.json, keyed by the file and the
tokenizer's options), so a second run over a big corpus reads both from disk."""

from __future__ import annotations

import hashlib
import json
import os
from itertools import islice
from pathlib import Path

import numpy as np

from seqlab.data.io import DEFAULT_MAX_LINE_CHARS, atomic_write_text, sha256_file
from seqlab.data.lm import read_corpus_lines
from seqlab.data.subword import WORD_KINDS, TextTokenizer
from seqlab.errors import CheckpointError, DataError

_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: hash a big file once


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered for this process while its size and mtime stay the same."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def cache_key(path: str | os.PathLike, tokenizer: TextTokenizer, add_eos_per_line: bool, encoding: str) -> str:
    """The name of a corpus's cache: a hash of the file's bytes, the tokenizer and how lines are framed."""
    h = hashlib.sha256()
    h.update(file_digest(path).encode())
    h.update(json.dumps(tokenizer._to_dict(), sort_keys=True).encode())
    h.update(f"eos={add_eos_per_line};encoding={encoding}".encode())
    return h.hexdigest()[:32]


def _dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def _open(bin_path: Path, meta_path: Path) -> np.memmap | None:
    """The cached ids, or None when the cache is missing or does not match its metadata."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype, n = np.dtype(meta["dtype"]), int(meta["tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not bin_path.is_file() or bin_path.stat().st_size != n * dtype.itemsize or n == 0:
        return None
    return np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,))


def cached_token_ids(
    path: str | os.PathLike,
    tokenizer: TextTokenizer,
    cache_dir: str | os.PathLike,
    add_eos_per_line: bool = True,
    encoding: str = "utf-8",
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
    lines_per_batch: int = 2_000,
) -> np.memmap:
    """The token ids of the text file `path` as a read-only memmap ids: (N,) uint16/uint32, the same ids as
    `seqlab.data.lm.encode_corpus` (same framing). Built by streaming on a miss, read from disk on a hit."""
    cache = Path(cache_dir)
    key = cache_key(path, tokenizer, add_eos_per_line, encoding)
    bin_path, meta_path = cache / f"{key}.bin", cache / f"{key}.json"
    hit = _open(bin_path, meta_path)
    if hit is not None:
        return hit
    cache.mkdir(parents=True, exist_ok=True)
    dtype = _dtype(tokenizer.vocab_size)
    lines = read_corpus_lines(path, keep_newlines=not add_eos_per_line, encoding=encoding,
                              max_line_chars=max_line_chars)
    tmp = cache / f".{key}.bin.tmp-{os.getpid()}"
    n = 0
    try:
        with open(tmp, "wb") as f:
            while batch := list(islice(lines, lines_per_batch)):
                encoded = tokenizer.encode_batch(batch, add_eos=add_eos_per_line)
                ids = np.fromiter((i for row in encoded for i in row), dtype=dtype)
                f.write(ids.tobytes())
                n += len(ids)
            f.flush()
            os.fsync(f.fileno())
        if n == 0:
            raise DataError("no tokens in the corpus (empty file?)", path)
        os.replace(tmp, bin_path)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_text(meta_path, json.dumps({"tokens": n, "dtype": dtype.name, "source": str(path),
                                             "tokenizer": tokenizer.kind}))
    return np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,))


def cached_tokenizer(
    path: str | os.PathLike,
    kind: str,
    cache_dir: str | os.PathLike,
    vocab_size: int | None = None,
    min_freq: int = 1,
    lowercase: bool = False,
    encoding: str = "utf-8",
) -> TextTokenizer:
    """`TextTokenizer.train(kind, ...)` on the lines of `path` (newlines kept except at word level, as the lm
    task does), learned once in one streaming pass and then read from cache_dir."""
    options = json.dumps([file_digest(path), kind, vocab_size, min_freq, lowercase, encoding])
    target = Path(cache_dir) / f"{hashlib.sha256(options.encode()).hexdigest()[:32]}.tokenizer.json"
    if target.is_file():
        try:
            return TextTokenizer.load(target)
        except CheckpointError:
            pass  # unreadable: learn it again and overwrite
    lines = read_corpus_lines(path, keep_newlines=kind not in WORD_KINDS, encoding=encoding)
    tokenizer = TextTokenizer.train(kind, lines, vocab_size, min_freq, lowercase=lowercase)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(target)
    return tokenizer
