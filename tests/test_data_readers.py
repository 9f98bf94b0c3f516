"""Readers: good input for every format, the bad-input catalogue, skip_bad_rows, and the real datasets."""

from __future__ import annotations

import collections
import gzip
import json
from pathlib import Path

import pytest

from seqlab.data import ReadStats, TextExample, read
from seqlab.data.readers import detect_format
from seqlab.errors import ConfigError, DataError


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def examples(path, format="auto", **options) -> list[tuple[str, tuple[str, ...], int]]:
    return [(e.text, e.labels, e.line) for e in read(path, format, **options)]


def error_of(path, format="auto", **options) -> DataError:
    with pytest.raises(DataError) as err:
        list(read(path, format, **options))
    return err.value


# --- good input -------------------------------------------------------------------------------------------


def test_text_example():
    ex = TextExample("hi", ("a", "b"), 3)
    assert ex.label == "a" and ex.labels == ("a", "b") and ex.line == 3
    with pytest.raises(AttributeError):
        ex.other = 1  # slots


def test_csv_ag_news_style_with_defaults(tmp_path):
    path = write(tmp_path / "test.csv",
                 '"3","Fears for pension","Unions say they are \'disappointed\'"\n'
                 '"4","A ""quoted"" title","multi\nline description"\n'
                 '"1"," padded ",""\n')
    assert examples(path) == [
        ("Fears for pension Unions say they are 'disappointed'", ("3",), 1),
        ('A "quoted" title multi\nline description', ("4",), 2),
        ("padded", ("1",), 4),  # a record spanning lines 2-3 puts the next one on line 4; fields stripped
    ]


def test_csv_header_auto_detection_and_columns_by_name(tmp_path):
    path = write(tmp_path / "a.csv", "label,title,body\npos,good,fun\nneg,bad,dull\n")
    assert examples(path) == [("good fun", ("pos",), 2), ("bad dull", ("neg",), 3)]  # "label": a header word
    assert examples(path, header=False)[0] == ("title body", ("label",), 1)
    named = write(tmp_path / "b.csv", "text,stars,junk\nnice,5,x\nmeh,2,y\n")
    by_name = examples(named, label_column="stars", text_columns=["text"])
    assert by_name == [("nice", ("5",), 2), ("meh", ("2",), 3)]
    numeric = write(tmp_path / "c.csv", "stars,text\n5,nice\n2,meh\n")  # non-numeric head over numeric labels
    assert examples(numeric) == [("nice", ("5",), 2), ("meh", ("2",), 3)]
    assert examples(numeric, label_column=-2, text_columns=[1])[0] == ("nice", ("5",), 2)
    plain = write(tmp_path / "d.csv", "pos,good\nneg,bad\n")
    assert examples(plain) == [("good", ("pos",), 1), ("bad", ("neg",), 2)]


def test_tsv_sst2_style_header_and_bare_quotes(tmp_path):
    path = write(tmp_path / "train.tsv", 'sentence\tlabel\nit \'s a "gem" \t1\n" unbalanced quote\t0\n')
    assert examples(path, header=True, label_column="label") == [
        ('it \'s a "gem"', ("1",), 2), ('" unbalanced quote', ("0",), 3)]
    assert examples(path, label_column="label") == examples(path, header=True, label_column="label")


def test_jsonl_labels_string_int_list_and_gz(tmp_path):
    rows = [{"text": "a", "label": "pos"}, {"text": "b", "label": 3}, {"text": "c", "label": ["x", "ü y"]},
            {"text": "  kept as is ", "label": " z "}]
    content = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    expected = [("a", ("pos",), 1), ("b", ("3",), 2), ("c", ("x", "ü y"), 3), ("  kept as is ", ("z",), 4)]
    assert examples(write(tmp_path / "a.jsonl", content)) == expected
    assert examples(write(tmp_path / "a.jsonl.gz", gzip.compress(content.encode()))) == expected
    custom = write(tmp_path / "c.jsonl", '{"review": "ok", "sentiment": "pos"}\n')
    assert examples(custom, text_key="review", label_key="sentiment") == [("ok", ("pos",), 1)]


def test_fasttext_several_labels_and_non_ascii(tmp_path):
    path = write(tmp_path / "train.txt",
                 "__label__a __label__b some  text\n__label__négatif très  mauvais\ntext then __label__c\n"
                 "__label__very positive film\n")
    assert examples(path) == [
        ("some text", ("a", "b"), 1), ("très mauvais", ("négatif",), 2), ("text then", ("c",), 3),
        ("positive film", ("very",), 4)]  # a fastText label ends at whitespace
    other = write(tmp_path / "p.txt", "#pos good\n")
    assert examples(other, "fasttext", label_prefix="#") == [("good", ("pos",), 1)]


