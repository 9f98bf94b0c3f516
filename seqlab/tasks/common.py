"""Helpers more than one task needs: the seeded hold-out split, the loss and evaluation of tasks that
predict one label per example (classify, image), and the label predictions (best first) that
classification-like predictors return and print."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data.batching import sequential_batches
from seqlab.tasks import metrics as M


def hold_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The lecture's random_split: a random `fraction` of range(n) (a pure function of `seed`) is held
    out. Returns (kept, held), each sorted; nothing is held out when that would leave either side empty."""
    n_held = int(round(n * fraction))
    if n_held == 0 or n_held == n:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[: n - n_held]), np.sort(perm[n - n_held :])


class LabelClassification:
    """Loss, running sums and evaluation for tasks that predict one label per example.

    The task provides `labels` (a LabelVocab), `splits[split].labels` ((N,) int64 class ids),
    `make_batch(index, split)` returning a batch with `inputs` (the model's arguments) and `labels`
    ((B,) class ids), and `cfg.train.eval_batch_size`."""

    default_metric = "accuracy"
    headline = "accuracy"

    def training_loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(*batch.inputs)  # (B, C)
        loss = F.cross_entropy(logits.float(), batch.labels)
        n = len(batch.labels)
        loss_value, correct = torch.stack([loss.detach(), (logits.argmax(1) == batch.labels).sum()]).tolist()
        return loss, {"loss": loss_value * n, "correct": correct, "n": n}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums.get("n", 0.0), 1.0)
        return {"loss": sums.get("loss", 0.0) / n, "accuracy": sums.get("correct", 0.0) / n}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

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
    best first (k clipped to 1..C)."""
    k = max(1, min(k, probs.shape[1]))
    p, idx = probs.topk(k, dim=1)
    out = []
    for row_p, row_i in zip(p.tolist(), idx.tolist(), strict=True):
        top = [(labels[i], pi) for i, pi in zip(row_i, row_p, strict=True)]
        out.append({"label": top[0][0], "probability": top[0][1], "top_k": top})
    return out


def format_label(result: dict) -> str:
    """One prediction of `top_k_labels` as the CLI prints it: `label<TAB>probability`, or with several
    candidates `label probability<TAB>label probability...`."""
    if len(result["top_k"]) > 1:
        return "\t".join(f"{lab} {p:.4f}" for lab, p in result["top_k"])
    return f"{result['label']}\t{result['probability']:.4f}"
