"""Language-modelling data: a corpus as one stream of token ids, cut into training batches two ways.

- Recurrent models (truncated BPTT, as PyTorch's word_language_model example): `batchify` cuts the stream into
  B parallel streams, `bptt_windows` walks them left to right in windows of `bptt` tokens, so the hidden state
  of one window carries over to the next.
- Transformers (as nanoGPT): `random_windows` samples B random blocks of `block_size` tokens per step.

The stream keeps the line structure: word-level corpora end each line with `<eos>` (PTB style), character-
level ones with the newline character itself. Everything here is deterministic; randomness comes only from the
`torch.Generator` the caller passes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice

import numpy as np
import torch

from seqlab.data.io import DEFAULT_MAX_LINE_CHARS, read_lines
from seqlab.data.subword import TextTokenizer
from seqlab.errors import ConfigError, DataError


def read_corpus_lines(
    path: str | os.PathLike,
    keep_newlines: bool,
    encoding: str = "utf-8",
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
) -> Iterator[str]:
    """Yield the lines of `path` lazily, each ending with "\\n" if `keep_newlines` (a last line without one
    gets one, as in a POSIX text file). Train a tokenizer on exactly these lines so it knows the newline.
    A line that is not valid `encoding`, holds a NUL byte or is too long raises DataError(path, line)."""
    for number, text, problem in read_lines(path, encoding, max_line_chars):
        if problem is not None:
            raise DataError(problem, path, number)
        yield text + "\n" if keep_newlines else text


def encode_corpus(
    path: str | os.PathLike,
    tokenizer: TextTokenizer,
    add_eos_per_line: bool = True,
    encoding: str = "utf-8",
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
    lines_per_batch: int = 10_000,
) -> np.ndarray:
    """The whole file as one stream of token ids, ids: (N,) int64, read line by line (memory O(N)).

    `add_eos_per_line=True` (word level, PTB style): each line's tokens then `<eos>`; the newline itself is
    not a token. `add_eos_per_line=False` (char level): each line is encoded with its newline character."""
    lines = read_corpus_lines(
        path, keep_newlines=not add_eos_per_line, encoding=encoding, max_line_chars=max_line_chars
    )
    return encode_texts(lines, tokenizer, add_eos_per_line, path, lines_per_batch)


def encode_texts(texts: Iterable[str], tokenizer: TextTokenizer, add_eos: bool, path: str | os.PathLike,
                 batch: int = 10_000) -> np.ndarray:
    """Texts (lines, documents) as one stream of token ids, (N,) int64, `<eos>` after each with `add_eos`,
    encoded `batch` at a time; DataError naming `path` when there is no token at all."""
    texts = iter(texts)
    chunks = []
    while part := list(islice(texts, batch)):
        encoded = tokenizer.encode_batch(part, add_eos=add_eos)
        chunks.append(np.fromiter((i for ids in encoded for i in ids), dtype=np.int64))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    if ids.size == 0:
        raise DataError("no tokens in the corpus (empty file?)", path)
    return ids


def split_corpus(ids: np.ndarray, valid_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid): the first (1 - valid_fraction) of the stream and the rest, as nanoGPT's 90/10 split."""
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    n = int((1.0 - valid_fraction) * len(ids))
    return ids[:n], ids[n:]


def batchify(ids: np.ndarray | torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut the stream ids: (L,) into `batch_size` parallel streams: (B, N), N = L // B; row b is the b-th
    contiguous piece of the stream and the L % B tokens at the end are dropped."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    data = torch.as_tensor(ids, dtype=torch.long)
    n = len(data) // batch_size
    if n < 2:
        raise DataError(
            f"a corpus of {len(data)} tokens is too short for batch_size={batch_size} "
            "(each stream needs at least 2 tokens)"
        )
    return data[: n * batch_size].view(batch_size, n)


def bptt_windows(streams: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Walk streams: (B, N) left to right, yielding x: (B, T) and y: (B, T), y the next token of each x
    (x shifted by one). T = bptt except for the last, shorter window. Over one pass every position
    0 .. N-2 is an input exactly once and every position 1 .. N-1 a target exactly once."""
    if bptt < 1:
        raise ConfigError(f"bptt must be at least 1, got {bptt}")
    n = streams.size(1)
    for start in range(0, n - 1, bptt):
        t = min(bptt, n - 1 - start)
        yield streams[:, start : start + t], streams[:, start + 1 : start + 1 + t]


def random_windows(
    ids: np.ndarray | torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of random blocks of the stream ids: (L,), as nanoGPT's get_batch: x: (B, T) and
    y: (B, T) = x shifted by one, T = block_size, start positions uniform in [0, L - T). The batches depend
    only on `generator`'s state, so a saved generator state resumes the same sequence."""
    if block_size < 1 or batch_size < 1:
        raise ConfigError(f"block_size and batch_size must be at least 1, got {block_size} and {batch_size}")
    data = torch.as_tensor(ids, dtype=torch.long)
    if len(data) <= block_size:
        raise DataError(f"a corpus of {len(data)} tokens is too short for block_size={block_size}")
    offsets = torch.arange(block_size + 1)
    while True:
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        block = data[starts[:, None] + offsets]  # (B, T + 1)
        yield block[:, :-1], block[:, 1:]
