"""Issue 2 benchmark: the `bag` classifier against fastText and TF-IDF + LinearSVC, side by side in one run.

    SEQLAB_DATA=../shared/data python bench/bench_bag.py [--threads 2] [--repeats 3] [--out bench/results/bag.json]

For each dataset (SST-2: GLUE train -> dev; TREC-6: train_5500 -> TREC_10; the lecture's exact recipe on the
bundled AG_NEWS sample) it measures, as separate processes so that every figure includes start-up:
  - seqlab: `python -m seqlab train PRESET threads=N --quiet` (read + tokenize + train + test), its test accuracy,
    and, in-process, data preparation (read, tokenize, n-grams, encode) and training throughput (examples/s);
  - fastText: `fasttext.train_supervised(wordNgrams=2, epoch=5, thread=N)` + `test` on the same split, from files
    in fastText's format written beforehand (not timed: that is the peer's input format);
  - TF-IDF (word 1-2 grams) + LinearSVC (scikit-learn), fit on train and scored on test.
Wall times are the median of `--repeats` runs. Model selection uses only the held-out valid split.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seqlab.data import get_dataset, read  # noqa: E402
from seqlab.report.card import hardware  # noqa: E402

CASES = {
    "sst2": {"preset": "sst2/bag", "dataset": "sst2"},
    "trec": {"preset": "trec/bag", "dataset": "trec"},
    "imdb": {"preset": "imdb/bag", "dataset": "imdb"},
    "lecture_sample": {"preset": "lecture/ag_news_bag", "dataset": "sample",
                       "overrides": ["dataset=sample"]},
}


def examples(dataset: str, split: str) -> tuple[list[str], list[str]]:
    spec = get_dataset(dataset)
    path = getattr(spec, split)
    texts, labels = [], []
    for ex in read(path, format=spec.format, **spec.reader_options):
        texts.append(ex.text)
        labels.append(ex.label)
    return texts, labels


# runs a command and writes its peak RSS (kB) to a file: the command is a child of this small process, not of
# the benchmark (a child forked from a large process reports that process's size as its own peak)
PEAK = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def timed(cmd: list[str], env: dict) -> tuple[float, str, float]:
    """Run a process: (wall seconds, its stdout, its peak RSS in MB)."""
    with tempfile.TemporaryDirectory() as d:
        peak = Path(d) / "peak"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PEAK, str(peak), *cmd], capture_output=True, text=True,
                              env=env, cwd=REPO)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd} failed: {proc.stderr[-2000:]}")
        return wall, proc.stdout, int(peak.read_text()) / 1024


FASTTEXT_ARGS = {"wordNgrams": 2, "epoch": 5}  # the peers' fixed recipes (also used by bench_encoders.py)
FASTTEXT = f"""
import sys, time, fasttext
t = time.perf_counter()
m = fasttext.train_supervised(sys.argv[1], thread=int(sys.argv[3]), verbose=0, **{FASTTEXT_ARGS!r})
seconds = time.perf_counter() - t
words = sum(sum(not w.startswith("__label__") for w in line.split()) for line in open(sys.argv[1]))
n, p, r = m.test(sys.argv[2])
print(words * {FASTTEXT_ARGS['epoch']} / seconds / int(sys.argv[3]))  # words/s/thread of training (with loading)
print(p)
"""


def fasttext_line(text: str, label: str) -> str:
    """One example in fastText's supervised format (whitespace normalised)."""
    return f"__label__{label.replace(' ', '_')} {' '.join(text.split())}\n"