def test_labeltext_labels_with_spaces_and_non_ascii(tmp_path):
    path = write(tmp_path / "a.txt", "very positive\tGreat film\tindeed\nnégatif\t  mauvais \n")
    assert examples(path) == [("Great film\tindeed", ("very positive",), 1), ("mauvais", ("négatif",), 2)]


def test_trec_coarse_and_fine(tmp_path):
    path = write(tmp_path / "a.label", "NUM:dist How far is it ?\nHUM:ind Who was Galileo ?\n")
    assert examples(path) == [("How far is it ?", ("NUM",), 1), ("Who was Galileo ?", ("HUM",), 2)]
    assert [e.label for e in read(path, fine=True)] == ["NUM:dist", "HUM:ind"]


@pytest.mark.parametrize("name,content,fmt", [
    ("a.csv", "", "csv"), ("a.tsv", "", "tsv"), ("a.jsonl", "", "jsonl"), ("a.jsonl.gz", b"", "jsonl"),
    ("a.csv.gz", b"", "csv"), ("a.label", "", "trec"), ("a.txt", "\n\n__label__x hi\n", "fasttext"),
    ("b.txt", "x\thi\n", "labeltext"), ("c.txt", "", "labeltext"),
])
def test_detect_format(tmp_path, name, content, fmt):
    assert detect_format(write(tmp_path / name, content)) == fmt


def test_unknown_format_extension_and_options_are_config_errors(tmp_path):
    path = write(tmp_path / "a.csv", "1,a\n")
    with pytest.raises(ConfigError, match="unknown data format"):
        read(path, "xml")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        read(write(tmp_path / "a.dat", "1,a\n"))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['text_key'\]"):
        read(path, text_key="t")
    with pytest.raises(ConfigError, match="no column named 'lable'"):
        list(read(write(tmp_path / "h.csv", "label,text\n1,a\n"), label_column="lable"))
    with pytest.raises(ConfigError, match="has no header"):
        list(read(path, header=False, label_column="label"))
    with pytest.raises(ConfigError, match="not a column index"):
        list(read(path, label_column=5))
    with pytest.raises(ConfigError, match="quoting"):
        list(read(path, quoting="weird"))


# --- the bad-input catalogue, for every format ------------------------------------------------------------

# format -> (file name, a good line for (label, text))
FORMATS = {
    "csv": ("d.csv", lambda label, text: f'"{label}","{text}"'),
    "tsv": ("d.tsv", lambda label, text: f"{label}\t{text}"),
    "jsonl": ("d.jsonl", lambda label, text: json.dumps({"text": text, "label": label}, ensure_ascii=False)),
    "fasttext": ("d.txt", lambda label, text: f"__label__{label} {text}"),
    "labeltext": ("d.txt", lambda label, text: f"{label}\t{text}"),
    "trec": ("d.label", lambda label, text: f"{label}:fine {text}"),
}
ALL = pytest.mark.parametrize("fmt", sorted(FORMATS))


def lines_file(tmp_path, fmt, *lines: bytes) -> Path:
    """The file of `fmt` holding `lines`, each ended by a newline."""
    return write(tmp_path / FORMATS[fmt][0], b"".join(line + b"\n" for line in lines))


def good(fmt, label="A", text="some text") -> bytes:
    return FORMATS[fmt][1](label, text).encode("utf-8")


@ALL
def test_empty_file_and_blank_lines_only(tmp_path, fmt):
    for body in ([], [b"", b"", b"  "]):
        path = lines_file(tmp_path, fmt, *body)
        err = error_of(path, fmt)
        assert "no examples" in str(err) and str(err).startswith(str(path))


@ALL
def test_blank_lines_are_skipped_with_true_line_numbers(tmp_path, fmt):
    path = lines_file(tmp_path, fmt, b"", good(fmt, "A", "one"), b"", b"", good(fmt, "B", "two"), b"")
    assert [(t, line) for t, _, line in examples(path, fmt)] == [("one", 2), ("two", 5)]


@ALL
def test_bom_and_crlf(tmp_path, fmt):
    bom = b"\xef\xbb\xbf"
    path = lines_file(tmp_path, fmt, bom + good(fmt, "A", "one") + b"\r", good(fmt, "B", "two") + b"\r")
    assert examples(path, fmt) == [("one", ("A",), 1), ("two", ("B",), 2)]


