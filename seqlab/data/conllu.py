"""Tagged sentences for the `tag` task: CoNLL-U (Universal Dependencies) and two-column `token<TAB>tag` files.

CoNLL-U, as universaldependencies.org/format.html defines it and the UD validator checks at level 1: a
sentence is a run of lines ended by one empty line (the last sentence too; no other empty lines, no lines of
only whitespace); comment lines start with `#` and come before the sentence's first token line; a token
line has 10 TAB-separated fields, `ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC`, none empty and none
with leading or trailing whitespace, in Unicode NFC; an empty file holds no sentence and is valid.
ID is a word index (1, 2, ...), a multiword token range (`1-2`: the surface form "don't" over the words "do"
and "n't") or an empty node (`8.1`: an elided word of the enhanced graph). The tagger sees the syntactic
words only: ranges and empty nodes never enter a `Sentence`. FORM may contain spaces; no field may be empty
(`_` marks an unspecified value).
"""

from __future__ import annotations

import os
import re
import unicodedata
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
MISSING_END = "the file ends without the empty line after its last sentence (add one)"


@dataclass(slots=True)
class Sentence:
    """One sentence: its words and one tag per word. `line` is the 1-based line of its first token line;
    `sent_id` and `text` come from the `# sent_id = ...` and `# text = ...` comments when present."""

    tokens: list[str]
    tags: list[str]
    line: int
    sent_id: str | None = None
    text: str | None = None


def _blocks(path: str | os.PathLike, encoding: str, strict: bool = False) -> Iterator[Block]:
    """The file's lines grouped into sentences: runs of non-blank lines. `strict` (CoNLL-U): a line of only
    whitespace, an empty line that ends no sentence and a last sentence without its empty line are bad
    (a block whose line carries the problem); otherwise extra blank lines are ignored."""
    block: Block = []
    number = 0
    for number, text, problem in read_lines(path, encoding):
        if problem is None and not text.strip():
            if strict and text:
                block.append((number, text, "a line of only whitespace (an empty line must be empty)"))
            elif block:
                yield block
                block = []
            elif strict:
                yield [(number, text, "an empty line that ends no sentence (one empty line after each sentence)")]
        else:
            block.append((number, text, problem))
    if block:
        if strict:
            block.append((number + 1, "", MISSING_END))
        yield block


def _parse_conllu(block: Block, path: str | os.PathLike, column: str) -> Sentence:
    """One CoNLL-U sentence from its lines; raises DataError at the first line that breaks the format."""
    index = TAG_COLUMNS[column]
    tokens: list[str] = []
    tags: list[str] = []
    sent_id = text = None
    first_token_line = None
    range_end, range_line = 0, 0  # the last word a multiword range must cover, and the range's line
    empty_after: dict[int, int] = {}  # word -> the last empty node after it (8.1, 8.2, ...)
    missing_end = None  # the last sentence of a file without its empty line: told once the rest is checked
    for number, line, problem in block:
        if problem == MISSING_END:
            missing_end = number
            continue
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
            if value != value.strip():
                raise DataError(f"{name} field {value!r} has leading or trailing whitespace", path, number)
        if not unicodedata.is_normalized("NFC", line):
            raise DataError("the line is not in Unicode NFC (normalise the file, e.g. unicodedata.normalize)",
                            path, number)
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
            if int(match.group(2)) != empty_after.get(len(tokens), 0) + 1:
                raise DataError(f"empty node {word_id} out of sequence: expected {len(tokens)}."
                                f"{empty_after.get(len(tokens), 0) + 1}", path, number)
            empty_after[len(tokens)] = int(match.group(2))
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
    if missing_end is not None:
        raise DataError(MISSING_END, path, missing_end)
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
          stats: ReadStats | None, strict: bool = False) -> Iterator[Sentence]:
    """Parse each block lazily; a bad sentence raises, or with `skip_bad_rows` is skipped and counted.
    `strict`: CoNLL-U's empty-line rules, and an empty file is valid (see `_blocks`)."""

    def sentences() -> Iterator[Sentence | DataError]:
        for block in _blocks(path, encoding, strict):
            try:
                yield parse(block)
            except DataError as e:
                yield e

    return checked(sentences(), path, skip_bad_rows, stats, what="sentences in this file", allow_empty=strict)


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
    return _read(path, encoding, lambda block: _parse_conllu(block, path, column), skip_bad_rows, stats, strict=True)


def read_tagged(path: str | os.PathLike, encoding: str = "utf-8", skip_bad_rows: bool = False,
                stats: ReadStats | None = None) -> Iterator[Sentence]:
    """Yield the sentences of a two-column file lazily: one `token<TAB>tag` line per word, a blank line
    between sentences. Errors and `skip_bad_rows` / `stats` behave as in `read_conllu`."""
    return _read(path, encoding, lambda block: _parse_tagged(block, path), skip_bad_rows, stats)
