"""Small real-looking datasets written into a test's tmp_path."""

from __future__ import annotations

import random
from pathlib import Path

POS = ["great", "wonderful", "funny", "gripping", "moving", "brilliant", "charming", "superb"]
NEG = ["dull", "boring", "awful", "tedious", "bland", "clumsy", "weak", "messy"]
FILL = ["the", "film", "movie", "plot", "acting", "story", "was", "is", "a", "and", "with", "very", "quite"]


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(label, text) pairs whose label a bag of words can learn."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(FILL, 4) + [rng.choice(POS if label == "pos" else NEG)]
        rng.shuffle(words)
        rows.append((label, " ".join(words)))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f'"{lab}","{text}"\n' for lab, text in rows), encoding="utf-8")
    return path


def tiny_classification(tmp_path: Path, n_train: int = 240, n_test: int = 60) -> dict[str, str]:
    train = write_csv(tmp_path / "train.csv", sentiment_rows(n_train, seed=1))
    test = write_csv(tmp_path / "test.csv", sentiment_rows(n_test, seed=2))
    return {"data.train": str(train), "data.test": str(test)}


def assert_seeded(run) -> None:
    """`run(seed)` (a tensor or a tuple of tensors) is equal for one seed and differs for another: the seed
    is used, not ignored. Inputs must not depend on the seed (draw them from a fixed generator)."""
    import torch

    def flat(x):
        return list(x) if isinstance(x, (tuple, list)) else [x]

    a, b, c = flat(run(0)), flat(run(0)), flat(run(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), "same seed, different results"
    assert any(not torch.equal(x, y) for x, y in zip(a, c, strict=True)), "another seed, the same results"


# The library's defaults before the bag got its own recipe (the lecture's: SGD 4.0, StepLR, batch 16, 5 epochs,
# every word kept), for the tests whose step counts and tiny-data accuracy were written against them.
LECTURE = {"train.optimizer": "sgd", "train.lr": 4.0, "train.schedule": "step", "train.batch_size": 16,
           "train.epochs": 5, "train.early_stopping": None, "task.min_freq": 1, "model.dim": 32}