@ALL
def test_nul_byte(tmp_path, fmt):
    raw_nul = good(fmt, "B", "xQy").replace(b"Q", b"\x00")  # a raw byte (json.dumps would escape it)
    path = lines_file(tmp_path, fmt, good(fmt), raw_nul)
    err = error_of(path, fmt)
    assert str(err).startswith(f"{path}:2: ") and "NUL" in str(err)


@ALL
def test_non_utf8_bytes_and_the_latin1_way_out(tmp_path, fmt):
    latin1 = good(fmt, "B", "caf\xe9").replace("\xe9".encode(), b"\xe9")
    path = lines_file(tmp_path, fmt, good(fmt), latin1)
    err = error_of(path, fmt)
    assert str(err) == f"{path}:2: not valid utf-8 text (try data.encoding=latin-1)"
    assert examples(path, fmt, encoding="latin-1")[1][0] == "caf\xe9"


@ALL
def test_a_10mb_line_errors_and_can_be_skipped(tmp_path, fmt):
    huge = good(fmt, "B", "x" * 10_000_000)
    path = lines_file(tmp_path, fmt, good(fmt, "A", "one"), huge, good(fmt, "C", "three"))
    err = error_of(path, fmt)
    assert str(err).startswith(f"{path}:2: ") and "longer than 1000000 characters" in str(err)
    stats = ReadStats()
    got = examples(path, fmt, skip_bad_rows=True, stats=stats)
    assert got == [("one", ("A",), 1), ("three", ("C",), 3)]
    assert (stats.rows, stats.skipped) == (2, 1) and stats.first_errors[0].startswith(f"{path}:2: ")


@ALL
def test_missing_file_and_directory(tmp_path, fmt):
    name = FORMATS[fmt][0]
    err = error_of(tmp_path / "missing" / name, fmt)
    assert "file not found" in str(err) and str(tmp_path / "missing" / name) in str(err)
    (tmp_path / name).mkdir()
    assert "directory" in str(error_of(tmp_path / name, fmt))


@ALL
def test_non_ascii_labels(tmp_path, fmt):
    path = lines_file(tmp_path, fmt, good(fmt, "ÉTIQUETTE", "texte"))
    assert examples(path, fmt) == [("texte", ("ÉTIQUETTE",), 1)]


# format -> bad lines (each after a good line 1, so the error must name line 2)
BAD_LINES = {
    "csv": [('"1","unbalanced', "malformed CSV"), ('"1"x,"y"', "malformed CSV"),
            ('"1","a","extra"', "expected 2 columns, got 3"), ('"1"', "expected 2 columns, got 1"),
            ('"","text"', "empty label"), ('"1","  "', "empty text")],
    "tsv": [("1\ta\textra", "expected 2 columns, got 3"), ("1 no tab", "expected 2 columns, got 1"),
            ("\ttext", "empty label"), ("1\t ", "empty text")],
    "jsonl": [('{"text": "a", "label": ', "invalid JSON"), ('["a", "b"]', "expected a JSON object"),
              ('{"label": "x"}', "missing key 'text'"), ('{"text": "a"}', "missing key 'label'"),
              ('{"text": 5, "label": "x"}', "must be a string"), ('{"text": " ", "label": "x"}', "empty text"),
              ('{"text": "a", "label": ""}', "empty label"), ('{"text": "a", "label": []}', "empty label list"),
              ('{"text": "a", "label": 1.5}', "a label must"), ('{"text": "a", "label": true}', "a label must"),
              ('{"text": "a", "label": {"x": 1}}', "a label must"),
              ('{"text": "a\\ud800", "label": "x"}', "surrogate"), ("[" * 100_000, "invalid JSON")],
    "fasttext": [("no label here", "no label"), ("__label__ text", "empty label"),
                 ("__label__a", "empty text")],
    "labeltext": [("no tab here", "no tab"), ("\ttext", "empty label"), ("label\t  ", "empty text")],
    "trec": [("NOCOLON what ?", "expected 'COARSE:fine"), (":fine what", "expected 'COARSE:fine"),
             ("NUM:dist", "empty text")],
}


