"""Tagged sentences for the `tag` task: CoNLL-U (Universal Dependencies) and two-column `token<TAB>tag` files.

CoNLL-U, as universaldependencies.org/format.html defines it: a sentence is a run of lines ended by a blank
line (the last one may lack it); comment lines start with `#` and come before the sentence's first token
line; a token line has 10 TAB-separated fields, `ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC`.
ID is a word index (1, 2, ...), a multiword token range (`1-2`: the surface form "don't" over the words "do"
and "n't") or an empty node (`8.1`: an elided word of the enhanced graph). The tagger sees the syntactic
words only: ranges and empty nodes never enter a `Sentence`. FORM may contain spaces; no field may be empty
(`_` marks an unspecified value).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from seqlab.data.io import read_lines
from seqlab.data.readers import ReadStats, checked
from seqlab.errors import ConfigError, DataError

FIELDS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
TAG_COLUMNS = {"upos": 3, "xpos": 4}

_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)")
_EMPTY_ID = re.compile(r"(0|[1-9][0-9]*)\.([1-9][0-9]*)")
_METADATA = re.compile(r"#\s*(sent_id|text)\s*=\s?(.*)")

Block = list[tuple[int, str, str | None]]  # the (line number, text, problem) lines of one sentence


@dataclass(slots=True)
class Sentence:
    """One sentence: its words and one tag per word. `line` is the 1-based line of its first token line;
    `sent_id` and `text` come from the `# sent_id = ...` and `# text = ...` comments when present."""

    tokens: list[str]
    tags: list[str]
    line: int
    sent_id: str | None = None
    text: str | None = None


def _blocks(path: str | os.PathLike, encoding: str) -> Iterator[Block]:
    """The file's lines grouped into sentences: runs of non-blank lines. Extra blank lines are ignored."""
    block: Block = []
    for number, text, problem in read_lines(path, encoding):
        if problem is None and not text.strip():
            if block:
                yield block
                block = []
        else:
            block.append((number, text, problem))
    if block:
        yield block


def _parse_conllu(block: Block, path: str | os.PathLike, column: str) -> Sentence:
    """One CoNLL-U sentence from its lines; raises DataError at the first line that breaks the format."""
    index = TAG_COLUMNS[column]
    tokens: list[str] = []
    tags: list[str] = []
    sent_id = text = None
    first_token_line = None
    range_end, range_line = 0, 0  # the last word a multiword range must cover, and the range's line
    for number, line, problem in block:
        if problem is not None:
            raise DataError(problem, path, number)
        if line.startswith("#"):
            if first_token_line is not None:
                raise DataError("comment line inside a sentence (comments must come before its first token "
                                "line; is a blank line missing?)", path, number)
            if meta := _METADATA.fullmatch(line):
                if meta.group(1) == "sent_id":
                    sent_id = meta.group(2).strip()
                else:
                    text = meta.group(2).strip()
            continue
        first_token_line = first_token_line or number
        fields = line.split("\t")
        if len(fields) != 10:
            raise DataError(f"expected 10 TAB-separated fields ({' '.join(FIELDS)}), found {len(fields)}",
                            path, number)
        for name, value in zip(FIELDS, fields, strict=True):
            if not value:
                raise DataError(f"empty {name} field (write '_' for an unspecified value)", path, number)
        word_id = fields[0]
        if _WORD_ID.fullmatch(word_id):
            if int(word_id) != len(tokens) + 1:
                raise DataError(f"word ID {word_id} out of sequence: expected {len(tokens) + 1} (IDs must "
                                "run 1, 2, ..., n; a blank line ends a sentence)", path, number)
            tag = fields[index]
            if any(c.isspace() for c in tag):
                raise DataError(f"{column.upper()} {tag!r} contains whitespace", path, number)
            if tag == "_" and column == "upos":
                raise DataError("UPOS is '_': this word has no tag", path, number)
            tokens.append(fields[1])
            tags.append(tag)
        elif match := _RANGE_ID.fullmatch(word_id):
            start, end = int(match.group(1)), int(match.group(2))
            if start != len(tokens) + 1 or end <= start or start <= range_end:
                raise DataError(f"multiword token range {word_id} must start at the next word ID "
                                f"({len(tokens) + 1}), span two or more words and not overlap another range",
                                path, number)
            range_end, range_line = end, number
        elif match := _EMPTY_ID.fullmatch(word_id):
            if int(match.group(1)) != len(tokens):
                raise DataError(f"empty node {word_id} out of place: it must follow word {match.group(1)} "
                                f"(the last word so far is {len(tokens)})", path, number)
        else:
            raise DataError(f"bad ID {word_id!r}: expected a word index (1), a multiword range (1-2) or an "
                            "empty node (1.1)", path, number)
    if first_token_line is None:
        raise DataError("comment lines without a sentence after them", path, block[0][0])
    if not tokens:
        raise DataError("sentence without words (only empty nodes)", path, first_token_line)
    if range_end > len(tokens):
        raise DataError(f"multiword token range ends at word {range_end} but the sentence has {len(tokens)} "
                        "words", path, range_line)
    if column == "xpos" and all(tag == "_" for tag in tags):
        raise DataError("no XPOS tags in this sentence (every XPOS is '_'): the file may have none at all; "
                        "try column=upos", path, first_token_line)
    return Sentence(tokens, tags, first_token_line, sent_id, text)


