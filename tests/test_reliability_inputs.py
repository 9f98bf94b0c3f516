"""The bad-input catalogue for every CLI verb (train, evaluate, predict, info), exercised with hypothesis.

Every bad input gives exit 2 and one error line naming file:line where there is a line (with
--skip-bad-rows: the row is skipped, counted and reported), never a traceback (in-process runs of
`seqlab.cli.main` would raise it) and never a hang (two subprocesses with timeouts). BOM, CRLF, empty
lines and labels with spaces or non-ASCII characters are not errors: they read as a user means them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from seqlab.cli import main
from tests.helpers import sentiment_rows, tiny_classification

REPO = Path(__file__).resolve().parent.parent
QUICK = ["train.epochs=1", "model.dim=8", "threads=1"]
def fuzz(examples: int) -> settings:
    """Bounded: a few small examples each, no per-example deadline (some train a tiny model)."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

TEN_MB = 10 * 1024 * 1024
GOOD = [f'"{label}","{text}"'.encode() for label, text in sentiment_rows(30, seed=3)]

# a bad CSV line, and a word of the message that must come with its file:line
FAULTS = {
    "NUL byte": (b'"pos","a gre\x00at film"', "nul"),
    "non-UTF-8 bytes": (b'"pos","caf\xe9 cr\xe8me film"', "utf-8"),
    "unbalanced quote": (b'"pos","a great film', "quote"),
    "extra column": (b'"pos","a great film","and more"', "columns"),
    "missing column": (b'"pos"', "columns"),
    "empty label": (b'"","a great film"', "label"),
    "empty text": (b'"pos",""', "text"),
    "10 MB line": (b'"pos","' + b"word " * (TEN_MB // 5) + b'"', "longer"),
}
SMALL_FAULTS = [k for k in FAULTS if k != "10 MB line"]


def cli(args: list[str], capsys) -> tuple[int, str, list[str]]:
    """`seqlab ARGS` in-process: exit code, stdout, stderr lines. With exit 2 the error is one line."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code in (0, 2), (code, lines)
    if code == 2:
        errors = [x for x in lines if x.startswith("seqlab: error: ")]
        assert len(errors) == 1 and errors == lines[-1:], lines
    return code, out, lines


def error_at(lines: list[str], path: Path, line: int | None) -> str:
    """The message of the error line, which must name `path` (and `line`)."""
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert lines[-1].startswith(f"seqlab: error: {where}"), (where, lines[-1])
    return lines[-1].removeprefix(f"seqlab: error: {where}")


def encode(lines: list[bytes], bom: bool = False, crlf: bool = False) -> bytes:
    """The bytes of a file of `lines`, with a UTF-8 byte-order mark and Windows line ends if asked."""
    return (b"\xef\xbb\xbf" if bom else b"") + b"".join(x + (b"\r\n" if crlf else b"\n") for x in lines)


def with_faults(good: list[bytes], faults: dict[int, bytes], bom: bool = False, crlf: bool = False) -> bytes:
    """`good` lines with `faults` inserted so that fault k sits on line k (1-based)."""
    lines = list(good)
    for line in sorted(faults):
        lines.insert(line - 1, faults[line])
    return encode(lines, bom, crlf)


def train(data: Path, out: Path, *overrides: str, flags: tuple = ("--quiet",)) -> list:
    """`seqlab train` arguments for a quick run on `data` into `out`."""
    return ["train", f"data.train={data}", *QUICK, *overrides, "--out", out, *flags]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A small trained classifier (labels pos/neg) for evaluate, predict and info."""
    root = tmp_path_factory.mktemp("trained")
    data = tiny_classification(root)
    assert main(["train", *[f"{k}={v}" for k, v in data.items()], *QUICK, "--out", str(root / "run"),
                 "--quiet"]) == 0
    return root / "run"


# ------------------------------------------------------------------------------------------ train, evaluate
@fuzz(25)
@given(fault=st.sampled_from(SMALL_FAULTS), line=st.integers(1, len(GOOD) + 1), bom=st.booleans(),
       crlf=st.booleans())
def test_a_bad_row_is_an_error_at_its_line_in_train_and_evaluate(run, capsys, fault, line, bom, crlf):
    bad, word = FAULTS[fault]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.csv"
        data.write_bytes(with_faults(GOOD, {line: bad}, bom, crlf))
        code, _, err = cli(train(data, Path(tmp) / "out"), capsys)
        assert code == 2 and word in error_at(err, data, line).lower()
        assert sorted(os.listdir(tmp)) == ["data.csv"]  # no run directory, not even a hidden one
        code, _, err = cli(["evaluate", run, "--data", data], capsys)
        assert code == 2 and word in error_at(err, data, line).lower()


def test_a_10_mb_line_is_an_error_at_its_line_for_every_verb_reading_files(run, tmp_path, capsys):
    data = tmp_path / "data.csv"
    data.write_bytes(with_faults(GOOD, {7: FAULTS["10 MB line"][0]}))
    code, _, err = cli(train(data, tmp_path / "out"), capsys)
    assert code == 2 and "longer than" in error_at(err, data, 7)
    code, _, err = cli(["evaluate", run, "--data", data], capsys)
    assert code == 2 and "longer than" in error_at(err, data, 7)
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"a great film\n" + b"word " * (TEN_MB // 5) + b"\n")
    code, _, err = cli(["predict", run, "--file", texts], capsys)
    assert code == 2 and "longer than" in error_at(err, texts, 2)


@fuzz(4)
@given(faults=st.dictionaries(st.integers(1, len(GOOD)), st.sampled_from(SMALL_FAULTS), min_size=1,
                              max_size=3))
def test_skip_bad_rows_skips_counts_and_reports_them(run, capsys, faults):
    # an unbalanced quote swallows the lines after it into its record: test the count without it
    assume("unbalanced quote" not in faults.values())
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.csv", Path(tmp) / "out"
        data.write_bytes(with_faults(GOOD, {k: FAULTS[v][0] for k, v in faults.items()}))
        n = len(faults)
        code, stdout, _ = cli(train(data, out, "data.valid_fraction=0", flags=("--skip-bad-rows",)), capsys)
        assert code == 0 and f"{data}: skipped {n} bad rows" in stdout
        counts = json.loads((out / "summary.json").read_text())["counts"]
        assert counts["skipped_rows"][str(data)] == n and counts["train_examples"] == len(GOOD)
        code, stdout, err = cli(["evaluate", run, "--data", data, "--skip-bad-rows", "--json"], capsys)
        assert code == 0 and any(x.startswith(f"seqlab: {data}: skipped {n} bad rows") for x in err)
        assert json.loads(stdout)["examples"] == len(GOOD)


LABEL = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=12)


@fuzz(4)
@given(labels=st.lists(LABEL.map(str.strip).filter(bool), min_size=2, max_size=3, unique=True),
       bom=st.booleans(), crlf=st.booleans(), blank=st.integers(0, 3))
def test_bom_crlf_empty_lines_and_labels_with_spaces_or_non_ascii_read_as_meant(capsys, labels, bom, crlf,
                                                                                 blank):
    texts = [text for _, text in sentiment_rows(30, seed=4)]
    rows = io.StringIO()
    csv.writer(rows, lineterminator="\n").writerows((labels[i % len(labels)], t) for i, t in enumerate(texts))
    lines = rows.getvalue().encode().splitlines()
    lines[3:3] = [b""] * blank + [b"   "] * blank  # empty and blank lines are skipped, not errors
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.csv", Path(tmp) / "out"
        data.write_bytes(encode(lines, bom, crlf))
        code, _, err = cli(train(data, out, f"data.test={data}", "data.valid_fraction=0"), capsys)
        assert code == 0, err
        assert sorted(json.loads((out / "vocab.json").read_text())["labels"]["itos"]) == sorted(labels)
        assert json.loads((out / "summary.json").read_text())["counts"]["train_examples"] == len(texts)
        code, stdout, _ = cli(["evaluate", out, "--json"], capsys)
        assert code == 0 and set(json.loads(stdout)["per_class"]) == set(labels)
        code, stdout, _ = cli(["predict", out, texts[0], "--json"], capsys)
        assert code == 0 and json.loads(stdout)["label"] in labels


@fuzz(15)
@given(label=LABEL.map(str.strip).filter(lambda x: x and x not in ("pos", "neg")),
       line=st.integers(1, len(GOOD) + 1), skip=st.booleans())
def test_a_label_unseen_in_training_counts_as_missed_and_is_named_once(run, capsys, label, line, skip):
    """Not an error (fastText's data has such labels): the example counts as missed, and a warning names the
    label once; dropping it would bias the metrics, so --skip-bad-rows keeps it too."""
    rows = io.StringIO()
    csv.writer(rows, lineterminator="\n").writerow([label, "a great film"])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.csv"
        data.write_bytes(with_faults(GOOD, {line: rows.getvalue().encode().rstrip(b"\n")}))
        code, stdout, err = cli(["evaluate", run, "--data", data, "--json", *(["--skip-bad-rows"] if skip else [])],
                                capsys)
        assert code == 0 and sum(f"label {label!r} does not occur in the training data" in e for e in err) == 1
        report = json.loads(stdout)
        assert report["per_class"][label]["support"] == 1 and report["per_class"][label]["recall"] == 0.0


@pytest.mark.parametrize("verb", ["train", "evaluate"])
def test_empty_and_broken_data_files(verb, run, tmp_path, capsys):
    cases = {  # content, and the start of the error line after the path
        "empty.csv": (b"", ": no examples"),
        "blank.csv": (b"\n  \n\r\n", ": no examples"),
        "truncated.csv.gz": (gzip.compress(b"\n".join(GOOD))[:200], ":"),  # :LINE: cannot read (at some line)
        "missing.csv": (None, ": file not found"),
    }
    for name, (content, after) in cases.items():
        data = tmp_path / name
        if content is not None:
            data.write_bytes(content)
        args = train(data, tmp_path / "out") if verb == "train" else ["evaluate", run, "--data", data]
        code, _, err = cli(args, capsys)
        assert code == 2 and err[-1].startswith(f"seqlab: error: {data}{after}"), (name, err)
        assert name != "truncated.csv.gz" or "cannot read" in err[-1]
        assert not (tmp_path / "out").exists()


OTHER_FORMATS = {  # a good line for (label, text), and bad lines with a word of their message
    "tsv": (lambda lab, t: f"{lab}\t{t}", [b"pos\ta great film\textra", b"\ta great film", b"pos\t"]),
    "jsonl": (lambda lab, t: json.dumps({"label": lab, "text": t}),
              [b'{"label": "pos", "text": "a great', b'["pos", "a great film"]', b'{"label": "pos"}',
               b'{"label": [], "text": "a great film"}', b'{"label": "pos", "text": 7}']),
    "txt": (lambda lab, t: f"__label__{lab} {t}",
            [b"a great film without a label", b"__label__ a bare prefix", b"__label__pos"]),
}


@fuzz(20)
@given(fmt=st.sampled_from(sorted(OTHER_FORMATS)), data=st.data())
def test_bad_rows_of_the_other_formats_are_errors_at_their_line(capsys, fmt, data):
    good_line, bad_lines = OTHER_FORMATS[fmt]
    bad = data.draw(st.sampled_from([*bad_lines, b"pos a gre\x00at film", b"\xff\xfe not UTF-8"]))
    line = data.draw(st.integers(1, 21))
    good = [good_line(label, text).encode() for label, text in sentiment_rows(20, seed=5)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data.{fmt}"
        path.write_bytes(with_faults(good, {line: bad}))
        code, _, err = cli(train(path, Path(tmp) / "out"), capsys)
        assert code == 2
        error_at(err, path, line)


# ------------------------------------------------------------------------------------------ predict
@fuzz(25)
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=4), as_json=st.booleans())
def test_predict_any_text_arguments(run, capsys, texts, as_json):
    # options first, then `--`: every text is a text, even "-1 stars" (argparse 3.11 mishandles `--` after
    # an option that follows the positionals)
    code, out, err = cli(["predict", *(["--json"] if as_json else []), run, "--", *texts], capsys)
    blank = [i for i, t in enumerate(texts, 1) if not t.strip()]
    if blank:
        assert code == 2 and err == [f"seqlab: error: empty text (argument {blank[0]})"]
    else:
        lines = out.removesuffix("\n").split("\n")  # (not splitlines: a text may hold U+2028 and the like)
        assert code == 0 and len(lines) == len(texts)
        if as_json:
            assert [json.loads(x)["text"] for x in lines] == texts


@fuzz(25)
@given(lines=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
                              max_size=30), min_size=0, max_size=6),
       fault=st.sampled_from([None, b"\x00", b"\xff", b"\xc3("]), at=st.integers(0, 6), bom=st.booleans(),
       crlf=st.booleans())
