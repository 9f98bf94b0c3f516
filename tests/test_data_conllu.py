"""CoNLL-U and two-column tagged readers: good input, a catalogue of bad input (each error names file:line),
skip_bad_rows, and the counts of the real UD English files when /work/shared/data is present."""

import gzip
import os
from pathlib import Path

import pytest

from seqlab.data.conllu import Sentence, read_conllu, read_tagged
from seqlab.data.readers import ReadStats
from seqlab.errors import ConfigError, DataError

# Two sentences with every kind of line: metadata and plain comments, a multiword token (1-2), an empty
# node (3.1), a FORM with a space (UD allows it), and the empty line after the last sentence.
GOOD = (
    "# newdoc id = d1\n"
    "# sent_id = s1\n"
    "# text = Don't go New York\n"
    "1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n"
    "2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n"
    "3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n"
    "3.1\tgoes\tgo\tVERB\tVBZ\t_\t_\t_\t3:conj\tCopyOf=3\n"
    "4\tNew York\tNew York\tPROPN\tNNP\t_\t3\tobj\t_\t_\n"
    "\n"
    "# a comment without metadata\n"
    "1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_\n"
    "2\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_\n"
    "\n"
)


def write(tmp_path: Path, text: str, name: str = "f.conllu") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def row(i, form="w", upos="NOUN", xpos="NN") -> str:
    return f"{i}\t{form}\t{form}\t{upos}\t{xpos}\t_\t0\troot\t_\t_\n"


def mwt(span: str, form: str = "ab") -> str:
    """A multiword token line: the surface form over the words of `span`, every other field '_'."""
    return f"{span}\t{form}" + "\t_" * 8 + "\n"


def test_good_file_upos(tmp_path):
    sents = list(read_conllu(write(tmp_path, GOOD)))
    assert sents == [
        Sentence(["Do", "n't", "go", "New York"], ["AUX", "PART", "VERB", "PROPN"], 4, "s1",
                 "Don't go New York"),
        Sentence(["Yes", "!"], ["INTJ", "PUNCT"], 12, None, None),
    ]


def test_good_file_xpos(tmp_path):
    sents = list(read_conllu(write(tmp_path, GOOD), column="xpos"))
    assert [s.tags for s in sents] == [["VBP", "RB", "VB", "NNP"], ["UH", "."]]


def test_multiword_and_empty_nodes_never_leak(tmp_path):
    tokens = [t for s in read_conllu(write(tmp_path, GOOD)) for t in s.tokens]
    assert "Don't" not in tokens and "goes" not in tokens and len(tokens) == 6


def test_reading_is_lazy(tmp_path):
    """The first sentence comes out before the reader ever reaches the broken second one."""
    path = write(tmp_path, row(1) + "\n" + "1\tbroken\n")
    it = read_conllu(path)
    assert next(it).tokens == ["w"]
    with pytest.raises(DataError):
        next(it)


def test_crlf_bom_and_gzip(tmp_path):
    text = "\ufeff" + GOOD.replace("\n", "\r\n")
    plain = tmp_path / "crlf.conllu"
    plain.write_bytes(text.encode("utf-8"))
    packed = tmp_path / "crlf.conllu.gz"
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    expected = list(read_conllu(write(tmp_path, GOOD)))
    assert [s.tokens for s in expected] == [["Do", "n't", "go", "New York"], ["Yes", "!"]]
    for path in (plain, packed):
        got = list(read_conllu(path))
        assert [(s.tokens, s.tags, s.sent_id, s.text) for s in got] == \
            [(s.tokens, s.tags, s.sent_id, s.text) for s in expected]


def test_latin1_file_needs_its_encoding(tmp_path):
    path = tmp_path / "latin1.conllu"
    path.write_bytes((row(1) + row(2, form="café") + "\n").encode("latin-1"))
    with pytest.raises(DataError) as e:
        list(read_conllu(path))
    assert str(e.value).startswith(f"{path}:2: ") and "latin-1" in str(e.value)
    assert next(read_conllu(path, encoding="latin-1")).tokens == ["w", "café"]


