"""A new user's first hour, at the command line where they meet it: every verb on every task without a
traceback, arguments in any order, data of another layout, the habits people bring from other tools, and
what they look for (--version, help, presets, completion)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import seqlab
from seqlab.cli import main
from seqlab.train.trainer import progress_span
from tests.helpers import sentiment_rows, tiny_classification, write_csv
from tests.test_serve_runs import train_caption, train_classify, train_lm, train_tag, train_translate

QUICK = ["train.epochs=2", "model.dim=8", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"classify": train_classify(root), "tag": train_tag(root), "lm": train_lm(root),
            "translate": train_translate(root), "caption": train_caption(root),
            "attends": train_classify(root, "rnn", **{"model.pooling": "attention"})}


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seqlab: error:"), err
    return err[0]


# ---------------------------------------------------------------------------------------------- no traceback
@pytest.mark.parametrize("task, item", [("translate", "ein hund"), ("lm", "the cat"), ("tag", "the dog sees"),
                                        ("caption", "img/red.png")])
def test_predict_takes_a_run_of_any_task(runs, task, item, capsys):
    run = runs[task]
    if task == "caption":
        item = str(run.parent / item)
    assert main(["predict", str(run), item, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) & {"translation", "text", "tags", "caption"}
    assert seqlab.load(run).predict([item])  # and in Python, as the README says


@pytest.mark.parametrize("task, data, words", [
    ("classify", "ud_english", "holds conllu data, which task classify does not read"),
    ("tag", "multi30k", "holds parallel data, which task tag does not read"),
    ("lm", "ud_english", "holds conllu data, which task lm does not read"),
])
def test_evaluate_on_a_dataset_of_another_task_is_one_line(runs, task, data, words, capsys):
    assert main(["evaluate", str(runs[task]), "--data", data]) == 2
    assert words in one_error(capsys)


def test_plot_attention_into_a_new_folder_and_a_bad_name(runs, tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "att.png"
    assert main(["translate", str(runs["translate"]), "ein hund", "--plot-attention", str(out)]) == 0
    assert out.is_file() and capsys.readouterr().out.strip()  # the translation is printed too
    assert main(["translate", str(runs["translate"]), "ein hund", "--plot-attention", str(tmp_path / "a.txt")]) == 2
    assert "a picture's name must end in .png" in one_error(capsys)
    picture = str(runs["caption"].parent / "img" / "red.png")
    assert main(["caption", str(runs["caption"]), picture, "--plot-attention", str(tmp_path / "c" / "x.png")]) == 0
    assert (tmp_path / "c" / "x.png").is_file()


# ---------------------------------------------------------------------------------------------- argument order
def test_options_and_overrides_in_any_order(tmp_path, capsys):
    files = tiny_classification(tmp_path)
    data = [f"{k}={v}" for k, v in files.items()]
    assert main(["train", data[0], "--out", str(tmp_path / "a"), data[1], "train.epochs=1", "--quiet"]) == 0
    assert main(["train", "--quiet", "sample/bag", "--out", str(tmp_path / "b"), "train.max_steps=5"]) == 0
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["train"]["max_steps"] == 5
    attends = train_classify(tmp_path, "rnn", **{"model.pooling": "attention"})
    capsys.readouterr()
    assert main(["predict", str(attends), "--explain", "a great film"]) == 0
    assert main(["predict", "--top-k", "2", str(attends), "a great film"]) == 0
    assert main(["evaluate", "--json", str(attends), "--split", "test"]) == 0
    assert main(["info", "--json", str(attends)]) == 0


def test_evaluate_a_file_of_another_layout_with_data_overrides(tmp_path, capsys):
    files = tiny_classification(tmp_path)  # trained on CSV
    run = tmp_path / "run"
    assert main(["train", *[f"{k}={v}" for k, v in files.items()], *QUICK, "--out", str(run)]) == 0
    other = tmp_path / "other.txt"
    other.write_text("".join(f"{lab}\t{text}\n" for lab, text in sentiment_rows(30, seed=5)), encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(other), "data.format=labeltext", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 30
    assert main(["evaluate", str(run), "--data", str(other), "train.lr=1"]) == 2
    assert "evaluate takes data.* overrides only" in one_error(capsys)


# ---------------------------------------------------------------------------------------------- habits
def test_a_single_class_training_set_is_warned_about(tmp_path, capsys):
    train = write_csv(tmp_path / "one.csv", [("pos", "a fine film"), ("pos", "good acting")] * 20)
    assert main(["train", f"data.train={train}", *QUICK, "--out", str(tmp_path / "run")]) == 0
    assert "the training data has a single label ('pos')" in capsys.readouterr().err


def test_resuming_a_finished_run_does_nothing(tmp_path, capsys):
    files = tiny_classification(tmp_path)
    run = tmp_path / "run"
    assert main(["train", *[f"{k}={v}" for k, v in files.items()], *QUICK, "--out", str(run)]) == 0
    before = (run / "summary.json").read_bytes(), (run / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert "is finished; nothing to resume" in capsys.readouterr().out
    assert ((run / "summary.json").read_bytes(), (run / "metrics.jsonl").read_bytes()) == before


def test_export_never_overwrites_a_users_files(runs, tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own\n")
    assert main(["export", str(runs["classify"]), "--out", str(mine / "model.onnx")]) == 2
    assert "holds files of its own (config.yaml" in one_error(capsys)
    assert (mine / "config.yaml").read_text() == "my own\n"
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(runs["classify"]), "--out", "model.onnx"]) == 2
    assert "export into a folder of its own" in one_error(capsys)
    assert not (tmp_path / "vocab.json").exists()


def test_out_on_a_non_empty_folder_is_refused_before_the_data_is_read(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    assert main(["train", "data.train=/no/such/file.csv", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "exists and is not empty" in one_error(capsys)


def test_top_k_zero_and_a_busy_port_are_user_errors(runs, capsys):
    assert main(["predict", str(runs["classify"]), "a film", "--top-k", "0"]) == 2
    assert "top_k must be at least 1, got 0" in one_error(capsys)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(runs["classify"]), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in one_error(capsys)


def test_a_run_stopped_before_its_end_says_so(tmp_path, capsys):
    files = tiny_classification(tmp_path)
    run = tmp_path / "run"
    assert main(["train", *[f"{k}={v}" for k, v in files.items()], *QUICK, "--out", str(run)]) == 0
    (run / "summary.json").unlink()  # as a run stopped by SIGTERM after a checkpoint
    (run / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert f"stopped before the end: finish it with `seqlab train --resume {run}`" in capsys.readouterr().out
    assert main(["predict", str(run), "a film"]) == 2
    assert f"finish it with `seqlab train --resume {run}`" in one_error(capsys)


def test_the_default_run_says_it_trained_on_the_bundled_sample(tmp_path):
    run = seqlab.train(None, {"train.max_steps": 3}, out=tmp_path / "run", quiet=True, log=None)
    assert yaml.safe_load((run / "config.yaml").read_text())["dataset"] == "sample"
    assert seqlab.info(run)["dataset"] == "sample"


def test_the_progress_bar_ends_where_max_steps_stops_the_run():
    assert progress_span(100, 0, 0, 0, 5, None) == (100, 5)
    assert progress_span(100, 0, 0, 0, 5, 30) == (30, 1)  # the first epoch is cut at step 30
    assert progress_span(100, 0, 100, 1, 5, 250) == (100, 3)  # epoch 2 of 3: 250 steps are 2.5 epochs
    assert progress_span(100, 20, 220, 2, 5, 250) == (50, 3)  # resumed mid-epoch 3: it ends at step 50


# ---------------------------------------------------------------------------------------------- what users look for
def test_version_help_presets_and_completion(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"seqlab {seqlab.__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "presets" in out and "completion" in out
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "sst2/bag" in out and "named datasets" in out and "train.lr = 4.0" in out
    assert main(["presets", "keys", "--json"]) == 0
    keys = json.loads(capsys.readouterr().out)["keys"]
    assert all(k["help"] for k in keys), [k["key"] for k in keys if not k["help"]]  # every key is explained
    for shell in ("bash", "zsh"):
        assert main(["completion", shell]) == 0
        assert "seqlab" in capsys.readouterr().out
    assert main(["trian"]) == 2
    assert "did you mean 'train'" in one_error(capsys)
    assert main(["train", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in one_error(capsys)


def test_every_argument_has_help():
    from seqlab.cli import VERBS, verb_parser

    for verb in VERBS:
        for action in verb_parser(verb)._actions:
            assert action.help, (verb, action.dest)


def test_presets_are_found_by_name_from_any_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "seqlab", "train", "trec/bag", "train.max_steps=1", "dataset=sample",
                           "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
