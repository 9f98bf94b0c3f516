"""Choosing the default bag recipe on the valid splits of several datasets (never a test split).

    SEQLAB_DATA=../shared/data python bench/bench_bag_defaults.py [--recipes A,B] [--datasets sst2,imdb]
        [--threads 2] [--out bench/results/bag_defaults.json]

Every recipe trains on each dataset's training file with 10% held out as the valid split (no test file is
given, so no test split is ever scored) and the valid accuracy of its best epoch is kept. The datasets span
short sentences (SST-2 phrases, TREC questions), news items (the bundled AG_NEWS sample) and long documents
with 2 and 8 classes (IMDB sentiment, IMDB's ratings 1-4 and 7-10). A recipe's score is its mean gap to the
best recipe of each dataset (0: best everywhere); the JSON keeps every run's accuracy and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import seqlab  # noqa: E402

DATA = Path(os.environ.get("SEQLAB_DATA", REPO.parent / "shared" / "data"))
DATASETS = {
    "sst2": {"data.train": str(DATA / "sst2" / "glue" / "train.tsv"), "data.format": "tsv",
             "data.label_column": "label"},
    "trec": {"data.train": str(DATA / "trec" / "train_5500.label"), "data.format": "trec",
             "data.encoding": "latin-1"},
    "ag_sample": {"data.train": str(REPO / "seqlab" / "data" / "sample" / "ag_news_train.csv.gz"),
                  "data.format": "csv"},
    "imdb": {"data.train": str(DATA / "imdb" / "imdb-train.jsonl.gz"), "data.format": "jsonl"},
    "imdb_rating": {"data.train": str(DATA / "imdb" / "imdb-train.jsonl.gz"), "data.format": "jsonl",
                    "data.label_key": "rating"},
    # few long documents in many classes (as a topic corpus): 5,000 reviews of IMDB train drawn with seed 0
    "imdb_rating_5k": {"data.train": "imdb-train-5k.jsonl", "data.format": "jsonl", "data.label_key": "rating"},
}
# the lecture's settings, under every recipe: each recipe measures the same whatever the bag's own recipe is
LECTURE = {"train.optimizer": "sgd", "train.lr": 4.0, "train.schedule": "step", "model.dim": 32,
           "train.batch_size": 16, "train.epochs": 5, "train.early_stopping": None, "task.min_freq": 1}
RECIPES = {  # train.* / model.* / task.* overrides of the lecture's settings
    "lecture": {},
    "keras": {"train.optimizer": "adam", "train.lr": 0.001, "train.schedule": "constant", "model.dim": 50,
              "train.batch_size": 32},
    "adam_lin": {"train.optimizer": "adam", "train.lr": 0.01, "train.schedule": "linear", "train.batch_size": 64},
    "adam_lin10": {"train.optimizer": "adam", "train.lr": 0.005, "train.schedule": "linear", "model.dim": 64,
                   "train.batch_size": 64, "train.epochs": 10},
    "adam_lin10_mf2": {"train.optimizer": "adam", "train.lr": 0.005, "train.schedule": "linear", "model.dim": 64,
                       "train.batch_size": 64, "train.epochs": 10, "task.min_freq": 2},
    "sgd_lin10": {"train.lr": 2.0, "train.schedule": "linear", "model.dim": 64, "train.batch_size": 32,
                  "train.epochs": 10},
    "adam_lin10_mf2_es2": {"train.optimizer": "adam", "train.lr": 0.005, "train.schedule": "linear", "model.dim": 64,
                           "train.batch_size": 64, "train.epochs": 10, "task.min_freq": 2, "train.early_stopping": 2},
    "adam_lin10_mf2_lr01": {"train.optimizer": "adam", "train.lr": 0.01, "train.schedule": "linear", "model.dim": 64,
                            "train.batch_size": 64, "train.epochs": 10, "task.min_freq": 2},
    "adam_lin10_mf2_d32": {"train.optimizer": "adam", "train.lr": 0.005, "train.schedule": "linear", "model.dim": 32,
                           "train.batch_size": 64, "train.epochs": 10, "task.min_freq": 2},
    "adam_lin20_mf2_es3": {"train.optimizer": "adam", "train.lr": 0.005, "train.schedule": "linear", "model.dim": 64,
                           "train.batch_size": 64, "train.epochs": 20, "task.min_freq": 2, "train.early_stopping": 3},
    # row-wise Adagrad on the sparse embedding (seqlab.train.optim.Adagrad), linear decay
    "ada_b256_d32": {"train.optimizer": "adagrad", "train.lr": 0.3, "train.schedule": "linear", "model.dim": 32,
                     "train.batch_size": 256, "train.epochs": 5, "task.min_freq": 2, "train.early_stopping": None},
    "ada_b256_d64": {"train.optimizer": "adagrad", "train.lr": 0.5, "train.schedule": "linear", "model.dim": 64,
                     "train.batch_size": 256, "train.epochs": 5, "task.min_freq": 2, "train.early_stopping": None},
    "ada_b64_d64": {"train.optimizer": "adagrad", "train.lr": 0.5, "train.schedule": "linear", "model.dim": 64,
                    "train.batch_size": 64, "train.epochs": 5, "task.min_freq": 2, "train.early_stopping": None},
    "ada_b256_d32_20es3": {"train.optimizer": "adagrad", "train.lr": 0.3, "train.schedule": "linear",
                           "model.dim": 32, "train.batch_size": 256, "train.epochs": 20, "task.min_freq": 2,
                           "train.early_stopping": 3},
    "ada_b64_d32_10es3": {"train.optimizer": "adagrad", "train.lr": 0.3, "train.schedule": "linear",
                          "model.dim": 32, "train.batch_size": 64, "train.epochs": 10, "task.min_freq": 2,
                          "train.early_stopping": 3},
    # candidates for configs/imdb/bag.yaml, run on IMDB's valid split only (--datasets imdb)
    **{f"imdb_lr{lr}_d{dim}_ep{ep}_init{init}": {
        "train.optimizer": "adagrad", "train.lr": lr, "train.schedule": "linear", "model.dim": dim,
        "train.batch_size": 256, "train.epochs": ep, "task.min_freq": 2, "train.early_stopping": None,
        "model.init_range": init}
       for lr, dim, ep, init in [(0.3, 32, 3, 0.5), (0.3, 32, 3, 0.03), (1.0, 32, 3, 0.03), (0.5, 64, 3, 0.02),
                                 (0.3, 32, 2, 0.5), (1.0, 32, 2, 0.03), (0.3, 64, 5, 0.02)]},
}
RECIPES = {name: {**LECTURE, **over} for name, over in RECIPES.items()}


def subset(src: Path, dest: Path, n: int, seed: int = 0) -> None:
    """n lines of a JSONL file drawn at random (seeded), in file order."""
    import gzip
    import random

    lines = gzip.open(src, "rt", encoding="utf-8").read().rstrip("\n").split("\n")  # not splitlines: \u2028
    keep = sorted(random.Random(seed).sample(range(len(lines)), n))
    dest.write_text("\n".join(lines[i] for i in keep) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bag_defaults.json"))
    a = ap.parse_args()
    results: dict = json.loads(Path(a.out).read_text()) if Path(a.out).is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        subset(DATA / "imdb" / "imdb-train.jsonl.gz", Path(tmp) / "imdb-train-5k.jsonl", 5000)
        DATASETS["imdb_rating_5k"]["data.train"] = str(Path(tmp) / "imdb-train-5k.jsonl")
        for dataset in a.datasets.split(","):
            for recipe in a.recipes.split(","):
                key = f"{dataset}/{recipe}"
                if key in results:
                    continue
                over = {**DATASETS[dataset], **RECIPES[recipe], "data.valid_fraction": 0.1, "threads": a.threads}
                t0 = time.perf_counter()
                run = seqlab.train(None, over, out=Path(tmp) / key.replace("/", "-"), quiet=True, log=None)
                summary = json.loads((run / "summary.json").read_text())
                results[key] = {"valid_accuracy": summary["results"]["valid"]["accuracy"],
                                "best_epoch": summary["results"]["valid"]["epoch"],
                                "wall_s": time.perf_counter() - t0, "parameters": summary["parameters"]}
                assert "test" not in summary["results"]  # nothing here may look at a test split
                print(key, results[key], flush=True)
                Path(a.out).write_text(json.dumps(results, indent=1))
    by_dataset: dict[str, dict[str, float]] = {}
    for key, r in results.items():
        dataset, recipe = key.split("/")
        by_dataset.setdefault(dataset, {})[recipe] = r["valid_accuracy"]
    recipes = sorted({k.split("/")[1] for k in results})
    for recipe in recipes:
        gaps = [max(accs.values()) - accs[recipe] for accs in by_dataset.values() if recipe in accs]
        print(f"{recipe:<16} mean gap to the best {100 * sum(gaps) / len(gaps):.2f} points over {len(gaps)} datasets")


if __name__ == "__main__":
    main()
