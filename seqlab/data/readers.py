"""Readers for labelled text: CSV/TSV, JSON lines, fastText, label<TAB>text and TREC.

`read(path, format)` yields `TextExample`s lazily, one line (or CSV record) at a time. Every format
parser turns lines into examples or `_Bad` rows; `read` alone decides whether a bad row raises
`DataError(path:line)` or is skipped and counted (`skip_bad_rows=True`, `stats=ReadStats()`)."""

from __future__ import annotations

import csv
import inspect
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import NamedTuple, TypeVar

from seqlab.data.io import DEFAULT_MAX_LINE_CHARS, read_lines
from seqlab.errors import ConfigError, DataError

Lines = Iterator[tuple[int, str, str | None]]
T = TypeVar("T")


@dataclass(slots=True)
class TextExample:
    """One labelled text. `line` is the 1-based source line (the first line of a multi-line CSV record)."""

    text: str
    labels: tuple[str, ...]
    line: int

    @property
    def label(self) -> str:
        """The first (for single-label data: the only) label."""
        return self.labels[0]


@dataclass
class ReadStats:
    """Counts filled in by `read(..., stats=...)`: examples yielded, bad rows skipped, and the first few
    skipped rows' messages (`path:line: why`)."""

    rows: int = 0
    skipped: int = 0
    first_errors: list[str] = field(default_factory=list)

    def record(self, error: DataError) -> None:
        self.skipped += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(str(error))


class _Bad(NamedTuple):
    """A row a parser rejects: where, and why."""

    line: int
    message: str


_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMERIC = re.compile(r"[+-]?\d+(\.\d+)?")
_HEADER_WORDS = {"label", "labels", "class", "category", "target", "sentiment", "polarity", "y"}


def _label(value: str) -> str | None:
    """A stripped label, or None when it is empty."""
    value = value.strip()
    return value or None


# ---------------------------------------------------------------------------------------------------------
# CSV / TSV


