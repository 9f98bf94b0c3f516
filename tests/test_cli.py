"""Every CLI verb end to end: on the bundled sample (as the README's first command) and on bad input."""

import json
import os
import subprocess
import sys

import pytest

from seqlab.cli import main
from tests.helpers import tiny_classification

QUICK = ["train.epochs=2", "model.dim=8", "--quiet"]


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """`seqlab train` on the bundled sample, as a user runs it (a subprocess, default config)."""
    out = tmp_path_factory.mktemp("sample") / "run"
    proc = subprocess.run([sys.executable, "-m", "seqlab", "train", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_default_train_prints_the_lecture_lines_and_how_to_try_it(sample_run):
    out, stdout = sample_run
    assert "Epoch: 1  | time in" in stdout and "Acc:" in stdout and "(valid)" in stdout
    assert "test accuracy:" in stdout and f"run saved to {out}" in stdout
    assert f"try it: seqlab predict {out}" in stdout
    test_line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert test_line["split"] == "test" and test_line["accuracy"] > 0.75


def test_predict_evaluate_info_on_the_sample(sample_run, capsys):
    out, _ = sample_run
    assert main(["predict", str(out), "Stocks fell sharply as oil prices rose", "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("Business ") and len(line.split("\t")) == 2
    assert main(["predict", str(out), "The striker scored twice in the final", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "Sports"
    assert main(["evaluate", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accuracy"] > 0.75 and {"macro_f1", "loss", "per_class", "confusion_matrix"} <= set(rep)
    assert main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "confusion matrix" in text and "Sci/Tech" in text
    assert main(["info", str(out)]) == 0
    assert "task       classify" in capsys.readouterr().out


def test_predict_from_file(sample_run, tmp_path, capsys):
    out, _ = sample_run
    f = tmp_path / "in.txt"
    f.write_text("Oil prices rose\nThe team won the cup\n")
    assert main(["predict", str(out), "--file", str(f)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["train", "data.train=/no/such/file.csv", "--quiet"], "/no/such/file.csv"),
        (["train", "train.epoch=3", "--quiet"], "did you mean 'epochs'"),
        (["train", "train.epochs=two", "--quiet"], "must be an integer"),
        (["train", "model=transformerz", "--quiet"], "unknown model"),
        (["train", "no_such_preset.yaml", "--quiet"], "no such preset file"),
        (["predict", "/no/such/run", "hello"], "run directory not found"),
        (["evaluate", "/no/such/run"], "run directory not found"),
        (["info", "/no/such/run"], "run directory not found"),
        (["train", "--resume", "/no/such/run"], "run directory not found"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(argv, expect, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("seqlab: error:") and expect in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_predict_bad_inputs(tmp_path, capsys):
    files = tiny_classification(tmp_path)
    run = tmp_path / "run"
    assert main(["train", *[f"{k}={v}" for k, v in files.items()], *QUICK, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "  "]) == 2
    assert "empty text" in capsys.readouterr().err
    f = tmp_path / "in.txt"
    f.write_text("great film\n\nboring plot\n")
    assert main(["predict", str(run), "--file", str(f)]) == 2
    assert f"{f}:2: empty text" in capsys.readouterr().err
    f.write_bytes(b"great film\n\xff\xfe bad\n")
    assert main(["predict", str(run), "--file", str(f)]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    (run / "model.safetensors").write_bytes(b"garbage")
    assert main(["predict", str(run), "great"]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_existing_out_dir_is_refused(tmp_path, capsys):
    files = tiny_classification(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    assert main(["train", *[f"{k}={v}" for k, v in files.items()], *QUICK, "--out", str(run)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (run / "keep.txt").read_text() == "mine"