def svm_model():
    """TF-IDF over word 1-2 grams (sublinear tf) and a linear SVM: (vectorizer, classifier), unfitted."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1), LinearSVC(C=1.0)


def run_fasttext(train: tuple, test: tuple, threads: int, repeats: int, tmp: Path, env: dict) -> dict:
    def write(path: Path, data: tuple) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(fasttext_line(text, label) for text, label in zip(*data, strict=True))

    write(tmp / "ft_train.txt", train)
    write(tmp / "ft_test.txt", test)
    walls, accs, rss, rates = [], [], [], []
    for _ in range(repeats):
        wall, out, peak = timed([sys.executable, "-c", FASTTEXT, str(tmp / "ft_train.txt"),
                                 str(tmp / "ft_test.txt"), str(threads)], env)
        walls.append(wall)
        rss.append(peak)
        rate, acc = out.strip().splitlines()[-2:]
        rates.append(float(rate))
        accs.append(float(acc))
    return {"wall_s": statistics.median(walls), "accuracy": statistics.mean(accs), "accuracies": accs,
            "peak_rss_mb": max(rss), "train_words_per_s_per_thread": statistics.median(rates)}


def run_svm(train: tuple, test: tuple) -> dict:
    t = time.perf_counter()
    vec, clf = svm_model()
    clf.fit(vec.fit_transform(train[0]), train[1])
    pred = clf.predict(vec.transform(test[0]))
    acc = sum(p == g for p, g in zip(pred, test[1], strict=True)) / len(test[1])
    return {"wall_s": time.perf_counter() - t, "accuracy": acc}


def run_seqlab(case: dict, threads: int, repeats: int, tmp: Path, env: dict) -> dict:
    walls, accs, rss = [], [], []
    for i in range(repeats):
        out = tmp / f"run-{case['dataset']}-{i}"
        cmd = [sys.executable, "-m", "seqlab", "train", case["preset"], f"threads={threads}",
               *case.get("overrides", []), "--quiet", "--out", str(out)]
        wall, _, peak = timed(cmd, env)
        walls.append(wall)
        rss.append(peak)
        summary = json.loads((out / "summary.json").read_text())
        accs.append(summary["results"]["test"]["accuracy"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rate = statistics.median(x["examples_per_s"] for x in lines if x["split"] == "train_epoch")
    # data preparation alone (read, tokenize, n-grams, vocabulary, encode), in-process
    import torch

    from seqlab.config import make_config
    from seqlab.tasks import TASKS

    torch.set_num_threads(threads)
    cfg = make_config(case["preset"], case.get("overrides", []))
    task = TASKS[cfg.task](cfg, torch.device("cpu"), log=None)
    t = time.perf_counter()
    task.prepare()
    prep = time.perf_counter() - t
    n_texts = sum(len(s.texts) for s in task.splits.values())
    train_texts = task.splits["train"].texts
    words_per_text = sum(len(task.tokenize(t)) for t in train_texts) / len(train_texts)
    return {"wall_s": statistics.median(walls), "accuracy": statistics.mean(accs), "accuracies": accs,
            "peak_rss_mb": max(rss), "prepare_s": prep, "prepare_texts_per_s": n_texts / prep,
            "train_examples_per_s": train_rate,
            "train_words_per_s_per_thread": train_rate * words_per_text / threads}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bag.json"))
    a = ap.parse_args()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    results = {"threads": a.threads, "repeats": a.repeats, "hardware": hardware(), "load_before": os.getloadavg()[0],
               "cases": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in a.cases:
            case = CASES[name]
            train, test = examples(case["dataset"], "train"), examples(case["dataset"], "test")
            r = {"seqlab": run_seqlab(case, a.threads, a.repeats, tmp, env)}
            if name != "lecture_sample":
                r["fasttext"] = run_fasttext(train, test, a.threads, a.repeats, tmp, env)
                r["tfidf_svm"] = run_svm(train, test)
            results["cases"][name] = r
            s = r["seqlab"]
            print(f"\n== {name}: train {len(train[0]):,} / test {len(test[0]):,}")
            print(f"{'system':<12} {'accuracy':>9} {'wall s':>8} {'peak RSS MB':>12}")
            for system, v in r.items():
                print(f"{system:<12} {v['accuracy'] * 100:8.2f}% {v['wall_s']:8.2f} {v.get('peak_rss_mb', 0):12.0f}")
            if "fasttext" in r:
                print(f"seqlab/fastText wall ratio {s['wall_s'] / r['fasttext']['wall_s']:.2f}x; accuracy "
                      f"{(s['accuracy'] - r['fasttext']['accuracy']) * 100:+.2f} points")
            print(f"seqlab data preparation {s['prepare_s']:.2f} s ({s['prepare_texts_per_s']:,.0f} texts/s), "
                  f"training {s['train_examples_per_s']:,.0f} examples/s, "
                  f"{s['train_words_per_s_per_thread']:,.0f} words/s/thread"
                  + (f" (fastText {r['fasttext']['train_words_per_s_per_thread']:,.0f}, its loading included)"
                     if "fasttext" in r else ""))
    results["load_after"] = os.getloadavg()[0]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {a.out}  (load average before {results['load_before']:.2f}, after {results['load_after']:.2f})")


if __name__ == "__main__":
    main()
