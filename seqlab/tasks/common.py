"""What the tasks that predict one label per example (classify, image) share: the loss, the running sums,
the evaluation from a confusion matrix, and a predictor that returns the labels best first."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data.batching import sequential_batches
from seqlab.options import Range
from seqlab.tasks import metrics as M
from seqlab.tasks.base import Option, Predictor, Task


class LabelTask(Task):
    """A task whose splits have `labels` ((N,) int64 class ids) and whose batches have `inputs` (the model's
    arguments) and `labels` ((B,) class ids); `self.labels` is its LabelVocab."""

    default_metric = "accuracy"
    headline = "accuracy"
    labels: Any = None

    def count(self) -> None:
        if self.labels is not None and len(self.labels) == 1:
            warnings.warn(f"the training data has a single label ({self.labels.itos[0]!r}): the model will always "
                          "predict it, and its accuracy says nothing", stacklevel=2)

    def training_loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(*batch.inputs)  # (B, C)
        loss = F.cross_entropy(logits.float(), batch.labels)
        n = len(batch.labels)
        loss_value, correct = torch.stack([loss.detach(), (logits.argmax(1) == batch.labels).sum()]).tolist()
        return loss, {"loss": loss_value * n, "correct": correct, "n": n}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums.get("n", 0.0), 1.0)
        return {"loss": sums.get("loss", 0.0) / n, "accuracy": sums.get("correct", 0.0) / n}

    def confusion(self, model: nn.Module, split: str) -> tuple[np.ndarray, float]:
        """The confusion matrix (gold x predicted) and the mean loss of `model` on `split`."""
        gold = self.splits[split].labels
        preds, loss_sum = [], 0.0
        for index in sequential_batches(len(gold), self.cfg.train.eval_batch_size):
            batch = self.make_batch(index, split)
            logits = model(*batch.inputs).float()
            loss_sum += F.cross_entropy(logits, batch.labels, reduction="sum").item()
            preds.append(logits.argmax(1).cpu().numpy())
        pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        return M.confusion_matrix(gold, pred, len(self.labels)), loss_sum / max(1, len(gold))

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        cm, loss = self.confusion(model, split)
        return {"loss": loss, **M.summary(cm)}

    def report(self, model: nn.Module, split: str) -> dict:
        """Full evaluation for `seqlab evaluate`: metrics, per-class table, confusion matrix."""
        cm, loss = self.confusion(model, split)
        return {"loss": loss, "examples": int(cm.sum()), **M.report(cm, self.labels.itos)}


def top_k_labels(probs: torch.Tensor, labels: list[str], k: int) -> list[dict]:
    """probs: (B, C) -> for each row `label`, `probability` and `top_k` [(label, probability), ...]
    best first (k clipped to C)."""
    k = min(k, probs.shape[1])
    p, idx = probs.topk(k, dim=1)
    out = []
    for row_p, row_i in zip(p.tolist(), idx.tolist(), strict=True):
        top = [(labels[i], pi) for i, pi in zip(row_i, row_p, strict=True)]
        out.append({"label": top[0][0], "probability": top[0][1], "top_k": top})
    return out


TOP_K = Option(int, 1, "how many labels to return, best first", Range(min=1))


class LabelPredictor(Predictor):
    """A predictor answering `label`, `probability` and `top_k` [(label, probability), ...] best first."""

    options: ClassVar[dict[str, Option]] = {"top_k": TOP_K}

    def labels(self) -> list[str]:
        return list(self.task.labels.itos)

    def split_references(self, split: str) -> list[str]:
        itos = self.task.labels.itos
        return [itos[i] for i in self.task.splits[split].labels]

    def format_text(self, result: dict) -> str:
        """`label<TAB>probability`, or with several candidates `label probability<TAB>label probability...`."""
        if len(result["top_k"]) > 1:
            return "\t".join(f"{lab} {p:.4f}" for lab, p in result["top_k"])
        return f"{result['label']}\t{result['probability']:.4f}"