def test_predict_from_a_file(run, capsys, lines, fault, at, bom, crlf):
    raw = [x.encode() for x in lines]
    if fault is not None:
        raw.insert(min(at, len(raw)), b"a great" + fault + b" film")
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "texts.txt"
        f.write_bytes(encode(raw, bom, crlf))
        code, out, err = cli(["predict", run, "--file", f], capsys)

    def bad(line: bytes) -> bool:  # not UTF-8, a NUL byte, or nothing to predict from
        try:
            text = line.decode()
        except UnicodeDecodeError:
            return True
        return "\x00" in text or not text.strip()

    first_bad = next((i for i, x in enumerate(raw, 1) if bad(x)), None)
    if not raw:
        assert code == 2 and error_at(err, f, None) == "no texts in file"
    elif first_bad is not None:
        assert code == 2
        error_at(err, f, first_bad)
    else:
        assert code == 0 and len(out.removesuffix("\n").split("\n")) == len(raw)


def test_predict_refuses_text_that_is_not_utf8(run, capsys):
    """Arguments arrive as bytes; those that are not UTF-8 reach Python as lone surrogates."""
    code, _, err = cli(["predict", run, "a great film", "caf\udce9", "--json"], capsys)
    assert code == 2 and err == ["seqlab: error: not valid UTF-8 text (argument 2)"]