BAD_CONLLU = {
    "nine fields": (row(1) + "2\tw\tw\tNOUN\tNN\t_\t1\tdep\t_\n", 2, "expected 10 TAB-separated fields"),
    "eleven fields": (row(1) + row(2).replace("\n", "\t_\n"), 2, "found 11"),
    "spaces instead of tabs": ("1 w w NOUN NN _ 0 root _ _\n", 1, "found 1"),
    "empty form": ("1\t\tw\tNOUN\tNN\t_\t0\troot\t_\t_\n", 1, "empty FORM"),
    "empty misc": (row(1).replace("\t_\n", "\t\n"), 1, "empty MISC"),
    "non-integer id": (row("a"), 1, "bad ID 'a'"),
    "zero-padded id": (row("01"), 1, "bad ID '01'"),
    "bad range id": (row(1) + mwt("2-x"), 2, "bad ID '2-x'"),
    "ids not starting at 1": (row(2), 1, "word ID 2 out of sequence: expected 1"),
    "gap in ids": (row(1) + row(3), 2, "word ID 3 out of sequence: expected 2"),
    "repeated id": (row(1) + row(1), 2, "word ID 1 out of sequence"),
    "range not at next word": (row(1) + mwt("1-2") + row(2), 2, "multiword token range"),
    "range of one word": (mwt("1-1") + row(1), 1, "span two or more"),
    "range past the end": (mwt("1-3") + row(1) + row(2), 1, "ends at word 3"),
    "overlapping ranges": (mwt("1-3") + row(1) + row(2) + mwt("3-4") + row(3) + row(4), 4, "not overlap"),
    "empty node out of place": (row(1) + row(2) + mwt("1.1"), 3, "empty node 1.1"),
    "only empty nodes": ("# text = x\n" + mwt("0.1") + mwt("0.2"), 2, "sentence without words"),
    "nul byte": (row(1) + row(2, form="a\x00b"), 2, "NUL"),
    "comment inside a sentence": (row(1) + "# late comment\n" + row(2), 2, "comment line inside a sentence"),
    "comments without a sentence": (row(1) + "\n# sent_id = lonely\n", 3, "comment lines without a sentence"),
    # what the UD validator rejects at level 1 too
    "a line of only spaces": (row(1) + "  \n" + row(2), 2, "a line of only whitespace"),
    "two empty lines": (row(1) + "\n\n" + row(1), 3, "an empty line that ends no sentence"),
    "no empty line at the end": (row(1) + row(2), 3, "ends without the empty line"),
    "form with a leading space": (row(1, form=" w"), 1, "leading or trailing whitespace"),
    "misc with a trailing space": (row(1).replace("\t_\n", "\t_ \n"), 1, "leading or trailing whitespace"),
    "not NFC": (row(1, form="cafe\u0301"), 1, "not in Unicode NFC"),
    "empty nodes out of order": (row(1) + mwt("1.2") + mwt("1.1"), 2, "empty node 1.2 out of sequence"),
    "upos underscore": (row(1) + row(2, upos="_"), 2, "UPOS is '_'"),
    "tag with a space": (row(1, upos="NO UN"), 1, "contains whitespace"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONLLU))
def test_bad_conllu(tmp_path, name):
    text, line, message = BAD_CONLLU[name]
    end = "" if name == "no empty line at the end" else "\n"  # each sentence ends with its empty line
    path = write(tmp_path, "# sent_id = ok\n" + row(1) + "\n" + text + end)  # a good sentence first, 2 lines
    with pytest.raises(DataError) as e:
        list(read_conllu(path))
    assert e.value.path == str(path) and e.value.line == line + 3, str(e.value)
    assert message in e.value.message
    assert str(e.value).startswith(f"{path}:{line + 3}: ")


def test_xpos_all_underscore_is_an_error_but_some_underscores_are_tags(tmp_path):
    some = write(tmp_path, row(1, xpos="_") + row(2) + "\n", "some.conllu")
    assert next(read_conllu(some, column="xpos")).tags == ["_", "NN"]
    none = write(tmp_path, row(1) + "\n" + row(1, xpos="_") + row(2, xpos="_") + "\n", "none.conllu")
    with pytest.raises(DataError, match="no XPOS tags") as e:
        list(read_conllu(none, column="xpos"))
    assert e.value.line == 3
    assert [s.tags for s in read_conllu(none)] == [["NOUN"], ["NOUN", "NOUN"]]  # UPOS is fine


@pytest.mark.parametrize("text", ["", "\ufeff"])
def test_an_empty_file_is_valid_and_holds_no_sentence(tmp_path, text):
    """As the UD validator has it; training on it is refused one level up ("no training examples")."""
    assert list(read_conllu(write(tmp_path, text))) == []


@pytest.mark.parametrize("text, message", [("\n\n  \n", "an empty line that ends no sentence"),
                                           ("# only a comment\n\n", "comment lines without a sentence")])
def test_a_file_of_blank_lines_or_comments_only_is_bad(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=message) as e:
        list(read_conllu(path))
    assert e.value.path == str(path) and e.value.line == 1


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError) as e:
        list(read_conllu(tmp_path / "nope.conllu"))
    assert e.value.path == str(tmp_path / "nope.conllu")
    with pytest.raises(DataError, match="directory"):
        list(read_conllu(tmp_path))


def test_unknown_column_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="upos, xpos"):
        read_conllu(write(tmp_path, GOOD), column="lemma")


