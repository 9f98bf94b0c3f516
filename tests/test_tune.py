"""`seqlab tune`: the search space, the budget, pruning, the study's storage (resumed after kill -9), workers,
the report, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

import optuna  # noqa: E402

import seqlab  # noqa: E402
from seqlab.cli import main  # noqa: E402
from seqlab.config import make_config  # noqa: E402
from seqlab.data import read  # noqa: E402
from seqlab.errors import ConfigError  # noqa: E402
from seqlab.tuning import Param, parse_budget, parse_param, parse_size, search_space  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "seqlab" / "data" / "sample"


@pytest.fixture(scope="module")
def news(tmp_path_factory) -> dict[str, str]:
    """900 AG_NEWS sample rows as train (a fifth held out as valid) and 200 as test: real text, 4 classes, small
    enough for trials of a second or two."""
    root = tmp_path_factory.mktemp("news")
    rows = list(read(SAMPLE / "ag_news_train.csv.gz", format="csv"))
    files = {}
    for split, part in (("train", rows[:900]), ("test", rows[900:1100])):
        path = root / f"{split}.csv"
        path.write_text("".join(f'"{ex.labels[0]}","{ex.text.replace(chr(34), "")}"\n' for ex in part),
                        encoding="utf-8")
        files[f"data.{split}"] = str(path)
    return {**files, "data.valid_fraction": 0.2, "task.min_freq": 1, "threads": 1}


def overrides(news: dict, **more) -> list[str]:
    return [f"{k}={v}" for k, v in {**news, **more}.items()]


# ---------------------------------------------------------------------------------------------- the space
def test_a_parameter_is_a_choice_a_range_or_a_range_around_the_preset_value():
    assert parse_param("task.ngrams", [1, 2, 3], 2) == Param("task.ngrams", "choice", choices=(1, 2, 3))
    assert parse_param("model.dropout", {"low": 0.0, "high": 0.5}, 0.1) == Param("model.dropout", "float", 0.0, 0.5)
    assert parse_param("model.dim", {"low": 16, "high": 64, "step": 16}, 32).kind == "int"
    lr = parse_param("train.lr", {"times": [0.1, 10]}, 0.3)
    assert (lr.kind, lr.log) == ("float", True) and lr.low == pytest.approx(0.03) and lr.high == pytest.approx(3.0)
    epochs = parse_param("train.epochs", {"times": [0.5, 3]}, 5)
    assert (epochs.kind, epochs.low, epochs.high) == ("int", 2, 15)  # an integer key stays an integer


@pytest.mark.parametrize("spec, base, message", [
    ([], 1, "empty list"),
    ({"low": 1}, 1, "give both low and high"),
    ({"low": 2, "high": 1}, 1, "above high"),
    ({"low": 0.0, "high": 1.0, "log": True}, 1, "log range needs low > 0"),
    ({"times": [0.1]}, 1.0, "two positive numbers"),
    ({"times": [0.5, 2]}, None, "positive preset value"),
    ({"lo": 1, "high": 2}, 1, "did you mean 'low'"),
    ("fast", 1, "expected a list"),
])
def test_a_malformed_parameter_is_one_clear_error(spec, base, message):
    with pytest.raises(ConfigError, match=message):
        parse_param("train.lr", spec, base)


def test_the_default_space_joins_the_trainer_s_and_the_model_s_and_an_override_fixes_a_key(news):
    bag = {p.key for p in search_space("sample/bag", dict(news))}
    assert {"train.lr", "train.epochs", "train.batch_size", "model.dim", "task.ngrams"} <= bag
    assert "train.weight_decay" not in bag  # sparse gradients: no weight decay for the bag
    cnn = {p.key for p in search_space(None, {**news, "model": "cnn"})}
    assert {"model.dropout", "train.weight_decay", "train.lr"} <= cnn and "task.ngrams" not in cnn
    fixed = {p.key for p in search_space("sample/bag", {**news, "train.lr": 0.1})}
    assert "train.lr" not in fixed and "train.epochs" in fixed


def test_a_preset_narrows_and_extends_the_space(tmp_path, news):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: bag\ntune:\n  train.lr: {low: 0.05, high: 0.5}\n  task.ngrams: null\n"
                      "  train.warmup_steps: [0, 10]\n")
    params = {p.key: p for p in search_space(str(preset), dict(news))}
    assert params["train.lr"] == Param("train.lr", "float", 0.05, 0.5)
    assert "task.ngrams" not in params and params["train.warmup_steps"].choices == (0, 10)
    assert make_config(str(preset)).model == "bag"  # `seqlab train` reads the same preset, tune: left aside


@pytest.mark.parametrize("section, message", [
    ("  train.lrr: {low: 0.1, high: 1.0}\n", "unknown key 'train.lrr'; did you mean 'train.lr'"),
    ("  model.dropout: {low: 0.0, high: 1.5}\n", r"model.dropout = 1.5 is not a valid value"),
    ("  train.lr: null\n  train.epochs: null\n  train.batch_size: null\n  model.dim: null\n  model.dropout: null\n"
     "  task.ngrams: null\n  task.min_freq: null\n", "search space is empty"),
])
def test_a_bad_space_is_refused_before_any_trial(tmp_path, news, section, message):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: bag\ntune:\n" + section)
    with pytest.raises(ConfigError, match=message):
        search_space(str(preset), dict(news))


def test_a_budget_is_a_duration():
    assert [parse_budget(b) for b in ("10m", "90s", "1.5h", "300", " 2m ")] == [600, 90, 5400, 300, 120]
    for bad in ("0", "0s", "-5m", "ten minutes", "5d", ""):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)


def test_a_size_is_bytes():
    assert [parse_size(x) for x in ("2M", "500K", "1.5g", "1000", "3MB")] == [2_000_000, 500_000, 1_500_000_000,
                                                                             1000, 3_000_000]
    for bad in ("0", "2T", "big", "-1M"):
        with pytest.raises(ConfigError, match="--max-size"):
            parse_size(bad)


# ---------------------------------------------------------------------------------------------- the trainer
def test_on_valid_sees_every_evaluation_and_may_stop_the_run(tmp_path, news):
    seen = []

    class Stop(Exception):
        pass

    def on_valid(n, valid):
        seen.append((n, valid["accuracy"]))
        if n == 2:
            raise Stop

    with pytest.raises(Stop):
        seqlab.train(None, {**news, "train.epochs": 6}, out=tmp_path / "r", quiet=True, on_valid=on_valid)
    assert [n for n, _ in seen] == [1, 2]
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["epoch"] for r in records if r["split"] == "train_epoch") == 2


def test_max_seconds_stops_training_and_keeps_the_best_weights_of_what_ran(tmp_path, news):
    run = seqlab.train(None, {**news, "train.epochs": 10_000, "train.max_seconds": 0.5, "train.early_stopping": None},
                       out=tmp_path / "r", quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in epochs if r["split"] == "train_epoch"]) < 10_000
    assert "valid" in summary["results"] and "test" in summary["results"]
    assert summary["fit_seconds"] < summary["wall_seconds"]


def test_a_trial_neither_reads_nor_evaluates_the_test_split(tmp_path, news):
    run = seqlab.train(None, {**news, "data.test": str(tmp_path / "missing.csv"), "train.epochs": 1},
                       out=tmp_path / "r", quiet=True, test=False)  # the test file is never opened
    summary = json.loads((run / "summary.json").read_text())
    assert "test" not in summary["results"] and "test_examples" not in summary["counts"]


def test_an_unknown_train_metric_is_one_clear_error(tmp_path, news):
    with pytest.raises(ConfigError, match="train.metric 'bleu' is not a valid metric of this task .*accuracy"):
        seqlab.train(None, {**news, "train.metric": "bleu", "train.epochs": 1}, out=tmp_path / "r", quiet=True)


# ---------------------------------------------------------------------------------------------- a study
def trial_params(out: Path) -> list[dict]:
    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")
    return [t.params for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


def test_a_study_writes_trials_as_runs_links_the_best_and_tests_it_once(tmp_path, news, capsys):
    out = tmp_path / "study"
    assert main(["tune", "sample/bag", *overrides(news, **{"train.epochs": 2}), "--trials", "3", "--out",
                 str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("trial ") for line in lines) == 3 and lines[-2].startswith("best: trial ")
    result = json.loads((out / "result.json").read_text())
    assert result["trials"]["COMPLETE"] + result["trials"]["PRUNED"] == 3
    best = out / "trials" / str(result["best_trial"])
    assert (out / "best").resolve() == best.resolve()
    for n in range(3):  # each trial an ordinary run: config, metrics, weights; never its test split
        trial = out / "trials" / str(n)
        assert (trial / "config.yaml").is_file() and (trial / "model.safetensors").is_file()
        assert not (trial / "checkpoints").exists()
        assert all(json.loads(x)["split"] != "test" for x in (trial / "metrics.jsonl").read_text().splitlines())
    assert set(result["test"]) >= {"accuracy", "loss"} and result["valid"] == max(
        json.loads((out / "trials" / str(n) / "summary.json").read_text())["results"]["valid"]["accuracy"]
        for n in range(3) if (out / "trials" / str(n) / "summary.json").is_file())
    tree = yaml.safe_load((out / "best.yaml").read_text())
    assert tree["train"]["max_seconds"] is None
    cfg = make_config(str(out / "best.yaml"))  # the best config is a preset
    for key, value in result["best_params"].items():
        section, name = key.split(".")
        assert getattr({"train": cfg.train, "model": cfg.model_options, "task": cfg.task_options}[section],
                       name) == value
    report = (out / "report.md").read_text()
    assert "| trial | state | valid |" in report and "history.png" in report and (out / "history.png").is_file()


def test_the_budget_is_shared_out_to_the_trials(tmp_path, news):
    out = tmp_path / "study"
    result = seqlab.tune("sample/bag", overrides(news, **{"train.epochs": 400, "train.early_stopping": "null"}),
                         out=out, budget=6, quiet=True)
    limits = [yaml.safe_load((out / "trials" / n / "config.yaml").read_text())["train"]["max_seconds"]
              for n in sorted(os.listdir(out / "trials"), key=int)]
    assert limits and all(0 < m <= 6 for m in limits)
    assert limits == sorted(limits, reverse=True)  # each trial gets what is left
    assert result["trials"]["COMPLETE"] >= 1


def test_a_study_killed_mid_trial_continues_to_the_same_trials_and_best(tmp_path, news):
    """kill -9 during a trial, the same command again: the cut trial is marked failed and drawn again, and the
    finished trials (and so the best) are those of an uninterrupted study with the same --trials and seed."""
    args = overrides(news, **{"train.epochs": 30, "train.early_stopping": "null"})
    command = [sys.executable, "-m", "seqlab.cli", "tune", "sample/bag", *args, "--trials", "3", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*command, "--out", str(killed)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    metrics = killed / "trials" / "1" / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):  # trial 1 is training
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run([*command, "--out", str(killed)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    whole = tmp_path / "whole"
    straight = subprocess.run([*command, "--out", str(whole)], env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{killed / 'study.db'}")
    assert [t.state.name for t in study.trials].count("FAIL") == 1  # the cut trial
    assert trial_params(killed) == trial_params(whole) and len(trial_params(whole)) == 3
    first, second = (json.loads((d / "result.json").read_text()) for d in (killed, whole))
    assert first["best_params"] == second["best_params"] and first["valid"] == second["valid"]


def test_two_workers_share_one_study(tmp_path, news):
    out = tmp_path / "study"
    result = seqlab.tune("sample/bag", overrides(news, **{"train.epochs": 2}), out=out, trials=4, workers=2,
                         quiet=True)
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{out / 'study.db'}")
    assert result["trials"]["COMPLETE"] + result["trials"]["PRUNED"] >= 4
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2


def test_max_size_quantizes_the_trials_that_do_not_fit_and_scores_them_so(tmp_path, news):
    out = tmp_path / "study"
    result = seqlab.tune("sample/bag", {**news, "train.epochs": 2, "task.ngrams": 2, "model.dim": 32}, out=out,
                         trials=2, quiet=True, max_size=150_000)
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{out / 'study.db'}")
    for t in study.trials:
        q = t.user_attrs["quantized"]  # the full runs (about 1 MB) do not fit: each trial was quantized
        assert q["bytes"] <= 150_000 and q["cutoff"] is not None and t.value == q["valid"]
        assert seqlab.evaluate(q["run"], split="valid")["accuracy"] == pytest.approx(q["valid"])
    assert result["best_bytes"] <= 150_000 and (out / "best").resolve().name.endswith(".q")
    assert "seqlab quantize RUN --out RUN_Q --dsub 2 --cutoff" in (out / "best.yaml").read_text()


def test_a_folder_holding_another_study_is_refused(tmp_path, news, capsys):
    out = tmp_path / "study"
    assert main(["tune", "sample/bag", *overrides(news, **{"train.epochs": 1}), "--trials", "1", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["tune", "sample/bag", *overrides(news, **{"train.epochs": 2}), "--trials", "1", "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "holds a study of another preset" in err


@pytest.mark.parametrize("extra, message", [
    (["--budget", "0"], "--budget must be positive"),
    (["--budget", "soon"], "--budget must be a duration"),
    ([], "give --budget"),
    (["--trials", "1", "--storage", "sqlite:////nonexistent/folder/study.db"], "cannot open the study's storage"),
    (["--trials", "1", "--storage", "study.db"], "must be a database URL"),
    (["--trials", "1", "--metric", "bleu"], "train.metric 'bleu' is not a valid metric"),
    (["--trials", "1", "train.lrr=0.1"], "unknown key train.lrr; did you mean 'lr'"),
    (["--trials", "1", "--max-size", "1M", "model=cnn"], "--max-size quantizes bag-of-n-grams models"),
    (["--trials", "1", "--max-size", "huge"], "--max-size must be a size"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, news, capsys, extra, message):
    code = main(["tune", "sample/bag", *overrides(news, **{"train.epochs": 1}), "--out", str(tmp_path / "s"),
                 "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_a_tuning_folder_that_cannot_be_created_is_one_line(tmp_path, news, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["tune", "sample/bag", *overrides(news), "--trials", "1", "--out", str(blocker / "s")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "cannot create the tuning folder" in err
