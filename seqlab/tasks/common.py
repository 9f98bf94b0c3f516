"""What the tasks that predict one label per example (classify, image) share: the loss, the running sums,
the evaluation from a confusion matrix, and a predictor that returns the labels best first."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data.batching import sequential_batches
from seqlab.options import Range
from seqlab.tasks import metrics as M
from seqlab.tasks.base import Option, Predictor, Task

IGNORE = -100  # the loss target of a gold label the model cannot predict (never seen in training)


class LabelTask(Task):
    """A task whose splits have `labels` ((N,) int64 class ids) and whose batches have `inputs` (the model's
    arguments) and `labels` ((B,) class ids); `self.labels` is its LabelVocab. A gold label of an evaluation
    split that training never saw gets an id past the model's labels (`label_id`): it counts as an error and
    has its own row in the report."""

    default_metric = "accuracy"
    headline = "accuracy"
    labels: Any = None
    extra_labels: list[str] = []
    _extra_index: dict[str, int] = {}

    def label_ids(self, labels: Iterable[str]) -> list[int]:
        """The ids of gold labels; one training never saw gets an id past the model's, and the new ones of a
        call are named in one warning."""
        known, C = self.labels.stoi, len(self.labels)
        ids, new = [], []
        for label in labels:
            if label in known:
                ids.append(known[label])
                continue
            if label not in self.extra_labels:
                self.extra_labels = [*self.extra_labels, label]
                self._extra_index = {lab: i for i, lab in enumerate(self.extra_labels)}
                new.append(label)
            ids.append(C + self._extra_index[label])
        if new:
            shown = ", ".join(repr(x) for x in new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
            warnings.warn(f"{'label' if len(new) == 1 else f'{len(new)} labels'} {shown} "
                          f"{'does' if len(new) == 1 else 'do'} not occur in the training data: their examples "
                          "count as missed", stacklevel=2)
        return ids

    def count(self) -> None:
        if self.labels is None:
            return
        n = len(self.splits["train"]) if "train" in self.splits else 0
        if len(self.labels) == 1:
            warnings.warn(f"the training data has a single label ({self.labels.itos[0]!r}): the model will always "
                          "predict it, and its accuracy says nothing", stacklevel=2)
        elif n >= 100 and len(self.labels) > n / 2:
            warnings.warn(f"the training data has {len(self.labels):,} labels for {n:,} examples: is the label "
                          "read from the right column (data.label_column, data.label_key)?", stacklevel=2)

    def training_loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(*batch.inputs)  # (B, C)
        loss = F.cross_entropy(logits.float(), batch.labels)  # training labels are all known
        n = len(batch.labels)
        loss_value, correct = torch.stack([loss.detach(), (logits.argmax(1) == batch.labels).sum()]).tolist()
        return loss, {"loss": loss_value * n, "correct": correct, "n": n}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums.get("n", 0.0), 1.0)
        return {"loss": sums.get("loss", 0.0) / n, "accuracy": sums.get("correct", 0.0) / n}

    def confusion(self, model: nn.Module, split: str) -> tuple[np.ndarray, float]:
        """The confusion matrix (gold x predicted, labels unseen in training last) and the mean loss of `model`
        on `split` (over the examples of known labels)."""
        gold = self.splits[split].labels
        preds, loss_sum = [], 0.0
        C = len(self.labels)
        for index in sequential_batches(len(gold), self.cfg.train.eval_batch_size):
            batch = self.make_batch(index, split)
            logits = model(*batch.inputs).float()
            targets = batch.labels.masked_fill(batch.labels >= C, IGNORE)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE).item()
            preds.append(logits.argmax(1).cpu().numpy())
        pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        known = int((gold < C).sum())
        return M.confusion_matrix(gold, pred, C + len(self.extra_labels)), loss_sum / max(1, known)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        cm, loss = self.confusion(model, split)
        return {"loss": loss, **M.summary(cm)}

    def report(self, model: nn.Module, split: str) -> dict:
        """Full evaluation for `seqlab evaluate`: metrics, per-class table, confusion matrix."""
        cm, loss = self.confusion(model, split)
        return {"loss": loss, "examples": int(cm.sum()), **M.report(cm, list(self.labels.itos) + self.extra_labels)}


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
        names = list(self.task.labels.itos) + self.task.extra_labels
        return [names[i] for i in self.task.splits[split].labels]

    def format_text(self, result: dict) -> str:
        """`label<TAB>probability`, or with several candidates `label probability<TAB>label probability...`."""
        if len(result["top_k"]) > 1:
            return "\t".join(f"{lab} {p:.4f}" for lab, p in result["top_k"])
        return f"{result['label']}\t{result['probability']:.4f}"
