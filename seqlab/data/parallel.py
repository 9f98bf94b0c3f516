"""Parallel text for translation: sentence pairs from two aligned files or one `src<TAB>tgt` file.

Multi30k task 1 (German -> English), as staged under $SEQLAB_DATA/multi30k; presets use `raw/`:

- ``raw/{train,val,test_2016_flickr}.{de,en}.gz``: the original sentences, case and punctuation kept;
  29,000 / 1,014 / 1,000 pairs, no empty line. The modern recipe: a BPE tokenizer trained on raw train (joint
  over both sides or one per side, see `seqlab.data.subword`), and BLEU by sacrebleu on the raw references.
  A joint byte-level BPE of 10,000 gives 418,277 de / 406,953 en tokens on train (max 52 / 48 per sentence).
- ``tok/{train,val,test_2016_flickr}.lc.norm.tok.{de,en}``: the same lines lowercased, normalised and
  tokenised (aligned with raw; 360,706 de / 377,534 en words on train), for the classic word-level recipe
  (`kind="word"`). A BLEU on these is tokenised and lowercased, not comparable with sacrebleu's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import zip_longest
from typing import NamedTuple

from seqlab.data.io import DEFAULT_MAX_LINE_CHARS, read_lines
from seqlab.data.readers import ReadStats, checked
from seqlab.errors import DataError


class Pair(NamedTuple):
    """One sentence pair; `line` is its 1-based line in the source file(s)."""

    src: str
    tgt: str
    line: int


def read_parallel(
    src_path: str | os.PathLike,
    tgt_path: str | os.PathLike,
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
    stats: ReadStats | None = None,
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
) -> Iterator[Pair]:
    """Yield the pairs of two line-aligned files (plain or .gz) lazily, sentences stripped of surrounding
    space.

    Files of different lengths raise DataError naming both files, at the line where the shorter one ended
    (always, even with `skip_bad_rows`). An empty sentence on either side, undecodable bytes, a NUL byte or an
    overlong line raise DataError(path, line) of that side; with `skip_bad_rows` the pair is skipped instead
    and counted in `stats`."""

    def rows() -> Iterator[Pair | DataError]:
        lines = zip_longest(
            read_lines(src_path, encoding, max_line_chars), read_lines(tgt_path, encoding, max_line_chars)
        )
        for src, tgt in lines:
            if src is None or tgt is None:
                ended, other, number = (
                    (src_path, tgt_path, tgt[0]) if src is None else (tgt_path, src_path, src[0])
                )
                raise DataError(
                    f"ended after {number - 1} lines but {other} goes on; "
                    "parallel files must align line by line",
                    ended,
                    number,
                )
            yield _pair(src, src_path, tgt, tgt_path)

    return checked(rows(), src_path, skip_bad_rows, stats, what="sentence pairs")


def read_parallel_tsv(
    path: str | os.PathLike,
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
    stats: ReadStats | None = None,
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
) -> Iterator[Pair]:
    """Yield the pairs of a `source<TAB>target` file (plain or .gz) lazily. Blank lines are skipped; a line
    without exactly two fields, an empty side, undecodable bytes, a NUL byte or an overlong line raise
    DataError(path, line), or with `skip_bad_rows` are skipped and counted in `stats`."""

    def rows() -> Iterator[Pair | DataError]:
        for number, text, problem in read_lines(path, encoding, max_line_chars):
            if problem is not None:
                yield DataError(problem, path, number)
            elif text.strip():
                fields = text.split("\t")
                if len(fields) != 2:
                    yield DataError(
                        f"expected 2 tab-separated fields (source<TAB>target), found {len(fields)}",
                        path,
                        number,
                    )
                else:
                    yield _pair((number, fields[0], None), path, (number, fields[1], None), path)

    return checked(rows(), path, skip_bad_rows, stats, what="sentence pairs")


def _pair(
    src: tuple[int, str, str | None],
    src_path: str | os.PathLike,
    tgt: tuple[int, str, str | None],
    tgt_path: str | os.PathLike,
) -> Pair | DataError:
    """The pair of two `read_lines` entries, or the DataError that makes it bad (returned, not raised, so
    the caller may skip it): a problem of the line or an empty sentence, on the source side first."""
    sentences = []
    for (number, text, problem), path, side in ((src, src_path, "source"), (tgt, tgt_path, "target")):
        if problem is not None:
            return DataError(problem, path, number)
        if not text.strip():
            return DataError(f"empty {side} sentence", path, number)
        sentences.append(text.strip())
    return Pair(sentences[0], sentences[1], src[0])


