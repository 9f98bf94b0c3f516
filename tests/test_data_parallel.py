"""Parallel corpora: two aligned files or one src<TAB>tgt file; every bad input names file:line."""

from __future__ import annotations

import gzip

import pytest

from seqlab.data.parallel import Pair, read_parallel, read_parallel_tsv
from seqlab.data.readers import ReadStats
from seqlab.errors import DataError

DE = "Zwei junge Männer sind im Freien.\n Ein kleines Mädchen klettert.  \nEin Hund.\n"
EN = "Two young men are outside.\nA little girl climbing.\nA dog.\n"


def write(path, text: str, encoding: str = "utf-8"):
    data = text.encode(encoding)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def test_read_parallel_good(tmp_path):
    src, tgt = write(tmp_path / "train.de", DE), write(tmp_path / "train.en", EN)
    pairs = list(read_parallel(src, tgt))
    assert pairs[1] == Pair("Ein kleines Mädchen klettert.", "A little girl climbing.", 2)  # stripped
    assert [p.line for p in pairs] == [1, 2, 3]
    s, t, line = pairs[0]
    assert (s, t, line) == ("Zwei junge Männer sind im Freien.", "Two young men are outside.", 1)


def test_read_parallel_gz_crlf_bom(tmp_path):
    src = write(tmp_path / "train.de.gz", "\ufeff" + DE.replace("\n", "\r\n"))
    tgt = write(tmp_path / "train.en.gz", EN)
    plain = list(read_parallel(write(tmp_path / "de", DE), write(tmp_path / "en", EN)))
    assert list(read_parallel(src, tgt)) == plain


@pytest.mark.parametrize("longer", ["src", "tgt"])
def test_read_parallel_length_mismatch_names_both_files(tmp_path, longer):
    src = write(tmp_path / "a.de", DE + ("Noch einer.\n" if longer == "src" else ""))
    tgt = write(tmp_path / "a.en", EN + ("One more.\n" if longer == "tgt" else ""))
    short, long = (tgt, src) if longer == "src" else (src, tgt)
    for skip in (False, True):  # a misalignment is never a skippable row
        with pytest.raises(DataError) as e:
            list(read_parallel(src, tgt, skip_bad_rows=skip))
        assert str(e.value).startswith(f"{short}:4: ended after 3 lines but {long} goes on")


@pytest.mark.parametrize("side", ["src", "tgt"])
def test_read_parallel_empty_sentence_names_its_file_and_line(tmp_path, side):
    src = write(
        tmp_path / "b.de", DE.replace(" Ein kleines Mädchen klettert.  ", "   ") if side == "src" else DE
    )
    tgt = write(tmp_path / "b.en", EN.replace("A little girl climbing.", "") if side == "tgt" else EN)
    bad = src if side == "src" else tgt
    with pytest.raises(DataError) as e:
        list(read_parallel(src, tgt))
    assert str(e.value) == f"{bad}:2: empty {'source' if side == 'src' else 'target'} sentence"


def test_read_parallel_wrong_encoding(tmp_path):
    src = write(tmp_path / "c.de", DE, encoding="latin-1")
    tgt = write(tmp_path / "c.en", EN)
    with pytest.raises(DataError) as e:
        list(read_parallel(src, tgt))
    assert str(e.value).startswith(f"{src}:1: not valid utf-8")
    tgt_latin = write(tmp_path / "d.en", EN, encoding="latin-1")
    assert (
        list(read_parallel(src, tgt_latin, encoding="latin-1"))[0].src == "Zwei junge Männer sind im Freien."
    )


def test_read_parallel_skip_bad_rows_counts(tmp_path):
    src = write(tmp_path / "e.de", "eins\n\ndrei\nvier\n")
    tgt = write(tmp_path / "e.en", "one\ntwo\n \nfour\n")
    stats = ReadStats()
    pairs = list(read_parallel(src, tgt, skip_bad_rows=True, stats=stats))
    assert [(p.src, p.tgt, p.line) for p in pairs] == [("eins", "one", 1), ("vier", "four", 4)]
    assert (stats.rows, stats.skipped) == (2, 2)
    assert stats.first_errors == [f"{src}:2: empty source sentence", f"{tgt}:3: empty target sentence"]


