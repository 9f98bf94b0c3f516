"""Issue 19 benchmark: seqlab's word vectors beside gensim's FastText on the same texts, in one run.

    SEQLAB_DATA=../shared/data python bench/bench_vectors.py [--epochs 5] [--out bench/results/vectors.json]

1. `seqlab train imdb/vectors` (IMDB's 50,000 unlabeled + 25,000 training reviews, imdb:test excluded; fastText's
   skip-gram with character n-grams, dim 100, window 5, min count 5, 5 epochs), a process of its own.
2. gensim's `FastText` on the same texts cut into the same words (seqlab's basic_english, the same excluded
   reviews left out), `vector_size=100, window=5, min_count=5, epochs=5, workers=2`, its other settings
   its defaults (CBOW, sample 1e-3); and the same with `sg=1` (skip-gram, as seqlab's preset), one after the
   other.
Scores with gensim's own evaluators on the sets its package ships: `wordsim353.tsv` (Spearman ρ of cosine
against the human scores) and `questions-words.txt` (analogy accuracy, 3CosAdd, the 30,000 most frequent
words), words of each model's vocabulary (pairs or questions with an unknown word are left out, as gensim does);
words/s = corpus words x epochs / training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seqlab.report.card import hardware  # noqa: E402


def scores(kv) -> dict:
    from gensim.test.utils import datapath

    pearson, spearman, oov = kv.evaluate_word_pairs(datapath("wordsim353.tsv"))
    analogy, sections = kv.evaluate_word_analogies(datapath("questions-words.txt"), restrict_vocab=30_000)
    asked = sum(len(s["correct"]) + len(s["incorrect"]) for s in sections if s["section"] == "Total accuracy")
    return {"wordsim353_spearman": float(spearman[0]), "wordsim353_oov_percent": float(oov),
            "analogy_accuracy": float(analogy), "analogy_questions": asked}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/bench_vectors")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench/results/vectors.json"))
    a = ap.parse_args()
    from gensim.models import FastText, KeyedVectors

    import seqlab
    from seqlab.config import make_config
    from seqlab.tasks.vectors import VectorsTask

    runs = Path(a.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    task = VectorsTask(make_config("imdb/vectors"), device=None, log=None)  # the same texts, cut the same way
    sentences = [task.tokenize(t) for t in task.corpus(task.sources()["train"], "train")]
    n_words = sum(len(s) for s in sentences)  # words/s counts every word of the corpus, for both
    results: dict = {"hardware": hardware(), "load_average_before": os.getloadavg(), "corpus_words": n_words}
    out = runs / "seqlab"
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "seqlab.cli", "train", "imdb/vectors", f"train.epochs={a.epochs}",
                           "--out", str(out)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    results["seqlab"] = {"process_seconds": time.time() - t0, "fit_seconds": summary["fit_seconds"],
                         "words_per_s": n_words * a.epochs / summary["fit_seconds"],
                         "vocab": summary["counts"]["vocab_size"],
                         **scores(KeyedVectors.load_word2vec_format(str(out / "vectors.vec")))}
    print("seqlab", results["seqlab"], flush=True)

    for name, extra in (("gensim_fasttext_defaults", {}), ("gensim_fasttext_sg", {"sg": 1})):
        t0 = time.time()
        model = FastText(vector_size=100, window=5, min_count=5, epochs=a.epochs, workers=2, seed=0, **extra)
        model.build_vocab(sentences)
        t1 = time.time()
        model.train(sentences, total_examples=len(sentences), epochs=a.epochs)
        fit = time.time() - t1
        results[name] = {"seconds": time.time() - t0, "fit_seconds": fit, "words_per_s": n_words * a.epochs / fit,
                         "vocab": len(model.wv), **scores(model.wv)}
        print(name, results[name], flush=True)
    results["load_average_after"] = os.getloadavg()
    results["seqlab_version"] = seqlab.__version__
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