# ----------------------------------------------------------------------------------------- info, mangled runs
@fuzz(30)
@given(cut=st.integers(0, 2000), flip=st.integers(0, 2000), byte=st.binary(min_size=1, max_size=1),
       summary=st.one_of(st.binary(max_size=40), st.recursive(
           st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
               st.sampled_from(["parameters", "wall_seconds", "counts", "results", "x_examples", "test"]),
               kids, max_size=4), max_leaves=8).map(lambda v: json.dumps(v).encode())))
def test_info_predict_evaluate_on_a_mangled_run_directory(run, capsys, cut, flip, byte, summary):
    config = (run / "config.yaml").read_bytes()
    mangled = bytearray(config[: max(cut, 1)] if cut < len(config) else config)
    mangled[flip % len(mangled)] = byte[0]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        copy.mkdir()
        for name in ("vocab.json", "model.safetensors"):
            (copy / name).write_bytes((run / name).read_bytes())
        (copy / "config.yaml").write_bytes(bytes(mangled))
        (copy / "summary.json").write_bytes(summary)
        for args in (["info", copy], ["info", copy, "--json"], ["predict", copy, "a great film"],
                     ["evaluate", copy, "--data", run.parent / "test.csv"]):
            cli(args, capsys)  # exit 0 or 2 with one error line; a traceback fails the test


