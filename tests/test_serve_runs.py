"""Tiny trained runs of every task for the server, export and report tests (no tests of its own): each
trains in about a second on data written into the test's folder, small enough that its quality is beside
the point and big enough that it predicts through the real code paths."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

import seqlab
from tests.helpers import tiny_classification

FAST = {"train.optimizer": "adam", "train.lr": 0.01, "train.schedule": "constant", "train.epochs": 2}
CLASSIFY = {"bag": {"model.dim": 8}, "cnn": {"model.dim": 8, "model.filters": 4},
            "rnn": {"model.dim": 8, "model.hidden": 8},
            "transformer": {"model.dim": 8, "model.heads": 2, "model.layers": 1, "model.ff_dim": 16}}
TAG = {"rnn": {"model.hidden": 8, "model.layers": 1}, "cnn": {"model.hidden": 8, "model.layers": 1},
       "transformer": {"model.hidden": 8, "model.heads": 2, "model.layers": 1, "model.ff_dim": 16}}
LEXICON = {"DET": ["the", "a"], "ADJ": ["big", "red", "old"], "NOUN": ["cat", "dog", "fox", "bird"],
           "VERB": ["sees", "likes", "finds"]}
PAIRS = [("ein hund", "a dog"), ("ein mann", "a man"), ("eine frau", "a woman"),
         ("der hund sieht", "the dog sees"), ("ein rotes haus", "a red house"),
         ("der mann hat", "the man has")]


def tagged_file(path: Path, n: int = 60, seed: int = 0) -> Path:
    """Two-column `word<TAB>TAG` sentences: DET (ADJ) NOUN VERB DET NOUN."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(n):
        long = rng.random() < 0.5
        tags = ["DET", "ADJ", "NOUN", "VERB", "DET", "NOUN"] if long else ["DET", "NOUN", "VERB"]
        blocks.append("\n".join(f"{rng.choice(LEXICON[t])}\t{t}" for t in tags))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def train_classify(root: Path, model: str = "bag", **over) -> Path:
    data = tiny_classification(root)
    return seqlab.train(None, {**data, "model": model, **CLASSIFY[model], **FAST, **over},
                        out=root / f"classify-{model}", quiet=True, log=None)


def train_tag(root: Path, model: str = "rnn", **over) -> Path:
    data = tagged_file(root / "tags.txt")
    cfg = {"task": "tag", "model": model, "data.train": str(data), "data.format": "tagged",
           "data.valid_fraction": 0.2, "model.dim": 8, "model.char_dim": 4, "model.char_features": 4,
           "train.batch_size": 8, **TAG[model], **FAST, **over}
    return seqlab.train(None, cfg, out=root / f"tag-{model}", quiet=True, log=None)


def train_image(root: Path, **over) -> Path:
    cfg = {"task": "image", "model.channels": [4], "model.hidden": [8], "train.max_steps": 3, **FAST, **over}
    return seqlab.train(None, cfg, out=root / "image", quiet=True, log=None)


def train_lm(root: Path, **over) -> Path:
    text = root / "lm.txt"
    text.write_text("the cat sat on the mat and the dog sat on the log\n" * 30, encoding="utf-8")
    cfg = {"task": "lm", "model": "rnn", "data.train": str(text), "data.valid_fraction": 0.1,
           "model.hidden": 16, "model.layers": 1, "task.bptt": 16, "train.batch_size": 4,
           "train.eval_batch_size": 4, **FAST, "train.epochs": 1, **over}
    return seqlab.train(None, cfg, out=root / "lm", quiet=True, log=None)


def train_translate(root: Path, **over) -> Path:
    tsv = root / "pairs.tsv"
    tsv.write_text("".join(f"{de}\t{en}\n" for de, en in PAIRS * 10), encoding="utf-8")
    cfg = {"task": "translate", "model": "transformer", "data.train": str(tsv), "data.test": str(tsv),
           "data.valid_fraction": 0.1, "task.tokenizer": "word", "task.vocab_size": None, "task.beam": 2,
           "model.dim": 16, "model.heads": 2, "model.layers": 1,
           "model.ff_dim": 16, "train.batch_size": 8, **FAST, **over}
    return seqlab.train(None, cfg, out=root / "translate", quiet=True, log=None)


def train_caption(root: Path, **over) -> Path:
    """Three pictures (a coloured square on grey), each with its caption."""
    images = root / "img"
    images.mkdir()
    rows = []
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    for i, (name, rgb) in enumerate(colours.items()):
        a = np.full((24, 24, 3), 60, np.uint8)
        a[2 + 6 * i: 12 + 6 * i, 4:14] = rgb
        Image.fromarray(a).save(images / f"{name}.png")
        rows.append({"image": f"{name}.png", "captions": [f"a {name} square on grey ."]})
    captions = root / "captions.jsonl"
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = {"task": "caption", "model": "rnn", "task.images": str(images), "task.size": 16, "task.min_freq": 1,
           "task.beam": 2, "data.train": str(captions), "data.valid": str(captions), "model.channels": [4],
           "model.hidden": 16, "model.dim": 8, "model.attention_dim": 8, "train.batch_size": 3,
           **FAST, **over}
    return seqlab.train(None, cfg, out=root / "caption", quiet=True, log=None)