def _parse_tagged(block: Block, path: str | os.PathLike) -> Sentence:
    """One sentence of a two-column `token<TAB>tag` file."""
    tokens: list[str] = []
    tags: list[str] = []
    for number, line, problem in block:
        if problem is not None:
            raise DataError(problem, path, number)
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"expected 2 TAB-separated fields (token, tag), found {len(fields)}",
                            path, number)
        token, tag = fields
        if not token.strip():
            raise DataError("empty token", path, number)
        if not tag.strip():
            raise DataError("empty tag", path, number)
        tokens.append(token)
        tags.append(tag.strip())
    return Sentence(tokens, tags, block[0][0])


def _read(path: str | os.PathLike, encoding: str, parse: Callable[[Block], Sentence], skip_bad_rows: bool,
          stats: ReadStats | None) -> Iterator[Sentence]:
    """Parse each block lazily; a bad sentence raises, or with `skip_bad_rows` is skipped and counted."""

    def sentences() -> Iterator[Sentence | DataError]:
        for block in _blocks(path, encoding):
            try:
                yield parse(block)
            except DataError as e:
                yield e

    return checked(sentences(), path, skip_bad_rows, stats, what="sentences in this file")


def read_conllu(path: str | os.PathLike, column: str = "upos", encoding: str = "utf-8",
                skip_bad_rows: bool = False, stats: ReadStats | None = None) -> Iterator[Sentence]:
    """Yield the sentences of a CoNLL-U file lazily, tagged with `column` ("upos" or "xpos").

    A malformed line raises `DataError(message, path, line)`; with `skip_bad_rows` its whole sentence is
    skipped instead and counted in `stats` (`rows` read, `skipped`, the `first_errors`). A UPOS of `_` is an
    error. Under `xpos`, a `_` beside real XPOS tags is kept as a tag (LinES leaves a fifth of its XPOS
    unspecified), but a sentence whose XPOS are all `_` is an error. A file without sentences is an error.
    """
    if column not in TAG_COLUMNS:
        raise ConfigError(f"unknown CoNLL-U tag column {column!r}: choose one of {', '.join(TAG_COLUMNS)}")
    return _read(path, encoding, lambda block: _parse_conllu(block, path, column), skip_bad_rows, stats)


def read_tagged(path: str | os.PathLike, encoding: str = "utf-8", skip_bad_rows: bool = False,
                stats: ReadStats | None = None) -> Iterator[Sentence]:
    """Yield the sentences of a two-column file lazily: one `token<TAB>tag` line per word, a blank line
    between sentences. Errors and `skip_bad_rows` / `stats` behave as in `read_conllu`."""
    return _read(path, encoding, lambda block: _parse_tagged(block, path), skip_bad_rows, stats)
