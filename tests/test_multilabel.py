"""Multi-label classification on fastText's ground: `__label__a __label__b` lines train one sigmoid per label
(fastText's -loss ova), thresholds tuned on valid, fastText's P@1/R@1, labels unseen in training counted as
missed, and fastText files with bad lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import seqlab
from seqlab.cli import main
from seqlab.tasks.metrics import multilabel_f1, precision_recall_at_k, tune_thresholds

TOPICS = {"sport": ["match", "goal", "team", "coach"], "money": ["bank", "price", "stock", "market"],
          "food": ["pizza", "bread", "cheese", "soup"], "music": ["song", "band", "guitar", "album"]}
FILL = ["the", "a", "and", "of", "in", "was", "new", "today"]


def lines(n: int, seed: int, extra: str | None = None) -> str:
    """fastText lines of 1-3 topics, each topic adding two of its words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topics = rng.sample(sorted(TOPICS), rng.randint(1, 3))
        words = [w for t in topics for w in rng.sample(TOPICS[t], 2)] + rng.sample(FILL, 3)
        rng.shuffle(words)
        labels = [f"__label__{t}" for t in topics] + ([f"__label__{extra}"] if extra else [])
        out.append(" ".join(labels + words))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml")
    (root / "train.txt").write_text(lines(400, 1))
    (root / "test.txt").write_text(lines(60, 2))
    return seqlab.train(None, {"data.train": str(root / "train.txt"), "data.test": str(root / "test.txt"),
                               "train.optimizer": "adam", "train.lr": 0.05, "train.schedule": "constant",
                               "train.epochs": 8, "model.dim": 16}, out=root / "run", quiet=True, log=None)


def test_several_labels_per_line_train_one_sigmoid_per_label(run):
    blob = json.loads((run / "vocab.json").read_text())
    assert blob["multi_label"] is True and len(blob["thresholds"]) == 4
    test = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert test["split"] == "test" and test["p@1"] > 0.9 and test["micro_f1"] > 0.85
    assert {"r@1", "macro_f1", "loss"} <= set(test)
    predictor = seqlab.load(run)
    (r,) = predictor.predict(["the coach and the team scored a goal; the bank price fell"], top_k=2)
    assert {label for label, _ in r["labels"]} == {"sport", "money"}
    probs = dict(r["top_k"])
    assert set(probs) == {"sport", "money"} and all(p > 0.5 for p in probs.values())  # independent sigmoids
    (none,) = predictor.predict(["the and of today"], threshold=0.99)
    assert none["labels"] == [] and predictor.format_text(none) == "-"


def test_labels_unseen_in_training_count_as_missed_but_not_in_p_at_1(run, tmp_path):
    path = tmp_path / "unseen.txt"
    path.write_text(lines(30, 3, extra="teflon"))
    with pytest.warns(UserWarning, match="'teflon' does not occur in the training data"):
        rep = seqlab.evaluate(run, data=str(path))
    assert rep["p@1"] > 0.9  # fastText's P@1 leaves unseen labels out
    assert rep["micro_f1"] < 0.9  # F1 counts each teflon as a miss


def test_cli_predict_threshold_and_evaluate(run, capsys):
    assert main(["predict", str(run), "pizza and cheese soup", "--threshold", "0.5"]) == 0
    assert capsys.readouterr().out.startswith("food ")
    assert main(["evaluate", str(run), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["p@1"] > 0.9 and set(rep["thresholds"]) == set(TOPICS)
    assert main(["predict", str(run), "pizza", "--threshold", "1.5"]) == 2
    assert "threshold must be in [0, 1]" in capsys.readouterr().err


def test_p_and_r_at_k_are_fasttexts():
    """`fasttext test` on the lines of the docstring of precision_recall_at_k: examples whose gold labels are
    all unknown are left out, unknown gold labels of the others too (measured with fastText 0.9: N 3,
    P@1 1.0, R@1 1.0; P@2 0.5, R@2 1.0)."""
    scores = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    gold = [[0], [2], [0, 2], [1]]  # label 2 was never seen in training
    assert precision_recall_at_k(scores, gold, 1) == (1.0, 1.0, 3)
    assert precision_recall_at_k(scores, gold, 2) == (0.5, 1.0, 3)


def test_multilabel_f1_and_tuned_thresholds():
    decided = np.array([[True, False], [True, True], [False, False]])
    f1 = multilabel_f1(decided, [[0], [0, 1], [2]], 3)
    assert f1["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))
    assert f1["macro_f1"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    probs = np.array([[0.3, 0.9], [0.25, 0.1], [0.1, 0.8], [0.35, 0.2]])
    thresholds = tune_thresholds(probs, [[0, 1], [0], [1], [0]])
    assert thresholds[0] <= 0.25 and 0.2 < thresholds[1] <= 0.8


@pytest.mark.parametrize("bad, words", [
    ("__label__sport\n", "empty text"),
    ("__label__ goal team\n", "empty label"),
    ("goal team no label\n", "no label"),
    ("__lab__sport goal team\n", "no label"),
])
def test_bad_fasttext_lines_are_one_line_or_skipped_and_counted(tmp_path, capsys, bad, words):
    train = tmp_path / "train.txt"
    good = lines(40, 5).splitlines()
    train.write_text("\n".join(good[:20]) + "\n\n" + bad + "\n".join(good[20:]) + "\n")  # line 21 is empty
    args = ["train", f"data.train={train}", "train.epochs=1", "--quiet", "--out"]
    assert main([*args, str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{train}:22: {words}" in err[0]
    assert main([*args, str(tmp_path / "b"), "--skip-bad-rows"]) == 0
    counts = json.loads((tmp_path / "b" / "summary.json").read_text())["counts"]
    assert counts["skipped_rows"][str(train)] == 1
