"""File plumbing shared by every reader and by the run directory: opening text (plain or gzipped),
iterating lines with exact line numbers and bounded memory, hashing, and atomic writes."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from seqlab.errors import ConfigError, DataError, SeqlabError

DEFAULT_MAX_LINE_CHARS = 1_000_000

# Bytes that do not decode come back as lone surrogates U+DC80..U+DCFF under errors="surrogateescape".
_UNDECODABLE = re.compile("[\udc80-\udcff]")

# The process umask, read once, so atomic writes create files with the usual permissions (mkstemp uses 0600).
_UMASK = os.umask(0)
os.umask(_UMASK)


def _codec(encoding: str) -> str:
    """The codec to decode with: UTF-8 becomes utf-8-sig so a byte-order mark at file start is dropped."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"unknown text encoding {encoding!r} (e.g. utf-8, latin-1)") from None
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name


def open_text(path: str | os.PathLike, encoding: str = "utf-8", errors: str = "strict") -> TextIO:
    """Open `path` for reading text. A `.gz` file is decompressed on the fly; newlines are universal
    (LF, CRLF and CR all end a line and read as "\\n"); a UTF-8 byte-order mark at file start is dropped.
    A missing file, a directory or a permission problem raises `DataError(path)`."""
    codec = _codec(encoding)
    try:
        if str(path).endswith(".gz"):
            return gzip.open(path, "rt", encoding=codec, errors=errors, newline=None)
        return open(path, encoding=codec, errors=errors, newline=None)
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except IsADirectoryError:
        raise DataError("is a directory, not a file", path) from None
    except PermissionError:
        raise DataError("permission denied", path) from None
    except OSError as e:
        raise DataError(f"cannot open: {e.strerror or e}", path) from None


def read_lines(
    path: str | os.PathLike, encoding: str = "utf-8", max_line_chars: int = DEFAULT_MAX_LINE_CHARS
) -> Iterator[tuple[int, str, str | None]]:
    """Yield `(line_number, text, problem)` for every line of `path`, 1-based, without the newline.

    `problem` is None for a good line, else a message: bytes that are not valid `encoding`, a NUL byte, or
    a line longer than `max_line_chars` (its text is then cut at the limit and the rest of the line is
    consumed in bounded chunks, so a huge line never sits in memory). Readers decide whether a problem
    is fatal or a skipped row. An unreadable (e.g. corrupt gzip) file raises `DataError(path, line)`."""
    number = 0
    with open_text(path, encoding, errors="surrogateescape") as f:
        try:
            while True:
                text = f.readline(max_line_chars + 1)
                if not text:
                    return
                number += 1
                problem = None
                if text.endswith("\n"):
                    text = text[:-1]
                elif len(text) > max_line_chars:
                    text = text[:max_line_chars]
                    problem = f"line longer than {max_line_chars} characters (max_line_chars)"
                    while (rest := f.readline(max_line_chars)) and not rest.endswith("\n"):
                        pass
                if problem is None:
                    if _UNDECODABLE.search(text):
                        problem = f"not valid {encoding} text (try data.encoding=latin-1)"
                    elif "\x00" in text:
                        problem = "NUL byte in line (binary file?)"
                yield number, text, problem
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"cannot read: {e}", path, number + 1) from None


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the bytes of `path` (read in chunks)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                h.update(chunk)
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror or e}", path) from None
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees either the old file or the whole new one, never a part:
    write a temp file in the same directory, fsync it, `os.replace` it over `path`, fsync the directory."""
    path = Path(path)
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise SeqlabError(f"cannot write: {e.strerror or e}", path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise SeqlabError(f"cannot write: {e.strerror or e}", path) from None
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """`atomic_write_bytes` for text (newlines written as given)."""
    atomic_write_bytes(path, text.encode(encoding))