def test_skip_bad_rows_skips_whole_sentences_and_counts(tmp_path):
    bad_bytes = row(1).encode() + b"\n" + row(1).encode() + b"2\tcaf\xe9\t_\tNOUN\tNN\t_\t1\tdep\t_\t_\n" \
        + row(3).encode() + b"\n" + row(1).encode() + row(3).encode() + b"\n" + row(1, form="last").encode() + b"\n"
    path = tmp_path / "mixed.conllu"
    path.write_bytes(bad_bytes)
    with pytest.raises(DataError) as e:
        list(read_conllu(path))
    assert e.value.line == 4
    stats = ReadStats()
    sents = list(read_conllu(path, skip_bad_rows=True, stats=stats))
    assert [s.tokens for s in sents] == [["w"], ["last"]]
    assert [s.line for s in sents] == [1, 10]
    assert (stats.rows, stats.skipped) == (2, 2)
    assert stats.first_errors[0].startswith(f"{path}:4: ") and stats.first_errors[1].startswith(f"{path}:8: ")


def test_skip_bad_rows_with_nothing_good_left(tmp_path):
    path = write(tmp_path, row(2) + "\n" + row("x"))
    with pytest.raises(DataError, match=r"no sentences in this file \(2 bad rows skipped"):
        list(read_conllu(path, skip_bad_rows=True))


# ---- two-column token<TAB>tag files ----

def test_tagged_good(tmp_path):
    path = write(tmp_path, "The\tDT\nNew York\tNNP\n\n\nrains\tVBZ \n.\t.\n", "f.tsv")
    sents = list(read_tagged(path))
    assert sents == [Sentence(["The", "New York"], ["DT", "NNP"], 1),
                     Sentence(["rains", "."], ["VBZ", "."], 5)]


BAD_TAGGED = {
    "one field": ("ok\tNN\nlonely\n", 2, "found 1"),
    "three fields": ("ok\tNN\na\tb\tc\n", 2, "found 3"),
    "empty token": ("ok\tNN\n\tNN\n", 2, "empty token"),
    "empty tag": ("ok\tNN\nword\t \n", 2, "empty tag"),
    "nul byte": ("ok\tNN\nwo\x00rd\tNN\n", 2, "NUL"),
}


@pytest.mark.parametrize("name", sorted(BAD_TAGGED))
def test_bad_tagged(tmp_path, name):
    text, line, message = BAD_TAGGED[name]
    path = write(tmp_path, "a\tDT\n\n" + text, "f.tsv")
    with pytest.raises(DataError) as e:
        list(read_tagged(path))
    assert str(e.value).startswith(f"{path}:{line + 2}: ") and message in e.value.message


def test_tagged_undecodable_empty_and_skip(tmp_path):
    path = tmp_path / "f.tsv"
    path.write_bytes(b"a\tDT\n\nb\xff\tNN\nc\tNN\n\nd\tNN\n")
    with pytest.raises(DataError, match="not valid utf-8") as e:
        list(read_tagged(path))
    assert e.value.line == 3
    stats = ReadStats()
    assert [s.tokens for s in read_tagged(path, skip_bad_rows=True, stats=stats)] == [["a"], ["d"]]
    assert (stats.rows, stats.skipped) == (2, 1)
    with pytest.raises(DataError, match="no sentences"):
        list(read_tagged(write(tmp_path, "\n", "empty.tsv")))


# ---- the real Universal Dependencies files (counts from ud_english/SOURCE.md) ----

def data_root() -> Path:
    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("SEQLAB_DATA") or repo.parent / "shared" / "data")


UD = data_root() / "ud_english"
UPOS_TAGS = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
             "PUNCT", "SCONJ", "SYM", "VERB", "X"}
UD_COUNTS = {  # file: (sentences, syntactic words)
    "lines/en_lines-ud-train.conllu": (3457, 64684),
    "lines/en_lines-ud-dev.conllu": (1118, 21637),
    "lines/en_lines-ud-test.conllu": (1121, 19984),
    "ewt/en_ewt-ud-dev.conllu": (2001, 25147),
    "ewt/en_ewt-ud-test.conllu": (2077, 25094),
}


@pytest.mark.skipif(not UD.is_dir(), reason="UD English data not present (set SEQLAB_DATA)")
@pytest.mark.parametrize("name", sorted(UD_COUNTS))
def test_real_ud_english_counts(name):
    sents = list(read_conllu(UD / name))
    assert (len(sents), sum(len(s.tokens) for s in sents)) == UD_COUNTS[name]
    assert all(len(s.tokens) == len(s.tags) and s.sent_id and s.text for s in sents)
    assert {t for s in sents for t in s.tags} <= UPOS_TAGS
    xpos = list(read_conllu(UD / name, column="xpos"))
    assert [s.tokens for s in xpos] == [s.tokens for s in sents]


def test_read_dispatches_conllu_as_design_shows(tmp_path):
    from seqlab.data import read

    f = tmp_path / "en.conllu"
    rows = ["1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_", "2\tthere\tthere\tADV\tRB\t_\t1\tadvmod\t_\t_"]
    f.write_text("# text = Hi there\n" + "\n".join(rows) + "\n\n")
    (sent,) = list(read(f, format="conllu"))
    assert sent.tokens == ["Hi", "there"] and sent.tags == ["INTJ", "ADV"]
    (sent,) = list(read(f, format="conllu", column="xpos"))
    assert sent.tags == ["UH", "RB"]
