"""ONNX export of the classify models (seqlab.serve.export): parity with PyTorch checked by the export itself
and again through `load_onnx` / `seqlab predict --onnx`; the files beside the model; the exporter fallback;
an export whose parity check fails writes nothing; user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime (pip install 'seqlab[serve]')")

import seqlab  # noqa: E402
from seqlab.cli import main  # noqa: E402
from seqlab.errors import CheckpointError, ConfigError, SeqlabError  # noqa: E402
from seqlab.serve import export  # noqa: E402
from seqlab.serve.export import export_onnx, load_onnx  # noqa: E402
from tests.test_serve_runs import CLASSIFY, train_classify, train_lm  # noqa: E402

TEXTS = ["the film was great", "a dull , boring and very bland plot with weak acting", "superb"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {model: train_classify(root, model) for model in CLASSIFY}


@pytest.mark.parametrize("model", list(CLASSIFY))
def test_classify_models_export_with_dynamic_axes_and_predict_as_pytorch(runs, model, tmp_path):
    out = tmp_path / model / "model.onnx"
    meta = export_onnx(runs[model], out, exporter="torchscript")
    assert meta["max_abs_diff"] <= 1e-4 and meta["exporter"] == "torchscript" and meta["task"] == "classify"
    assert meta["inputs"] == (["text", "offsets"] if model == "bag" else ["tokens", "lengths"])
    assert "batch" in meta["dynamic_axes"]["logits"].values()
    beside = sorted(p.name for p in out.parent.iterdir())
    assert beside == ["config.yaml", "export.json", "model.onnx", "vocab.json"]
    assert json.loads((out.parent / "export.json").read_text()) == meta
    # other batch sizes and lengths than the export traced, through the run's own tokenization
    onnx_pred, torch_pred = load_onnx(out), seqlab.load(runs[model])
    texts = TEXTS * 3 + ["great " * 40]
    got, want = onnx_pred.predict(texts, top_k=2), torch_pred.predict(texts, top_k=2)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    probabilities = lambda results: [p for r in results for _, p in r["top_k"]]  # noqa: E731
    np.testing.assert_allclose(probabilities(got), probabilities(want), atol=1e-5)


def test_an_rnn_pooling_its_final_state_exports(tmp_path):
    """pooling=last reads each row's final state from the padded outputs: traceable, unlike a packed state."""
    run = train_classify(tmp_path, "rnn", **{"model.pooling": "last", "model.bidirectional": True})
    out = tmp_path / "onnx" / "model.onnx"
    assert export_onnx(run, out, exporter="torchscript")["max_abs_diff"] <= 1e-4
    texts = TEXTS + ["great " * 30]
    got, want = load_onnx(out).predict(texts, top_k=2), seqlab.load(run).predict(texts, top_k=2)
    np.testing.assert_allclose([p for r in got for _, p in r["top_k"]], [p for r in want for _, p in r["top_k"]],
                               atol=1e-5)


def test_cli_export_then_predict_with_onnx_runtime(runs, tmp_path, capsys):
    out = tmp_path / "cnn" / "model.onnx"
    assert main(["export", str(runs["cnn"]), "--format", "onnx", "--out", str(out), "--exporter",
                 "torchscript"]) == 0
    assert "ONNX Runtime matches PyTorch" in capsys.readouterr().out
    assert main(["predict", str(runs["cnn"]), *TEXTS, "--top-k", "2"]) == 0
    from_run = capsys.readouterr().out.splitlines()
    assert main(["predict", "--onnx", str(out), *TEXTS, "--top-k", "2"]) == 0
    from_onnx = capsys.readouterr().out.splitlines()
    assert len(from_onnx) == 3 and [r.split()[0] for r in from_onnx] == [r.split()[0] for r in from_run]


def test_auto_falls_back_to_torchscript_when_the_dynamo_exporter_fails(runs, tmp_path, monkeypatch):
    real = export._export

    def dynamo_breaks(model, inputs, path, names, axes, exporter):
        if exporter == "dynamo":
            raise RuntimeError("## Exception summary\n\n<class 'TypeError'>: cannot trace this")
        return real(model, inputs, path, names, axes, exporter)

    monkeypatch.setattr(export, "_export", dynamo_breaks)
    meta = export_onnx(runs["bag"], tmp_path / "model.onnx")
    assert meta["exporter"] == "torchscript"
    assert meta["exporters_failed"] == ["dynamo: <class 'TypeError'>: cannot trace this"]


def test_an_export_that_disagrees_with_pytorch_fails_with_the_diff_and_writes_nothing(runs, tmp_path,
                                                                                      monkeypatch):
    real = export.ort_session

    class Off:
        def __init__(self, path):
            self.session = real(path)

        def run(self, names, feeds):
            return [self.session.run(names, feeds)[0] + 1e-3]

    monkeypatch.setattr(export, "ort_session", Off)
    diff = r"torchscript: ONNX Runtime's logits differ from PyTorch's by up to 0\.001 \(> 0\.0001\) on the"
    with pytest.raises(SeqlabError, match=diff):
        export_onnx(runs["cnn"], tmp_path / "out" / "model.onnx", exporter="torchscript")
    assert list((tmp_path / "out").iterdir()) == []


def test_user_errors(runs, tmp_path):
    with pytest.raises(ConfigError, match="must end in .onnx"):
        export_onnx(runs["bag"], tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="exporter must be one of"):
        export_onnx(runs["bag"], tmp_path / "model.onnx", exporter="tflite")
    (tmp_path / "other.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="another exported model"):
        export_onnx(runs["bag"], tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match="a lm model has no single-call ONNX form"):
        export_onnx(train_lm(tmp_path), tmp_path / "lm" / "model.onnx")
    with pytest.raises(CheckpointError, match="ONNX file not found"):
        load_onnx(tmp_path / "missing.onnx")
    with pytest.raises(CheckpointError, match="no export.json beside"):
        load_onnx(tmp_path / "other.onnx")
    assert main(["predict", "--onnx", str(tmp_path / "missing.onnx"), "a film"]) == 2