def _csv_rows(
    lines: Lines, delimiter: str, quoting: int, max_line_chars: int
) -> Iterator[tuple[int, list[str] | _Bad]]:
    """Yield `(first_line, fields)` per record, or `(first_line, _Bad)`. Blank lines are skipped."""
    if quoting == csv.QUOTE_NONE:
        # Without quotes a record is one line and splitting on the delimiter is exactly what csv would do.
        for number, text, problem in lines:
            if problem:
                yield number, _Bad(number, problem)
            elif text.strip():
                yield number, text.split(delimiter)
        return

    # Quoted CSV: a record may span lines. The feeder hands csv one line at a time and notes line problems
    # (replacing such a line by an empty one); a record touching a noted line is bad.
    problems: dict[int, str] = {}

    def feed() -> Iterator[str]:
        for number, text, problem in lines:
            if problem:
                problems[number] = problem
                yield "\n"
            else:
                yield text + "\n"

    # csv's own bound on a field (default 128 KiB) must not be tighter than ours on a line. Raising the
    # process-wide limit only ever allows more, so it cannot break another csv user.
    if csv.field_size_limit() < max_line_chars:
        csv.field_size_limit(max_line_chars)
    reader = csv.reader(feed(), delimiter=delimiter, quoting=quoting, strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            end = reader.line_num
            yield start, _Bad(start, f"malformed CSV record ({e}); an unbalanced quote?")
            continue
        end = reader.line_num
        bad = next((problems.pop(n) for n in range(start, end + 1) if n in problems), None)
        if bad is not None:
            yield start, _Bad(start, bad)
        elif any(cell.strip() for cell in row):
            yield start, row


def _column_index(column: int | str, names: list[str] | None, ncols: int, what: str, path, line: int) -> int:
    """Resolve a column given by index (negative counts from the end) or by header name."""
    if isinstance(column, str):
        if names is None:
            raise ConfigError(f"{what}={column!r} names a column, but the file has no header", path)
        if column not in names:
            raise ConfigError(f"{what}: no column named {column!r}; the header has {names}", path, line)
        return names.index(column)
    if isinstance(column, bool) or not isinstance(column, int) or not -ncols <= column < ncols:
        raise ConfigError(f"{what}={column!r} is not a column index of a {ncols}-column file", path, line)
    return column % ncols


def _looks_like_header(first: list[str], following: list[list[str]], label_column: int) -> bool:
    """Auto-detection (header=None) when the columns are given by index: the first row is a header when its
    label cell is not a label of the next rows and is either a usual header word ("label", "class", ...)
    or non-numeric while every following label is numeric."""
    if not -len(first) <= label_column < len(first):
        return False
    head = first[label_column].strip()
    labels = [row[label_column].strip() for row in following if len(row) == len(first)]
    if head in labels:
        return False
    if head.lower() in _HEADER_WORDS:
        return True
    return bool(labels) and not _NUMERIC.fullmatch(head) and all(_NUMERIC.fullmatch(x) for x in labels)


def _read_delimited(
    lines: Lines,
    path: str,
    max_line_chars: int,
    *,
    header: bool | None = None,
    label_column: int | str = 0,
    text_columns: list[int | str] | None = None,
    delimiter: str = ",",
    quoting: int | str = "minimal",
) -> Iterator[TextExample | _Bad]:
    """CSV-like files: one label column, the text is the other (or the given) columns joined by a space."""
    quote_modes = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}
    if isinstance(quoting, str):
        if quoting not in quote_modes:
            raise ConfigError(f"quoting={quoting!r}: expected one of {sorted(quote_modes)}", path)
        quoting = quote_modes[quoting]
    if quoting not in quote_modes.values():
        raise ConfigError(f"quoting={quoting!r}: expected csv.QUOTE_MINIMAL or csv.QUOTE_NONE", path)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ConfigError(f"delimiter={delimiter!r}: expected one character", path)

    rows = _csv_rows(lines, delimiter, quoting, max_line_chars)
    head = list(islice(rows, 21))
    good = [(n, r) for n, r in head if not isinstance(r, _Bad)]
    rows = chain(head, rows)
    if not good:
        yield from (r for _, r in rows)  # only bad rows (or none): report them
        return

    by_name = isinstance(label_column, str) or any(isinstance(c, str) for c in text_columns or [])
    if header is None:
        header = by_name or (
            isinstance(label_column, int)
            and _looks_like_header(good[0][1], [r for _, r in good[1:]], label_column)
        )
    names = None
    if header:
        if isinstance(head[0][1], _Bad):  # never take a later row for the header
            raise DataError(f"unreadable header: {head[0][1].message}", path, head[0][0])
        header_line, first = good[0]
        names = [cell.strip() for cell in first]
        rows = ((n, r) for n, r in rows if n != header_line)
    # The width of the file: the header's, else the most common among the first rows (so that one odd
    # first row is reported as a bad row rather than making every other row bad).
    ncols = len(names) if names else Counter(len(r) for _, r in good).most_common(1)[0][0]
    where = good[0][0]
    if ncols < 2:
        raise DataError(f"expected a label column and a text column, but the rows have {ncols} column "
                        f"(delimiter={delimiter!r})", path, where)
    label_index = _column_index(label_column, names, ncols, "label_column", path, where)
    if text_columns is None:
        text_indices = [i for i in range(ncols) if i != label_index]
    else:
        text_indices = [_column_index(c, names, ncols, "text_columns", path, where) for c in text_columns]
    if not text_indices or label_index in text_indices:
        raise ConfigError(f"text_columns {text_columns} must name columns other than the label column", path)

    for number, row in rows:
        if isinstance(row, _Bad):
            yield row
        elif len(row) != ncols:
            yield _Bad(number, f"expected {ncols} columns, got {len(row)}")
        elif (label := _label(row[label_index])) is None:
            yield _Bad(number, "empty label")
        elif not (text := " ".join(cell for i in text_indices if (cell := row[i].strip()))):
            yield _Bad(number, "empty text")
        else:
            yield TextExample(text, (label,), number)


# ---------------------------------------------------------------------------------------------------------
# Line formats


def _jsonl_labels(value) -> tuple[str, ...] | str:
    """Labels from a JSON value (a string, an integer, or a list of them), or an error message."""
    values = value if isinstance(value, list) else [value]
    labels = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return f"a label must be a string, an integer or a list of them, not {json.dumps(v)[:40]}"
        label = _label(str(v))
        if label is None:
            return "empty label"
        if _SURROGATE.search(label):
            return "label contains an unpaired surrogate (\\udxxx) escape"
        labels.append(label)
    return tuple(labels) if labels else "empty label list"


def _line_format(parse: Callable[..., TextExample | _Bad]) -> Callable[..., Iterator[TextExample | _Bad]]:
    """A reader of a format with one example per line, from `parse(number, line, **options)`: bad lines
    (undecodable, NUL, overlong) are `_Bad`, blank lines are skipped."""

    def reader(lines: Lines, path: str, max_line_chars: int, **options) -> Iterator[TextExample | _Bad]:
        for number, line, problem in lines:
            if problem:
                yield _Bad(number, problem)
            elif line.strip():
                yield parse(number, line, **options)

    reader.parse = parse  # whose keyword-only parameters are the format's options
    return reader


