"""Fuzz every reader with random bytes: it yields TextExamples or raises DataError, nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlab.data import ReadStats, TextExample, read
from seqlab.errors import DataError

FORMATS = {"csv": "f.csv", "tsv": "f.tsv", "jsonl": "f.jsonl", "fasttext": "f.txt", "labeltext": "f.txt",
           "trec": "f.label"}

# Random bytes, biased towards the characters the formats care about, so the parsers get past line one.
_PIECES = [b'"', b",", b"\t", b"\n", b"\r", b"\r\n", b" ", b"__label__", b"ABBR:x", b"{", b"}", b'"text"',
           b'"label"', b":", b"[", b"]", b"\x00", b"\xff", b"\xef\xbb\xbf", b"\xc3\xa9", b"a", b"1", b"\\"]
CONTENT = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(_PIECES) | st.binary(max_size=4), max_size=60).map(b"".join),
)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT, skip=st.booleans(), gz=st.booleans())
def test_random_bytes_give_examples_or_data_error(fmt, content, skip, gz):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (FORMATS[fmt] + (".gz" if gz else ""))
        path.write_bytes(content)  # as ".gz" these are (mostly) not gzip at all: a DataError too
        stats = ReadStats()
        try:
            for example in read(path, fmt, skip_bad_rows=skip, stats=stats, max_line_chars=100):
                assert isinstance(example, TextExample)
                assert example.text.strip() and example.labels and all(example.labels)
                assert example.line >= 1
        except DataError as e:
            assert str(e).startswith(str(path))
        assert stats.skipped == 0 or skip
