"""Classification metrics from a confusion matrix: accuracy, macro-F1, per-class precision/recall/F1.
Shared by the classify and tag tasks."""

from __future__ import annotations

import numpy as np


def confusion_matrix(gold: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """`cm[g, p]` counts examples of gold class g predicted as p."""
    return np.bincount(gold * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, F1 and support per class (0 where undefined, as scikit-learn's zero_division=0)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support


def summary(cm: np.ndarray) -> dict[str, float]:
    """accuracy and macro-F1 (averaged over classes present in gold or predictions)."""
    total = cm.sum()
    _, _, f1, support = per_class(cm)
    present = (support > 0) | (cm.sum(axis=0) > 0)
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def report(cm: np.ndarray, labels: list[str]) -> dict:
    """Everything `seqlab evaluate` shows: summary, per-class table, confusion matrix."""
    precision, recall, f1, support = per_class(cm)
    return {
        **summary(cm),
        "per_class": {
            lab: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for lab, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {"labels": list(labels), "matrix": cm.astype(int).tolist()},
    }


def precision_recall_at_k(scores: np.ndarray, gold: list[list[int]], k: int) -> tuple[float, float, int]:
    """P@k and R@k as `fasttext test` computes them: each example predicts its k best labels (scores (N, C),
    higher better); an example's gold labels unknown to the model (ids >= C) are left out, and so is an
    example with none left. Returns (precision, recall, examples counted)."""
    C = scores.shape[1]
    k = min(k, C)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    tp = predicted = relevant = n = 0
    for row, labels in zip(top, gold, strict=True):
        known = {g for g in labels if g < C}
        if not known:
            continue
        n += 1
        tp += len(known.intersection(row.tolist()))
        predicted += k
        relevant += len(known)
    return tp / max(predicted, 1), tp / max(relevant, 1), n


def multilabel_f1(decided: np.ndarray, gold: list[list[int]], num_labels: int) -> dict[str, float]:
    """Micro and macro F1 of label decisions (N, C) bool against the gold label sets; gold labels the model
    does not know (ids >= C) are misses, and count in the macro average with an F1 of 0."""
    C = decided.shape[1]
    truth = np.zeros((len(gold), num_labels), dtype=bool)
    for i, labels in enumerate(gold):
        truth[i, labels] = True
    pred = np.zeros_like(truth)
    pred[:, :C] = decided
    tp, fp, fn = (pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    present = (tp + fp + fn) > 0
    per_label = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(num_labels), where=present)
    return {"micro_f1": float(micro), "macro_f1": float(per_label[present].mean()) if present.any() else 0.0}


def tune_thresholds(probs: np.ndarray, gold: list[list[int]], grid: np.ndarray | None = None) -> np.ndarray:
    """For each label, the probability threshold (C,) that maximises its F1 on (probs (N, C), gold); ties go
    to the threshold nearest 0.5, and a label without examples keeps 0.5."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2) if grid is None else grid
    C = probs.shape[1]
    truth = np.zeros((len(gold), C), dtype=bool)
    for i, labels in enumerate(gold):
        truth[i, [g for g in labels if g < C]] = True
    best = np.full(C, 0.5)
    order = np.argsort(np.abs(grid - 0.5), kind="stable")  # nearest 0.5 first: it wins ties
    for j in np.flatnonzero(truth.any(axis=0)):
        pred = probs[:, j][None, :] >= grid[order][:, None]  # (G, N)
        tp = (pred & truth[:, j]).sum(1)
        f1 = 2 * tp / np.maximum(pred.sum(1) + truth[:, j].sum(), 1)
        best[j] = grid[order][int(np.argmax(f1))]
    return best