def _jsonl(number: int, line: str, *, text_key: str = "text", label_key: str | None = "label"
           ) -> TextExample | _Bad:
    """One JSON object per line (IMDB: `{"label": "pos", "text": ...}`); the text is kept as is. `label_key=None`:
    texts without labels (a language model's corpus, IMDB's unlabeled reviews), whatever else a line holds."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return _Bad(number, f"invalid JSON ({e.msg} at column {e.colno})")
    except RecursionError:
        return _Bad(number, "invalid JSON (nested too deeply)")
    if not isinstance(obj, dict):
        return _Bad(number, "expected a JSON object per line")
    if text_key not in obj:
        return _Bad(number, f"missing key {text_key!r} (text_key)")
    if label_key is not None and label_key not in obj:
        return _Bad(number, f"missing key {label_key!r} (label_key)")
    if not isinstance(text := obj[text_key], str):
        return _Bad(number, f"{text_key!r} must be a string")
    if not text.strip():
        return _Bad(number, "empty text")
    if _SURROGATE.search(text):
        return _Bad(number, "text contains an unpaired surrogate (\\udxxx) escape")
    if label_key is None:
        return TextExample(text, (), number)
    if isinstance(labels := _jsonl_labels(obj[label_key]), str):
        return _Bad(number, labels)
    return TextExample(text, labels, number)


def _fasttext(number: int, line: str, *, label_prefix: str = "__label__") -> TextExample | _Bad:
    """fastText's format: every whitespace-separated token starting with `label_prefix` is a label (as in
    fastText, wherever it stands); the other tokens, joined by single spaces, are the text."""
    if not label_prefix:
        raise ConfigError("label_prefix must not be empty")
    tokens = line.split()
    labels = tuple(t[len(label_prefix):] for t in tokens if t.startswith(label_prefix))
    words = [t for t in tokens if not t.startswith(label_prefix)]
    if not labels:
        return _Bad(number, f"no label (no token starts with {label_prefix!r})")
    if "" in labels:
        return _Bad(number, f"empty label (a bare {label_prefix!r})")
    if not words:
        return _Bad(number, "empty text")
    return TextExample(" ".join(words), labels, number)


def _labeltext(number: int, line: str) -> TextExample | _Bad:
    """`label<TAB>text`, one per line; the label may contain spaces."""
    label, tab, text = line.partition("\t")
    if not tab:
        return _Bad(number, "expected label<TAB>text (no tab)")
    if (label := _label(label)) is None:
        return _Bad(number, "empty label")
    if not (text := text.strip()):
        return _Bad(number, "empty text")
    return TextExample(text, (label,), number)


def _trec(number: int, line: str, *, fine: bool = False) -> TextExample | _Bad:
    """TREC question classification: `COARSE:fine question ...`; the label is `COARSE` (or `COARSE:fine`)."""
    head, _, text = line.strip().partition(" ")
    coarse, colon, detail = head.partition(":")
    if not (coarse and colon and detail):
        return _Bad(number, f"expected 'COARSE:fine question ...', got label {head[:40]!r}")
    if not (text := text.strip()):
        return _Bad(number, "empty text")
    return TextExample(text, (head if fine else coarse,), number)


_FORMATS: dict[str, Callable[..., Iterator[TextExample | _Bad]]] = {
    # csv: standard double quotes (AG_NEWS `"3","title","description"`); tsv: no quoting, since SST-2's
    # sentences contain bare quote characters.
    "csv": partial(_read_delimited, delimiter=",", quoting="minimal"),
    "tsv": partial(_read_delimited, delimiter="\t", quoting="none"),
    "jsonl": _line_format(_jsonl),
    "fasttext": _line_format(_fasttext),
    "labeltext": _line_format(_labeltext),
    "trec": _line_format(_trec),
}
def leak_key(text: str) -> str:
    """The key under which the leak guards compare texts (classify's splits, a language model's corpus and
    `task.exclude`): lowercased, whitespace collapsed."""
    return " ".join(text.lower().split())


TEXT_FORMATS = tuple(_FORMATS)  # what `read` takes (and conllu/tagged, which it hands to seqlab.data.conllu)


def _suffix(*endings: str) -> Callable[[str, Path, str, str], bool]:
    return lambda name, path, encoding, prefix: name.endswith(endings)


def _first_line(path: Path, encoding: str) -> str:
    return next((text for _, text, _ in read_lines(path, encoding) if text.strip()), "")


# How each format of every task is recognised from its path (a `.gz` ending ignored): the one format
# detection of seqlab. A task lists the formats it reads, most specific first; the first that claims the
# path wins. `tagged` and `text` claim anything: each is the last (or only) format of its task.
CLAIMS: dict[str, Callable[[str, Path, str, str], bool]] = {
    "csv": _suffix(".csv"),
    "tsv": _suffix(".tsv"),
    "jsonl": _suffix(".jsonl", ".ndjson"),
    "trec": _suffix(".label"),
    "fasttext": lambda name, path, encoding, prefix: name.endswith(".txt")
    and _first_line(path, encoding).lstrip().startswith(prefix),
    "labeltext": _suffix(".txt"),
    "conllu": _suffix(".conllu"),
    "flickr8k": _suffix(".token.txt"),
    "folder": lambda name, path, encoding, prefix: path.is_dir(),
    "idx": lambda name, path, encoding, prefix: "idx" in Path(name).name and not path.is_dir(),
    "tagged": lambda *_: True,
    "text": lambda *_: True,
    "parallel": lambda name, path, encoding, prefix: not path.is_file(),  # the prefix of PATH.<src>, PATH.<tgt>
}


def detect_format(path: str | os.PathLike, formats: Sequence[str] = TEXT_FORMATS, encoding: str = "utf-8",
                  label_prefix: str = "__label__") -> str:
    """The first of `formats` that claims `path` (see CLAIMS): by its ending, a `.txt` file being fasttext
    when its first non-empty line starts with `label_prefix` (else labeltext), a folder, an IDX file...
    ConfigError when none does."""
    name = os.fspath(path).lower().removesuffix(".gz")
    for fmt in formats:
        if CLAIMS[fmt](name, Path(path), encoding, label_prefix):
            return fmt
    raise ConfigError(f"cannot tell the format from the name {Path(path).name!r}; set data.format to one of "
                      f"{', '.join(formats)}", path)


def read(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    encoding: str = "utf-8",
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
    skip_bad_rows: bool = False,
    stats: ReadStats | None = None,
    **options,
) -> Iterator[TextExample]:
    """Yield the `TextExample`s of `path` lazily (the file is never held in memory).

    `format` is one of csv, tsv, jsonl, fasttext, labeltext, trec, or auto (see `detect_format`); conllu
    and tagged (`token<TAB>tag`) yield `seqlab.data.conllu.Sentence`s (`.tokens`, `.tags`) instead;
    `options` are the format's own (csv/tsv: header, label_column, text_columns, delimiter, quoting;
    jsonl: text_key, label_key; fasttext: label_prefix; trec: fine). A bad row raises
    `DataError(path:line)`, or with `skip_bad_rows=True` is skipped and counted in `stats`. Empty lines are
    skipped. A file without any example raises `DataError("no examples")`. Unknown formats or options
    raise `ConfigError` at once; file errors surface on iteration."""
    if format == "auto":
        format = detect_format(path, (*TEXT_FORMATS, "conllu"), encoding, options.get("label_prefix", "__label__"))
    if format in ("conllu", "tagged"):  # sentences of tagged tokens (seqlab.data.conllu imports this module)
        from seqlab.data import conllu

        reader = conllu.read_conllu if format == "conllu" else conllu.read_tagged
        return reader(path, encoding=encoding, skip_bad_rows=skip_bad_rows, stats=stats, **options)
    if format not in _FORMATS:
        raise ConfigError(f"unknown data format {format!r}; choices: {sorted(_FORMATS)}")
    parser = _FORMATS[format]
    accepted = [p.name for p in inspect.signature(getattr(parser, "parse", parser)).parameters.values()
                if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for format {format!r}; it takes {accepted or 'none'}")
    if not isinstance(max_line_chars, int) or max_line_chars < 1:
        raise ConfigError(f"max_line_chars must be a positive integer, got {max_line_chars!r}")
    items = parser(read_lines(path, encoding, max_line_chars), os.fspath(path), max_line_chars, **options)
    return checked(items, path, skip_bad_rows, stats)


def checked(items: Iterable[T | _Bad | DataError], path: str | os.PathLike, skip_bad_rows: bool = False,
            stats: ReadStats | None = None, what: str = "examples", allow_empty: bool = False) -> Iterator[T]:
    """The one bad-row mechanism of every reader: a parser yields its items, or for a bad row a DataError
    (or `_Bad(line, message)` of this file); here a bad row raises, or with `skip_bad_rows` is skipped and
    counted in `stats`. A file that gave nothing good raises `DataError(f"no {what}")` (unless it had nothing
    at all and `allow_empty`)."""
    stats = ReadStats() if stats is None else stats
    found = skipped = 0
    for item in items:
        if isinstance(item, (_Bad, DataError)):
            error = DataError(item.message, path, item.line) if isinstance(item, _Bad) else item
            if not skip_bad_rows:
                raise error
            skipped += 1
            stats.record(error)
            continue
        found += 1
        stats.rows += 1
        yield item
    if found == 0 and (skipped or not allow_empty):
        why = f" ({skipped} bad rows skipped; first: {stats.first_errors[0]})" if skipped else ""
        raise DataError(f"no {what}{why}", path)