def test_read_parallel_nothing_to_read(tmp_path):
    src, tgt = write(tmp_path / "f.de", ""), write(tmp_path / "f.en", "")
    with pytest.raises(DataError, match="no sentence pairs"):
        list(read_parallel(src, tgt))
    src, tgt = write(tmp_path / "g.de", "\n"), write(tmp_path / "g.en", "x\n")
    with pytest.raises(DataError, match=r"no sentence pairs \(1 bad rows skipped"):
        list(read_parallel(src, tgt, skip_bad_rows=True))


def test_read_parallel_missing_file(tmp_path):
    tgt = write(tmp_path / "h.en", EN)
    with pytest.raises(DataError) as e:
        list(read_parallel(tmp_path / "absent.de", tgt))
    assert str(e.value) == f"{tmp_path / 'absent.de'}: file not found"


def test_read_parallel_tsv_good_gz_and_blank_lines(tmp_path):
    text = "Go.\tVa !\n\nHi.\t Salut ! \n"
    pairs = list(read_parallel_tsv(write(tmp_path / "fra.txt", text)))
    assert pairs == [Pair("Go.", "Va !", 1), Pair("Hi.", "Salut !", 3)]
    assert list(read_parallel_tsv(write(tmp_path / "fra.txt.gz", text))) == pairs


@pytest.mark.parametrize(
    "line, message",
    [
        ("no tab here", "expected 2 tab-separated fields (source<TAB>target), found 1"),
        ("a\tb\tc", "expected 2 tab-separated fields (source<TAB>target), found 3"),
        ("  \tVa !", "empty source sentence"),
        ("Go.\t", "empty target sentence"),
        ("a\x00b\tc", "NUL byte"),
    ],
)
def test_read_parallel_tsv_bad_rows(tmp_path, line, message):
    path = write(tmp_path / "bad.tsv", f"Go.\tVa !\n{line}\nHi.\tSalut !\n")
    with pytest.raises(DataError) as e:
        list(read_parallel_tsv(path))
    assert str(e.value).startswith(f"{path}:2: {message}")
    stats = ReadStats()
    assert [p.line for p in read_parallel_tsv(path, skip_bad_rows=True, stats=stats)] == [1, 3]
    assert (stats.rows, stats.skipped) == (2, 1)


def test_read_parallel_tsv_wrong_encoding(tmp_path):
    path = write(tmp_path / "enc.tsv", "Go.\tVa !\nCafé.\tCafé !\n", encoding="latin-1")
    with pytest.raises(DataError) as e:
        list(read_parallel_tsv(path))
    assert str(e.value).startswith(f"{path}:2: not valid utf-8")
    assert list(read_parallel_tsv(path, encoding="latin-1"))[1] == Pair("Café.", "Café !", 2)


def test_multi30k_counts(shared_data):
    """SOURCE.md: 29,000 / 1,014 / 1,000 pairs, raw and tok aligned; tok train: 360,706 de / 377,534 en."""
    root = shared_data / "multi30k"
    for split, count in (("train", 29_000), ("val", 1_014), ("test_2016_flickr", 1_000)):
        raw = list(read_parallel(root / f"raw/{split}.de.gz", root / f"raw/{split}.en.gz"))
        tok = list(read_parallel(root / f"tok/{split}.lc.norm.tok.de", root / f"tok/{split}.lc.norm.tok.en"))
        assert len(raw) == len(tok) == count
        if split == "train":
            assert sum(len(p.src.split()) for p in tok) == 360_706
            assert sum(len(p.tgt.split()) for p in tok) == 377_534
    assert raw[0].tgt == "A man in an orange hat starring at something."
    assert tok[0].tgt == "a man in an orange hat starring at something ."