def test_info_on_what_is_not_a_run_directory(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "config.yaml").write_text("")
    for path, words in [(tmp_path / "empty", "no config.yaml"), (tmp_path / "file", "not found"),
                        (tmp_path / "blank", "config.yaml is empty")]:
        code, _, err = cli(["info", path], capsys)
        assert code == 2 and words in error_at(err, path, None)


# ------------------------------------------------------------------------------------------ real processes
def seqlab(args: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqlab", *map(os.fsencode, args)], capture_output=True,
                          timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, **kwargs)


def test_a_process_given_a_10_mb_line_fails_fast_with_one_line(tmp_path):
    data = tmp_path / "data.csv"
    data.write_bytes(with_faults(GOOD, {3: FAULTS["10 MB line"][0]}))
    proc = seqlab(["train", f"data.train={data}", "--out", tmp_path / "out", "--quiet"])
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    [line] = proc.stderr.decode().splitlines()
    assert line.startswith(f"seqlab: error: {data}:3: line longer than ")


def test_a_process_given_non_utf8_arguments_fails_with_one_line(run):
    proc = seqlab(["predict", run, b"caf\xe9", "--json"])
    assert proc.returncode == 2 and proc.stderr.decode().splitlines() == [
        "seqlab: error: not valid UTF-8 text (argument 1)"]
