"""The task contract (seqlab/tasks/base.py) is the whole of what a task must give: a seventh task, defined
here and registered with one line in TASKS (and its model in MODELS), trains, resumes, evaluates, predicts,
serves over HTTP, exports to ONNX and is reported, through the API, the CLI and the server, with no edit
anywhere else. It says whether a row of digits is sorted, from the bag of its adjacent pairs."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import seqlab
from seqlab.cli import main
from seqlab.data import LabelVocab
from seqlab.data.batching import sequential_batches
from seqlab.models import MODELS
from seqlab.options import Positive
from seqlab.tasks import TASKS
from seqlab.tasks.base import ExportSpec, Inputs, Option
from seqlab.tasks.common import TOP_K, LabelPredictor, LabelTask, top_k_labels


@dataclass
class SortedConfig:
    digits: Positive = 10  # digits 0..digits-1


@dataclass
class PairBagConfig:
    dim: Positive = 8


class PairBag(nn.Module):
    """pairs (N,) ids of adjacent digit pairs, offsets (B,) -> logits (B, 2)."""

    Config = PairBagConfig

    def __init__(self, cfg: PairBagConfig, pairs: int, num_classes: int):
        super().__init__()
        self.embedding = nn.EmbeddingBag(pairs, cfg.dim, mode="mean")
        self.fc = nn.Linear(cfg.dim, num_classes)

    def forward(self, pairs: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(pairs, offsets))


@dataclass
class Rows:
    rows: list[tuple[str, str]]  # (label, text)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> Rows:
        return Rows([self.rows[i] for i in index])


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Batch:
    inputs: tuple[torch.Tensor, torch.Tensor]
    labels: torch.Tensor


class SortedTask(LabelTask):
    name = "sorted"
    Config = SortedConfig
    default_model = "pairbag"
    default_dataset = "sample"
    formats = ("labeltext",)

    def read(self, path: str) -> Rows:
        return Rows([tuple(line.split("\t")) for line in Path(path).read_text().splitlines() if line])

    def build(self, train: Rows) -> None:
        self.labels = LabelVocab.build(label for label, _ in train.rows)

    def make_split(self, rows: Rows, path: str, split: str) -> Split:
        return Split([t for _, t in rows.rows], np.array([self.labels.index(lab) for lab, _ in rows.rows]))

    def artifacts(self) -> dict:
        return {"labels": self.labels.to_dict()}

    def restore(self, blob: dict, path) -> None:
        self.labels = LabelVocab.from_dict(blob["labels"], path)

    def build_model(self) -> nn.Module:
        return self.model_cls(self.cfg.model_options, self.opt.digits ** 2, len(self.labels))

    def inputs(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        digits = [[int(c) for c in t.split()] for t in texts]
        pairs = [[a * self.opt.digits + b for a, b in zip(d, d[1:], strict=False)] or [0] for d in digits]
        offsets = np.cumsum([0] + [len(p) for p in pairs[:-1]])
        return torch.tensor([i for p in pairs for i in p]), torch.tensor(offsets)

    def make_batch(self, index: np.ndarray, split: str = "train") -> Batch:
        sp = self.splits[split]
        return Batch(self.inputs([sp.texts[i] for i in index]), torch.from_numpy(sp.labels[index]))


class SortedPredictor(LabelPredictor):
    inputs = Inputs("text", "texts", "digits separated by spaces")
    options: ClassVar[dict[str, Option]] = {"top_k": TOP_K}

    def run(self, texts: list[str], top_k: int) -> list[dict]:
        out = []
        for index in sequential_batches(len(texts), 64):
            logits = self.model(*self.task.inputs([texts[i] for i in index]))
            out += top_k_labels(torch.softmax(logits.float(), -1), self.labels(), top_k)
        return out

    def split_items(self, split: str) -> list[str]:
        return list(self.task.splits[split].texts)

    def synthetic_inputs(self, n: int) -> list[str]:
        return ["1 2 3"] * n

    def export_spec(self) -> ExportSpec:
        return ExportSpec(("pairs", "offsets"), {"pairs": {0: "ids"}, "offsets": {0: "batch"}, "logits": {0: "batch"}},
                          self.task.inputs, size=lambda t: len(t.split()),
                          longer=lambda t, n: " ".join(sorted(t.split() * n)))


SortedTask.Predictor = SortedPredictor


def rows(n: int, seed: int) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        d = [rng.randrange(10) for _ in range(rng.randint(3, 6))]
        if rng.random() < 0.5:
            d.sort()
        out.append(f"{'sorted' if d == sorted(d) else 'unsorted'}\t{' '.join(map(str, d))}")
    return "\n".join(out) + "\n"


@pytest.fixture
def seventh(tmp_path, monkeypatch) -> dict:
    monkeypatch.setitem(TASKS, "sorted", SortedTask)  # the one line a new task adds
    monkeypatch.setitem(MODELS, "sorted", {"pairbag": PairBag})
    (tmp_path / "train.txt").write_text(rows(300, 1))
    (tmp_path / "test.txt").write_text(rows(60, 2))
    return {"task": "sorted", "data.train": str(tmp_path / "train.txt"), "data.test": str(tmp_path / "test.txt"),
            "train.optimizer": "adam", "train.lr": 0.05, "train.schedule": "constant", "train.epochs": 3,
            "train.batch_size": 16}


def test_a_seventh_task_trains_evaluates_predicts_serves_exports_and_reports(seventh, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from seqlab.report.runs import write_report
    from seqlab.serve.app import create_app
    from seqlab.serve.export import export_onnx, load_onnx

    logs: list[str] = []
    run = seqlab.train(None, seventh, out=tmp_path / "run", log=logs.append)
    assert any(line.startswith("try it: seqlab predict ") for line in logs)
    test = seqlab.evaluate(run)
    assert test["accuracy"] > 0.8 and "confusion_matrix" in test
    predictor = seqlab.load(run)
    assert predictor.predict(["1 2 3 4", "4 1 3"]) [0]["label"] == "sorted"
    assert predictor.describe()["inputs"]["field"] == "texts"

    assert main(["predict", str(run), "1 2 3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "sorted"
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == test["accuracy"]
    assert main(["predict", str(run), "1 2 3", "--top-k", "0"]) == 2
    assert "top_k must be at least 1" in capsys.readouterr().err

    with TestClient(create_app([run])) as client:
        r = client.post("/v1/models/run/predict", json={"texts": ["1 2 3"], "top_k": 2})
        assert r.status_code == 200 and r.json()["results"] == json.loads(json.dumps(
            predictor.predict(["1 2 3"], top_k=2)))
        assert client.post("/v1/models/run/predict", json={"texts": ["1 2"], "beam": 2}).status_code == 422
        assert client.get("/v1/models/run").json()["options"]["top_k"]["default"] == 1

    meta = export_onnx(run, tmp_path / "onnx" / "model.onnx")
    assert meta["inputs"] == ["pairs", "offsets"] and meta["max_abs_diff"] < 1e-4
    onnx = load_onnx(tmp_path / "onnx" / "model.onnx")
    assert onnx.predict(["1 2 3", "3 2 1"])[1]["label"] == predictor.predict(["3 2 1"])[0]["label"]

    page = write_report([run], tmp_path / "report")
    text = page.read_text()
    assert "confusion.png" in text and "   - reference: " in text

    resumed = seqlab.train(resume=run, overrides=["train.epochs=4"], quiet=True, log=None)
    assert json.loads((resumed / "metrics.jsonl").read_text().splitlines()[-1])["split"] == "test"


def test_a_task_of_another_format_and_cross_task_data_are_one_line_errors(seventh, tmp_path, capsys):
    run = seqlab.train(None, seventh, out=tmp_path / "run", quiet=True, log=None)
    assert main(["evaluate", str(run), "--data", "ud_english"]) == 2
    assert "holds conllu data, which task sorted does not read" in capsys.readouterr().err
    assert main(["translate", str(run), "1 2"]) == 2
    assert "is a sorted run, which `seqlab translate` does not take; use `seqlab predict`" in capsys.readouterr().err
