"""Attention weights of the classifiers: padding never receives weight, and `seqlab predict --explain`
shows them end to end."""

import json

import pytest
import torch

import seqlab
from seqlab.cli import main
from tests.helpers import tiny_classification
from tests.test_models_encoders import batch, build

ATTENDING = ["lstm-additive", "gru-dot", "tf-cls-preln-sin", "tf-attention-dot"]


@pytest.mark.parametrize("name", ATTENDING)
def test_a_padded_key_never_receives_attention_weight(name):
    model = build(name).eval()
    with torch.no_grad():
        logits, weights = model(*batch(5), return_attention=True)
        _, noisy = model(*batch(9, pad_with="noise"), return_attention=True)
    tokens, lengths = batch(9)
    padding = torch.arange(9)[None, :] >= lengths[:, None]
    assert weights.shape == (len(lengths), 5) and noisy.shape == (len(lengths), 9)
    assert noisy[padding].eq(0).all() and weights[padding[:, :5]].eq(0).all()
    torch.testing.assert_close(noisy.sum(dim=1), torch.ones(len(lengths)))
    torch.testing.assert_close(noisy[:, :5], weights, atol=1e-5, rtol=1e-5)
    assert weights[lengths == 1, 0].eq(1).all()  # a one-token text puts all its weight on that token
    torch.testing.assert_close(logits, model(*batch(5)))  # asking for the weights changes no logit


def _train(tmp_path, name, overrides):
    files = tiny_classification(tmp_path, n_train=120, n_test=20)
    over = {**files, "train.epochs": 2, "train.optimizer": "adam", "train.lr": 0.01, **overrides}
    return seqlab.train(None, over, out=tmp_path / name, quiet=True)


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    return _train(tmp, "rnn", {"model": "rnn", "model.dim": 8, "model.hidden": 8,
                               "model.pooling": "attention", "task.max_len": 6})


def test_predict_explain_prints_each_token_with_its_weight(attention_run, capsys):
    assert main(["predict", str(attention_run), "the film was great", "--explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[0] in ("pos", "neg")
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["the", "film", "was", "great"]
    assert abs(sum(float(r[1]) for r in rows) - 1) < 0.01


def test_predict_explain_json_adds_attention_and_respects_max_len(attention_run, capsys):
    text = "one two three four five six seven eight"  # unknown words, longer than task.max_len=6
    assert main(["predict", str(attention_run), text, "a", "--explain", "--json", "--top-k", "2"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert [tok for tok, _ in first["attention"]] == text.split()[:6]
    assert abs(sum(w for _, w in first["attention"]) - 1) < 1e-4
    assert second["attention"] == [["a", pytest.approx(1.0)]] and len(second["top_k"]) == 2


def test_explain_on_a_model_without_attention_is_a_user_error(tmp_path, capsys):
    run = _train(tmp_path, "cnn", {"model": "cnn", "model.dim": 8, "model.filters": 4})
    assert main(["predict", str(run), "a great film", "--explain"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "attention (--explain) needs a model with attention" in err and "'cnn'" in err
    assert main(["predict", str(run), "a great film"]) == 0  # without --explain it predicts
