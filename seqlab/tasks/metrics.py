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
