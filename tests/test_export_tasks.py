"""ONNX export of the taggers and the image ConvNet (seqlab.serve.export), and the dynamo exporter."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime (pip install 'seqlab[serve]')")

import seqlab  # noqa: E402
from seqlab.data.images import load_digits_arrays  # noqa: E402
from seqlab.serve.export import export_onnx, load_onnx  # noqa: E402
from tests.test_serve_runs import TAG, train_image, train_tag  # noqa: E402


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return train_image(tmp_path_factory.mktemp("export-image"))


@pytest.mark.parametrize(("model", "char"), [(model, "cnn") for model in TAG] + [("rnn", "lstm")])
def test_taggers_export_and_tag_as_pytorch(model, char, tmp_path):
    run = train_tag(tmp_path, model, **{"model.char": char})
    out = tmp_path / "onnx" / "model.onnx"
    meta = export_onnx(run, out, exporter="torchscript")
    assert meta["max_abs_diff"] <= 1e-4 and meta["inputs"] == ["words", "chars", "lengths"]
    assert meta["dynamic_axes"]["chars"] == {"0": "batch", "1": "time", "2": "letters"}
    sentences = [["the", "big", "cat", "sees", "a", "dog"], ["a", "fox"],
                 ["an", "unseen", "extraordinarily-long-word"]]
    got, want = load_onnx(out).predict(sentences), seqlab.load(run).predict(sentences)
    assert [g["tags"] for g in got] == [w["tags"] for w in want]
    probabilities = lambda results: [p for r in results for p in r["probabilities"]]  # noqa: E731
    np.testing.assert_allclose(probabilities(got), probabilities(want), atol=1e-5)


def test_the_image_convnet_exports_with_its_labels_and_classifies_as_pytorch(image_run, tmp_path):
    out = tmp_path / "model.onnx"
    meta = export_onnx(image_run, out, exporter="torchscript")
    assert meta["max_abs_diff"] <= 1e-4 and meta["inputs"] == ["images"]
    assert (tmp_path / "labels.json").is_file()
    x, _ = load_digits_arrays()
    got, want = load_onnx(out).predict(x[:50], top_k=2), seqlab.load(image_run).predict(x[:50], top_k=2)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    np.testing.assert_allclose([g["probability"] for g in got], [w["probability"] for w in want], atol=1e-5)


@pytest.mark.slow  # torch.export + onnxscript take 5-15 s per model on these CPUs
def test_the_dynamo_exporter_exports_the_convnet(image_run, tmp_path):
    meta = export_onnx(image_run, tmp_path / "model.onnx")  # auto: dynamo first
    assert meta["exporter"] == "dynamo" and meta["exporters_failed"] == [] and meta["max_abs_diff"] <= 1e-4
    beside = sorted(p.name for p in tmp_path.iterdir())
    assert beside == ["config.yaml", "export.json", "labels.json", "model.onnx"]
