"""POS tagging benchmark: seqlab's tagger beside a CRF peer, in one run, on UD English-LinES (UPOS, gold
tokens), plus both on EWT test (another domain, the same LinES-trained models).

    python bench/bench_tagging.py [PRESET.yaml] [key=value ...] [--out RUN_DIR] [--json FILE] [--no-crf]

The peer is the classic CRF (sklearn-crfsuite; `pip install sklearn-crfsuite`) with the standard
hand-written features: the word lowercased, its suffixes (2, 3) and prefix (3), its shape (upper / title /
digit / capitalisation pattern), and the same for the words at -2..+2; L-BFGS with c1 = c2 = 0.1.
"Unseen" words are those whose form never occurs in LinES train, the same set for both taggers.
Trainings run one after the other, never at once; the load average of the machine is recorded beside
the timings (the CPU may be shared). Model selection uses dev only; test is read once at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import seqlab
from seqlab.data import get_dataset
from seqlab.data.conllu import read_conllu

DEFAULT_PRESET = Path(__file__).resolve().parent.parent / "configs" / "ud_english" / "rnn.yaml"


def shape(word: str) -> str:
    """Xxxx-style word shape with runs collapsed: "McDonald's" -> "XxXx'x", "1990" -> "d"."""
    s = re.sub("[A-Z]", "X", word)
    s = re.sub("[a-z]", "x", s)
    s = re.sub("[0-9]", "d", s)
    return re.sub(r"(.)\1+", r"\1", s)


def word_features(word: str, prefix: str) -> dict:
    return {
        f"{prefix}lower": word.lower(),
        f"{prefix}suffix3": word[-3:].lower(),
        f"{prefix}suffix2": word[-2:].lower(),
        f"{prefix}prefix3": word[:3].lower(),
        f"{prefix}shape": shape(word),
        f"{prefix}isupper": word.isupper(),
        f"{prefix}istitle": word.istitle(),
        f"{prefix}isdigit": word.isdigit(),
        f"{prefix}hyphen": "-" in word,
    }


def sentence_features(tokens: list[str]) -> list[dict]:
    feats = []
    for i, word in enumerate(tokens):
        f = {"bias": 1.0, **word_features(word, "")}
        for off in (-2, -1, 1, 2):
            j = i + off
            if 0 <= j < len(tokens):
                f.update(word_features(tokens[j], f"{off:+d}:"))
            else:
                f[f"{off:+d}:pad"] = True
        feats.append(f)
    return feats


def scores(gold: list[list[str]], pred: list[list[str]], tokens: list[list[str]], train_forms: set[str]) -> dict:
    n = correct = n_unseen = unseen_correct = 0
    for g_s, p_s, t_s in zip(gold, pred, tokens, strict=True):
        for g, p, t in zip(g_s, p_s, t_s, strict=True):
            n += 1
            correct += g == p
            if t not in train_forms:
                n_unseen += 1
                unseen_correct += g == p
    return {"upos_accuracy": correct / n, "unseen_accuracy": unseen_correct / n_unseen, "tokens": n,
            "unseen_tokens": n_unseen}


def run_crf(train, test, ewt, train_forms) -> dict:
    import sklearn_crfsuite

    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=100,
                               all_possible_transitions=True)
    t0 = time.perf_counter()
    crf.fit([sentence_features(s.tokens) for s in train], [s.tags for s in train])
    seconds = time.perf_counter() - t0
    out = {"train_seconds": seconds}
    for name, sents in (("test", test), ("ewt_test", ewt)):
        pred = crf.predict([sentence_features(s.tokens) for s in sents])
        out[name] = scores([s.tags for s in sents], pred, [s.tokens for s in sents], train_forms)
    return out


def run_seqlab(preset: str, overrides: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    run = seqlab.train(preset, overrides, out=out, quiet=True)
    seconds = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    keep = ("upos_accuracy", "unseen_accuracy", "macro_f1", "tokens", "unseen_tokens")
    test = seqlab.evaluate(run)
    ewt = seqlab.evaluate(run, data="ud_english_ewt")
    return {"run_dir": str(run), "train_seconds": seconds, "parameters": summary["parameters"],
            "best_valid": summary["results"].get("valid"), "threads": summary.get("threads"),
            "test": {k: test[k] for k in keep}, "ewt_test": {k: ewt[k] for k in keep}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("args", nargs="*", help="[PRESET.yaml] [key=value ...] for seqlab")
    ap.add_argument("--out", default="runs/bench-tagging", help="seqlab's run directory (must not exist)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--no-crf", action="store_true", help="skip the CRF peer")
    a = ap.parse_args()
    preset = next((x for x in a.args if "=" not in x), str(DEFAULT_PRESET))
    overrides = [x for x in a.args if "=" in x]
    lines = get_dataset("ud_english")
    train = list(read_conllu(lines.train))
    test = list(read_conllu(lines.test))
    ewt = list(read_conllu(get_dataset("ud_english_ewt").test))
    train_forms = {w for s in train for w in s.tokens}
    results: dict = {"command": " ".join(["python", *sys.argv]), "load_before": os.getloadavg()}
    if not a.no_crf:
        results["crf"] = run_crf(train, test, ewt, train_forms)
        results["load_after_crf"] = os.getloadavg()
    results["seqlab"] = run_seqlab(preset, overrides, Path(a.out))
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    print("\n| tagger | LinES test UPOS | unseen | EWT test UPOS | train time |\n|---|---:|---:|---:|---:|")
    for name, r in (("seqlab " + Path(preset).stem, results["seqlab"]), ("CRF (sklearn-crfsuite)", results.get("crf"))):
        if r:
            print(f"| {name} | {r['test']['upos_accuracy']:.2%} | {r['test']['unseen_accuracy']:.2%} | "
                  f"{r['ewt_test']['upos_accuracy']:.2%} | {r['train_seconds']:.1f} s |")


if __name__ == "__main__":
    main()
