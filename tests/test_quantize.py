"""`seqlab quantize`, as `fasttext quantize`: rows of largest norm kept, the embedding product-quantized with
its norms apart; the quantized run directory loads, predicts, evaluates and exports like any other."""

from __future__ import annotations

import json

import pytest
import torch

import seqlab
from seqlab.cli import main
from seqlab.models.bag import BagClassifier, BagConfig, dequantize, product_quantize, quantize_rows
from tests.helpers import tiny_classification

FAST = {"train.optimizer": "adam", "train.lr": 0.05, "train.schedule": "constant", "train.epochs": 4,
        "model.dim": 8}


def test_product_quantization_codes_bytes_and_rebuilds_clustered_rows():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g)
    rows = centres[torch.randint(4, (500,), generator=g)] + 0.001 * torch.randn(500, 8, generator=g)
    codes, books = product_quantize(rows, dsub=2)
    assert codes.dtype == torch.uint8 and codes.shape == (500, 4) and books.shape == (4, 256, 2)
    assert (dequantize(codes, books) - rows).abs().max() < 0.01
    again = product_quantize(rows, dsub=2)
    assert torch.equal(again[0], codes) and torch.equal(again[1], books)  # seeded
    with pytest.raises(ValueError, match="must divide"):
        product_quantize(rows, dsub=3)


def test_quantized_weights_load_into_a_bag_model():
    torch.manual_seed(0)
    model = BagClassifier(BagConfig(dim=8), vocab_size=50, num_classes=3)
    state = {k: v for k, v in model.state_dict().items() if k != "embedding.weight"}
    state.update({f"embedding.{k}": v for k, v in quantize_rows(model.embedding.weight.detach(), 2).items()})
    fresh = BagClassifier(BagConfig(dim=8), vocab_size=50, num_classes=3)
    fresh.load_state_dict(state)
    err = (fresh.embedding.weight - model.embedding.weight).norm(dim=1) / model.embedding.weight.norm(dim=1)
    assert err.mean() < 0.2  # 50 random rows: 256 centroids per pair of numbers nearly cover them


@pytest.mark.parametrize("over", [{}, {"task.ngram_buckets": 1000}])
def test_a_quantized_run_is_smaller_and_predicts_evaluates_and_exports(tmp_path, capsys, over):
    files = tiny_classification(tmp_path)
    run = seqlab.train(None, {**files, **FAST, **over}, out=tmp_path / "run", quiet=True, log=None)
    out = tmp_path / "q"
    assert main(["quantize", str(run), "--out", str(out), "--cutoff", "30", "--dsub", "4"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"quantized {run} to {out}: ") and "test accuracy" in line
    q = json.loads((out / "quantize.json").read_text())
    assert q["bytes_after"] < q["bytes_before"] and q["test_after"]["accuracy"] > 0.8  # codebooks dominate here
    vocab = json.loads((out / "vocab.json").read_text())
    if over:  # hashed n-grams: the words stay, 30 of the 1000 buckets are kept
        assert len(vocab["kept_buckets"]) == 30 and q["rows"] == len(vocab["vocab"]["itos"]) + 30
    else:  # vocabulary n-grams: 30 entries are kept beside the specials
        assert len(vocab["vocab"]["itos"]) == 32 and q["rows"] == 32
    before, after = seqlab.load(run), seqlab.load(out)
    texts = ["a great and funny film", "the plot was dull"]
    assert [r["label"] for r in before.predict(texts)] == [r["label"] for r in after.predict(texts)]
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == q["test_after"]["accuracy"]
    assert main(["export", str(out), "--out", str(tmp_path / "onnx" / "model.onnx")]) == 0


def test_what_cannot_be_quantized_is_one_line(tmp_path, capsys):
    files = tiny_classification(tmp_path)
    cnn = seqlab.train(None, {**files, **FAST, "model": "cnn", "model.filters": 4}, out=tmp_path / "cnn",
                       quiet=True, log=None)
    assert main(["quantize", str(cnn), "--out", str(tmp_path / "q")]) == 2
    assert "quantize covers the bag of n-grams (model=bag); this run's model is 'cnn'" in capsys.readouterr().err
    bag = seqlab.train(None, {**files, **FAST}, out=tmp_path / "bag", quiet=True, log=None)
    assert main(["quantize", str(bag), "--out", str(tmp_path / "q"), "--dsub", "3"]) == 2
    assert "dsub 3 must divide the embedding's dimension 8" in capsys.readouterr().err
    assert main(["quantize", str(bag), "--out", str(cnn)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
