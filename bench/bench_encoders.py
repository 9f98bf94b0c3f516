"""Issue 3 benchmark: the padded encoders (cnn, rnn, transformer) beside their peers, in one run.

    SEQLAB_DATA=../shared/data python bench/bench_encoders.py [--threads 1] [--cases sst2-cnn ...]
                                                             [--out bench/results/encoders.json]

Each preset is trained in this process through `seqlab.train` (read, tokenize, train with model selection
on the held-out valid split only, test), then loaded with `seqlab.load` to time inference on the test
texts (text in, label out). The peers see the same splits (the task's own train/valid/test after the
hold-out): TF-IDF word 1-2 grams + LinearSVC (scikit-learn, C=1) and fastText (wordNgrams=2, epoch=5),
both with the fixed recipes of bench/bench_bag.py. The table gives valid and test accuracy, wall time
(seqlab: the whole `train` call; peers: fit), training and inference throughput, and the ratios to the
TF-IDF peer. The machine's load average is recorded: the 2 cores may be shared with other work.
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

import torch  # noqa: E402
from bench_bag import FASTTEXT_ARGS, fasttext_line, svm_model  # noqa: E402

import seqlab  # noqa: E402
from seqlab.config import make_config  # noqa: E402
from seqlab.tasks import TASKS  # noqa: E402

CASES = {
    "sst2-cnn": "sst2/cnn",
    "sst2-rnn": "sst2/rnn",
    "sst2-transformer": "sst2/transformer",
    "trec-cnn": "trec/cnn",
}


def splits(preset: str, threads: int) -> dict[str, tuple[list[str], list[str]]]:
    """The task's own splits (after the valid hold-out) as (texts, label names)."""
    cfg = make_config(REPO / preset, [f"threads={threads}"])
    task = TASKS[cfg.task](cfg, torch.device("cpu"), log=None)
    task.prepare()
    return {name: (s.texts, [task.labels.itos[i] for i in s.labels]) for name, s in task.splits.items()}


def rate(fn, n: int, min_seconds: float = 1.0) -> float:
    """Examples per second of `fn()`, which handles n examples, repeated for at least min_seconds."""
    fn()  # warm-up
    reps, t = 0, time.perf_counter()
    while reps == 0 or time.perf_counter() - t < min_seconds:
        fn()
        reps += 1
    return n * reps / (time.perf_counter() - t)


def accuracy(pred: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)


def run_seqlab(preset: str, threads: int, out: Path, data: dict) -> dict:
    t = time.perf_counter()
    run = seqlab.train(REPO / preset, [f"threads={threads}"], out=out, quiet=True, log=None)
    wall = time.perf_counter() - t
    summary = json.loads((run / "summary.json").read_text())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in lines if x["split"] == "train_epoch"]
    n_train = sum(x["examples_per_s"] * x["seconds"] for x in epochs)
    predictor = seqlab.load(run)
    test_texts = data["test"][0]
    return {
        "valid_accuracy": summary["results"]["valid"]["accuracy"],
        "best_epoch": summary["results"]["valid"]["epoch"],
        "test_accuracy": summary["results"]["test"]["accuracy"],
        "wall_s": wall,
        "train_examples_per_s": n_train / sum(x["seconds"] for x in epochs),
        "infer_examples_per_s": rate(lambda: predictor.predict(test_texts), len(test_texts)),
        "parameters": summary["parameters"],
    }


def run_svm(data: dict) -> dict:
    (x_train, y_train), t = data["train"], time.perf_counter()
    vec, clf = svm_model()
    clf.fit(vec.fit_transform(x_train), y_train)
    wall = time.perf_counter() - t

    def predict(texts):
        return list(clf.predict(vec.transform(texts)))

    return _peer_result(data, predict, wall, len(x_train))


def run_fasttext(data: dict, threads: int) -> dict:
    import fasttext

    def line(text: str) -> str:
        return " ".join(text.split())

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "train.txt"
        x_train, y_train = data["train"]
        path.write_text("".join(fasttext_line(x, y) for x, y in zip(x_train, y_train, strict=True)))
        t = time.perf_counter()
        model = fasttext.train_supervised(str(path), thread=threads, verbose=0, **FASTTEXT_ARGS)
        wall = time.perf_counter() - t
    names = {f"__label__{y.replace(' ', '_')}": y for y in set(y_train)}

    def predict(texts):
        labels, _ = model.predict([line(x) for x in texts])
        return [names[lab[0]] for lab in labels]

    return _peer_result(data, predict, wall, FASTTEXT_ARGS["epoch"] * len(x_train))


def _peer_result(data: dict, predict, wall: float, trained: int) -> dict:
    test_texts = data["test"][0]
    return {
        "valid_accuracy": accuracy(predict(data["valid"][0]), data["valid"][1]) if "valid" in data else None,
        "test_accuracy": accuracy(predict(test_texts), data["test"][1]),
        "wall_s": wall,
        "train_examples_per_s": trained / wall,
        "infer_examples_per_s": rate(lambda: predict(test_texts), len(test_texts)),
    }


def table(results: dict) -> str:
    head = ("| case | system | valid acc | test acc | wall s | train ex/s | infer ex/s | test acc − TF-IDF "
            "| wall ÷ TF-IDF |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for case, systems in results.items():
        svm = systems["tfidf_svm"]
        for name, r in systems.items():
            valid = f"{r['valid_accuracy'] * 100:.1f}%" if r["valid_accuracy"] is not None else "-"
            rows.append(
                f"| {case} | {name} | {valid} | {r['test_accuracy'] * 100:.1f}% | {r['wall_s']:.0f} "
                f"| {r['train_examples_per_s']:,.0f} | {r['infer_examples_per_s']:,.0f} "
                f"| {(r['test_accuracy'] - svm['test_accuracy']) * 100:+.1f} | {r['wall_s'] / svm['wall_s']:.1f}× |"
            )
    return "\n".join([head, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch / fastText threads")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "encoders.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    report = {"threads": a.threads, "torch": torch.__version__, "load_before": os.getloadavg(), "results": {}}
    with tempfile.TemporaryDirectory() as d:
        by_preset = {}
        for case in a.cases:
            preset = CASES[case]
            data = splits(preset, a.threads)
            dataset = case.split("-")[0]
            results = report["results"].setdefault(dataset, {})
            if dataset not in by_preset:  # the peers once per dataset
                by_preset[dataset] = True
                results["tfidf_svm"] = run_svm(data)
                results["fasttext"] = run_fasttext(data, a.threads)
            model = case.split("-", 1)[1]
            results[model] = run_seqlab(preset, a.threads, Path(d) / case, data)
            print(f"{case}: {json.dumps(results[model])}  (load {os.getloadavg()[0]:.1f})", flush=True)
    report["load_after"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(f"\nload average before {report['load_before'][0]:.1f}, after {report['load_after'][0]:.1f} "
          f"(2 cores); threads {a.threads}\n")
    print(table(report["results"]))


if __name__ == "__main__":
    main()
