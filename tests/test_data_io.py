"""seqlab.data.io: opening text, line iteration with problems, hashing, atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import os
import tracemalloc

import pytest

from seqlab.data.io import atomic_write_bytes, atomic_write_text, open_text, read_lines, sha256_file
from seqlab.errors import ConfigError, DataError, SeqlabError


def test_open_text_plain_gz_bom_and_newlines(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\nfour")
    with open_text(plain) as f:
        assert f.read() == "one\ntwo\nthree\nfour"
    packed = tmp_path / "a.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with open_text(packed) as f:
        assert f.read() == "one\ntwo\nthree\nfour"
    latin = tmp_path / "l.txt"
    latin.write_bytes(b"caf\xe9\n")
    with open_text(latin, "latin-1") as f:
        assert f.read() == "café\n"


def test_open_text_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="file not found") as err:
        open_text(tmp_path / "missing.txt")
    assert str(err.value).startswith(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="directory"):
        open_text(tmp_path)
    with pytest.raises(ConfigError, match="unknown text encoding"):
        open_text(tmp_path / "x", encoding="no-such-codec")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_open_text_permission_denied(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("x")
    path.chmod(0)
    with pytest.raises(DataError, match="permission denied"):
        open_text(path)


def test_read_lines_reports_problems_per_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfgood\r\nbad \xff byte\nnul\x00here\n\nlast")
    rows = list(read_lines(path))
    assert [n for n, _, _ in rows] == [1, 2, 3, 4, 5]
    assert [problem is None for _, _, problem in rows] == [True, False, False, True, True]
    assert rows[0][1] == "good" and rows[3][1] == "" and rows[4][1] == "last"
    assert "not valid utf-8 text (try data.encoding=latin-1)" in rows[1][2]
    assert "NUL" in rows[2][2]


def test_read_lines_cuts_a_huge_line_without_holding_it(tmp_path):
    path = tmp_path / "big.txt"
    with open(path, "wb") as f:
        f.write(b"first\n" + b"x" * 10_000_000 + b"\nafter\n")
    tracemalloc.start()
    rows = [(n, len(text), problem) for n, text, problem in read_lines(path, max_line_chars=1000)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rows[0] == (1, 5, None) and rows[2] == (3, 5, None)
    assert rows[1][0] == 2 and rows[1][1] == 1000 and "longer than 1000" in rows[1][2]
    assert peak < 2_000_000, f"peak {peak} bytes: the 10 MB line was held in memory"


def test_read_lines_corrupt_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        list(read_lines(path))
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(gzip.compress(b"line\n" * 1000)[:-20])
    with pytest.raises(DataError, match="cannot read"):
        list(read_lines(truncated))


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
    with pytest.raises(DataError, match="not found"):
        sha256_file(tmp_path / "missing")


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "néw\n")
    assert path.read_text(encoding="utf-8") == "néw\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(SeqlabError, match="No space left"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_into_missing_directory_is_a_seqlab_error(tmp_path):
    with pytest.raises(SeqlabError, match="cannot write"):
        atomic_write_text(tmp_path / "no" / "such" / "dir.txt", "x")
