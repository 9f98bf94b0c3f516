"""End to end through the API: train, resume, determinism, load/predict, evaluate."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import seqlab
from seqlab.errors import CheckpointError, ConfigError, DataError
from seqlab.train.checkpoint import checkpoint_dirs
from tests.helpers import LECTURE, tiny_classification, write_csv

FAST = {**LECTURE, "train.epochs": 3, "model.dim": 16}


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def test_train_writes_a_complete_run_directory(tmp_path):
    files = tiny_classification(tmp_path)
    run = seqlab.train(None, {**files, **FAST}, out=tmp_path / "run", quiet=True)
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "vocab.json", "model.safetensors", "metrics.jsonl", "checkpoints", "summary.json"} <= names
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["split"] == "test" and lines[-1]["accuracy"] > 0.9
    assert [x["epoch"] for x in lines if x["split"] == "valid"] == [1, 2, 3]
    assert not list(tmp_path.glob(".run.partial-*"))


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    files = tiny_classification(tmp_path)
    a = seqlab.train(None, {**files, **FAST}, out=tmp_path / "a", quiet=True)
    b = seqlab.train(None, {**files, **FAST}, out=tmp_path / "b", quiet=True)
    c = seqlab.train(None, {**files, **FAST, "seed": 1}, out=tmp_path / "c", quiet=True)
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_from_a_mid_epoch_checkpoint_gives_identical_weights(tmp_path, optimizer):
    files = tiny_classification(tmp_path)
    over = {**files, **FAST, "train.optimizer": optimizer, "train.lr": 4.0 if optimizer == "sgd" else 0.01,
            "train.checkpoint_every": 5, "train.keep_checkpoints": 100, "model.dropout": 0.3}
    full = seqlab.train(None, over, out=tmp_path / "full", quiet=True)
    ckpts = checkpoint_dirs(full)
    # 228 train examples (5% held out), batch 16: 15 steps per epoch; step 25 is inside epoch 2
    mid = next(c for c in ckpts if c.name == "step-000000025")
    part = tmp_path / "part"
    part.mkdir()
    for f in ("config.yaml", "vocab.json"):
        shutil.copy(full / f, part / f)
    shutil.copytree(mid, part / "checkpoints" / mid.name)
    lines = int(torch.load(mid / "train_state.pt", weights_only=True)["metrics_lines"])
    (part / "metrics.jsonl").write_text("".join((full / "metrics.jsonl").read_text().splitlines(True)[:lines]))
    # a run killed at step 25 holds the best weights so far: those of epoch 1's end (step 15)
    shutil.copy(mid.parent / "step-000000015" / "model.safetensors", part / "model.safetensors")
    resumed = seqlab.train(resume=part, quiet=True)
    last_full = torch.load(checkpoint_dirs(full)[-1] / "train_state.pt", weights_only=True)
    last_part = torch.load(checkpoint_dirs(resumed)[-1] / "train_state.pt", weights_only=True)
    wf = load_file(str(checkpoint_dirs(full)[-1] / "model.safetensors"))
    wp = load_file(str(checkpoint_dirs(resumed)[-1] / "model.safetensors"))
    assert all(torch.equal(wf[k], wp[k]) for k in wf)
    assert last_full["global_step"] == last_part["global_step"]
    full_lines = (full / "metrics.jsonl").read_text().splitlines()
    part_lines = (resumed / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "examples_per_s")} for x in full_lines]
    strip2 = [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "examples_per_s")} for x in part_lines]
    assert [x["split"] for x in strip] == [x["split"] for x in strip2]
    assert strip[-1] == strip2[-1]
    assert all(torch.equal(v, weights(resumed)[k]) for k, v in weights(full).items())


def test_load_and_predict(tmp_path):
    files = tiny_classification(tmp_path)
    run = seqlab.train(None, {**files, **FAST}, out=tmp_path / "run", quiet=True)
    model = seqlab.load(run)
    out = model.predict(["the film was great and charming", "a dull and tedious plot"], top_k=2)
    assert [o["label"] for o in out] == ["pos", "neg"]
    assert abs(sum(p for _, p in out[0]["top_k"]) - 1.0) < 1e-5
    assert out[0]["probability"] == out[0]["top_k"][0][1]


def test_evaluate_report_on_own_test_split_and_on_a_file(tmp_path):
    files = tiny_classification(tmp_path)
    run = seqlab.train(None, {**files, **FAST}, out=tmp_path / "run", quiet=True)
    rep = seqlab.evaluate(run)
    assert rep["accuracy"] > 0.9 and set(rep["per_class"]) == {"neg", "pos"}
    assert sum(map(sum, rep["confusion_matrix"]["matrix"])) == 60
    other = write_csv(tmp_path / "other.csv", [("pos", "superb acting"), ("neg", "awful plot")])
    rep2 = seqlab.evaluate(run, data=str(other))
    assert rep2["examples"] == 2
    unseen = write_csv(tmp_path / "unseen.csv", [("pos", "superb acting"), ("meh", "so so")])
    with pytest.warns(UserWarning, match="label 'meh' does not occur in the training data"):
        rep3 = seqlab.evaluate(run, data=str(unseen))
    assert rep3["per_class"]["meh"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rep3["accuracy"] <= 0.5 and rep3["p@1"] == 1.0 and rep3["r@1"] == 1.0  # fastText leaves "meh" out


def test_user_errors_leave_nothing_behind(tmp_path):
    files = tiny_classification(tmp_path)
    with pytest.raises(DataError):
        seqlab.train(None, {**files, "data.train": str(tmp_path / "missing.csv")}, out=tmp_path / "r1", quiet=True)
    assert not (tmp_path / "r1").exists() and not list(tmp_path.glob(".r1*"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError):
        seqlab.train(None, {**files, "data.train": str(tmp_path / "empty.csv")}, out=tmp_path / "r2", quiet=True)
    assert not (tmp_path / "r2").exists()
    with pytest.raises(ConfigError, match="did you mean"):
        seqlab.train(None, {**files, "train.epoch": 2}, out=tmp_path / "r4", quiet=True)


def test_resume_refuses_changed_keys_and_foreign_runs(tmp_path):
    files = tiny_classification(tmp_path)
    run = seqlab.train(None, {**files, **FAST}, out=tmp_path / "run", quiet=True)
    with pytest.raises(ConfigError, match="cannot change model.dim"):
        seqlab.train(resume=run, overrides={"model.dim": 8}, quiet=True)
    cfg = (run / "config.yaml").read_text().replace("format_version: 2", "format_version: 7")
    (run / "config.yaml").write_text(cfg)
    with pytest.raises(CheckpointError, match="format_version 7 is not supported"):
        seqlab.load(run)
    with pytest.raises(CheckpointError, match="not found"):
        seqlab.load(tmp_path / "nope")


def test_leak_guard_counts_and_drops(tmp_path):
    rows = [("pos", "great film"), ("neg", "dull film")] * 20 + [("pos", "superb plot"), ("neg", "Awful  Plot")]
    train = write_csv(tmp_path / "tr.csv", rows)
    test = write_csv(tmp_path / "te.csv", [("pos", "SUPERB plot"), ("neg", "awful plot"), ("pos", "new text")])
    over = {"data.train": str(train), "data.test": str(test), "data.valid_fraction": 0.0, "train.epochs": 1}
    msgs = []
    run = seqlab.train(None, over, out=tmp_path / "a", log=msgs.append)
    assert any("leak guard" in m and "train/test: 2" in m for m in msgs)
    run = seqlab.train(None, {**over, "task.leak": "drop"}, out=tmp_path / "b", quiet=True)
    counts = json.loads((run / "summary.json").read_text())["counts"]
    assert counts["dropped_from_train"] == 2 and counts["train_examples"] == 40
