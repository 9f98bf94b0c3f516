"""Word vectors in the text format of word2vec, GloVe and fastText's `.vec`: one word per line followed by
its numbers (`the 0.418 0.24968 -0.41242 ...`); a first line of two integers (`400000 300`, word2vec's
header) is skipped; `.gz` files are read as such. A vocabulary word takes the vector of the same word,
else of the first word of the file that lowercases to it."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence

import numpy as np

from seqlab.errors import ConfigError, DataError


def _open(path: str | os.PathLike):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8")


def read_vectors(path: str | os.PathLike, words: Sequence[str], dim: int, skip: Sequence[int] = ()
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of `words` (a vocabulary's itos; indices in `skip`, such as padding, take none) found in
    the file: (index (found,) int64 sorted, table (found, dim) float32). ConfigError when the file's vectors
    are not `dim` wide or it is missing; DataError (file:line) when a line is not a word and numbers."""
    skipped = set(skip)
    stoi = {w: i for i, w in enumerate(words) if i not in skipped}
    lower_stoi = {w.lower(): i for w, i in reversed(stoi.items())}  # the first of a case family wins
    exact: dict[int, list[float]] = {}
    lowered: dict[int, list[float]] = {}
    checked = False
    try:
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n\r ")
                if not line:
                    continue
                parts = line.rsplit(" ", dim)  # a word may itself hold spaces (GloVe 840B)
                if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec's "count dim" header
                got = len(parts) - 1 if checked else len(line.split(" ")) - 1
                if got != dim:
                    raise ConfigError(f"pretrained vectors have {got} dimensions but the model's embedding has "
                                      f"{dim}; set the model's embedding size to {got}", path=path, line=lineno)
                checked = True
                word = parts[0]
                index = stoi.get(word)
                if index is not None:
                    target = exact
                elif (index := lower_stoi.get(word.lower())) is not None and index not in lowered:
                    target = lowered
                else:
                    continue
                try:
                    target[index] = [float(x) for x in parts[1:]]
                except ValueError:
                    raise DataError(f"not a number in the vector of {word!r}", path=path, line=lineno) from None
    except FileNotFoundError:
        raise ConfigError("pretrained vectors file not found", path=path) from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"cannot read pretrained vectors ({e.__class__.__name__})", path=path) from None
    found = {**lowered, **exact}
    index = np.array(sorted(found), dtype=np.int64)
    table = np.array([found[i] for i in index.tolist()], dtype=np.float32).reshape(len(index), dim)
    return index, table