@pytest.mark.parametrize("fmt,bad,message", [(f, b, m) for f, cases in BAD_LINES.items() for b, m in cases])
def test_bad_line_names_path_and_line_and_can_be_skipped(tmp_path, fmt, bad, message):
    path = lines_file(tmp_path, fmt, good(fmt, "A", "one"), bad.encode(), good(fmt, "C", "three"))
    err = error_of(path, fmt)
    assert str(err).startswith(f"{path}:2: ") and message in str(err), str(err)
    stats = ReadStats()
    got = examples(path, fmt, skip_bad_rows=True, stats=stats)
    if "unbalanced" in bad:  # the open quote swallows the rest of the file into one record
        assert got == [("one", ("A",), 1)] and stats.skipped == 1
    else:
        assert got == [("one", ("A",), 1), ("three", ("C",), 3)]
        assert (stats.rows, stats.skipped) == (2, 1)
    assert stats.first_errors == [str(err)]


def test_skip_bad_rows_counts_and_keeps_five_messages(tmp_path):
    body = "\n".join(["1\tgood"] + ["no tab"] * 8 + ["2\tgood"]) + "\n"
    path = write(tmp_path / "a.txt", body)
    stats = ReadStats()
    assert len(examples(path, "labeltext", skip_bad_rows=True, stats=stats)) == 2
    assert (stats.rows, stats.skipped, len(stats.first_errors)) == (2, 8, 5)
    assert stats.first_errors[0] == f"{path}:2: expected label<TAB>text (no tab)"


def test_only_bad_rows_is_no_examples_even_when_skipping(tmp_path):
    path = write(tmp_path / "a.txt", "no tab\nnone here\n")
    err = error_of(path, "labeltext", skip_bad_rows=True)
    assert str(err).startswith(f"{path}: no examples (2 bad rows skipped; first: {path}:1: ")


def test_unbalanced_quote_is_bounded_by_max_line_chars(tmp_path):
    path = write(tmp_path / "a.csv", '"1","ok"\n"2","never closed\n' + "more text\n" * 50_000)
    err = error_of(path, max_line_chars=10_000)
    assert str(err).startswith(f"{path}:2: malformed CSV")


def test_read_is_lazy(tmp_path):
    path = write(tmp_path / "a.txt", "a\tone\nb\ttwo\nno tab\n")
    rows = read(path)
    assert next(rows).text == "one" and next(rows).text == "two"
    with pytest.raises(DataError, match=":3: "):
        next(rows)


# --- the real datasets (skipped when /work/shared/data is absent) -----------------------------------------


def label_counts(path, format="auto", **options) -> tuple[int, dict[str, int]]:
    counts = collections.Counter(e.label for e in read(path, format, **options))
    return sum(counts.values()), dict(counts)


def test_real_sst2(shared_data):
    sst = shared_data / "sst2" / "glue"
    train = label_counts(sst / "train.tsv", header=True, label_column="label")
    assert train == (67_349, {"1": 37_569, "0": 29_780})
    assert label_counts(sst / "dev.tsv", header=True, label_column="label") == (872, {"1": 444, "0": 428})


def test_real_trec_latin1(shared_data):
    trec = shared_data / "trec"
    coarse = {"ABBR": 86, "DESC": 1_162, "ENTY": 1_250, "HUM": 1_223, "LOC": 835, "NUM": 896}
    assert label_counts(trec / "train_5500.label", encoding="latin-1") == (5_452, coarse)
    test = {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65, "LOC": 81, "NUM": 113}
    assert label_counts(trec / "TREC_10.label", encoding="latin-1") == (500, test)
    err = error_of(trec / "train_5500.label")  # it has a non-UTF-8 byte, as the original
    assert "try data.encoding=latin-1" in str(err)


def test_real_ag_news_test(shared_data):
    counts = label_counts(shared_data / "ag_news" / "test.csv")
    assert counts == (7_600, {"1": 1_900, "2": 1_900, "3": 1_900, "4": 1_900})


def test_column_count_comes_from_the_majority_and_one_column_files_are_refused(tmp_path):
    path = write(tmp_path / "a.csv", "odd first row\n1,a\n2,b\n")
    err = error_of(path)
    assert str(err) == f"{path}:1: expected 2 columns, got 1"
    assert examples(path, skip_bad_rows=True) == [("a", ("1",), 2), ("b", ("2",), 3)]
    single = write(tmp_path / "b.csv", "just text\nmore text\n")
    assert "expected a label column and a text column" in str(error_of(single))


def test_a_bad_header_is_never_replaced_by_a_data_row(tmp_path):
    path = write(tmp_path / "a.tsv", b"sent\x00ence\tlabel\ngood\t1\n")
    err = error_of(path, header=True, skip_bad_rows=True)
    assert str(err).startswith(f"{path}:1: unreadable header: NUL")
