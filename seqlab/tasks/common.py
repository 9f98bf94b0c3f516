"""Helpers more than one task needs: the seeded hold-out split and the label predictions (best first)
that classification-like predictors return and print."""

from __future__ import annotations

import numpy as np
import torch


def hold_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The lecture's random_split: a random `fraction` of range(n) (a pure function of `seed`) is held
    out. Returns (kept, held), each sorted; nothing is held out when that would leave either side empty."""
    n_held = int(round(n * fraction))
    if n_held == 0 or n_held == n:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[: n - n_held]), np.sort(perm[n - n_held :])


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
