"""Issue 5 benchmark: Multi30k (task 1) German -> English, the Transformer and the RNN with attention.

    SEQLAB_DATA=../shared/data flock /work/bench.lock python bench/bench_translate.py CASE [CASE ...] \\
        [--runs runs/bench-translate] [--json bench/results/translate.json] [key=value ...]

Cases: transformer (`multi30k/transformer`), rnn (`multi30k/rnn_attention`).
key=value overrides go to every case (e.g. threads=1).

Each case is one `python -m seqlab train PRESET --quiet` process: its wall time includes start-up, reading,
BPE training, the greedy BLEU on val2016 after every epoch (which picks the checkpoint) and the final test on
test2016 (beam search, and greedy beside it). Reported: test BLEU / chrF (sacrebleu, detokenised, cased) for
beam and greedy, the best valid BLEU and its epoch, training tokens/s (source + target subword tokens, eos
included, over the time spent in training steps), decoding sentences/s on test, and the load average (the
CPU may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from preset_run import load_average, train_preset

REPO = Path(__file__).resolve().parent.parent

CASES = {
    "transformer": {"preset": "multi30k/transformer", "target_bleu": 40.0},
    "rnn": {"preset": "multi30k/rnn_attention", "target_bleu": 37.0},
}
BUDGET_S = 45 * 60


def run_case(name: str, runs: Path, overrides: list[str]) -> dict:
    case = CASES[name]
    out = runs / name
    load_before = load_average()
    wall, lines = train_preset(case["preset"], overrides, out)
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    epochs = [x for x in lines if x["split"] == "train_epoch"]
    valid = [x for x in lines if x["split"] == "valid"]
    test = lines[-1]
    best = max(valid, key=lambda x: x["bleu"])
    train_s = sum(x["seconds"] for x in epochs)
    tokens = counts["train_src_tokens"] + counts["train_tgt_tokens"] + counts["train_examples"]  # + eos
    return {
        "case": name, "preset": case["preset"], "overrides": overrides, "wall_s": round(wall, 1),
        "within_budget": wall <= BUDGET_S, "epochs": len(epochs), "parameters": summary["parameters"],
        "test_bleu": round(test["bleu"], 2), "test_chrf": round(test["chrf"], 2),
        "test_greedy_bleu": round(test["greedy_bleu"], 2), "test_greedy_chrf": round(test["greedy_chrf"], 2),
        "target_bleu": case["target_bleu"],
        "target_met": test["bleu"] >= case["target_bleu"] and wall <= BUDGET_S,
        "best_valid_bleu": round(best["bleu"], 2), "best_epoch": best["epoch"],
        "kept_valid": summary["results"].get("valid"),
        "valid_average": [{k: x[k] for k in ("epochs", "bleu")} for x in lines if x["split"] == "valid_average"],
        "decoding": json.loads(decoding.read_text()) if (decoding := out / "decoding.json").exists() else None,
        "valid_bleu_per_epoch": [round(x["bleu"], 2) for x in valid],
        "train_seconds": round(train_s, 1), "train_tokens_per_s": round(len(epochs) * tokens / train_s),
        "beam_sentences_per_s": round(test["sentences_per_s"], 1),
        "greedy_sentences_per_s": round(test["greedy_sentences_per_s"], 1),
        "load_before": load_before, "load_after": load_average(),
    }


def table(results: list[dict]) -> str:
    head = ("| preset | test BLEU (beam) | greedy | chrF (beam) | best valid BLEU (epoch) | wall "
            "| train tok/s | decode sent/s (beam / greedy) | load |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [f"| `{r['preset']}` | **{r['test_bleu']:.2f}** | {r['test_greedy_bleu']:.2f} "
            f"| {r['test_chrf']:.2f} | {r['best_valid_bleu']:.2f} ({r['best_epoch']}/{r['epochs']}) "
            f"| {r['wall_s'] / 60:.1f} min | {r['train_tokens_per_s']:,} "
            f"| {r['beam_sentences_per_s']:.0f} / {r['greedy_sentences_per_s']:.0f} "
            f"| {r['load_before']:.1f}-{r['load_after']:.1f} |" for r in results]
    return "\n".join([head, *rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs="+", metavar="CASE | key=value",
                   help=f"cases ({', '.join(CASES)}) and config overrides")
    p.add_argument("--runs", type=Path, default=Path("runs/bench-translate"))
    p.add_argument("--json", type=Path, default=Path("bench/results/translate.json"))
    args = p.parse_args()
    overrides = [a for a in args.args if "=" in a]
    args.cases = [a for a in args.args if "=" not in a]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown or not args.cases:
        p.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if not os.environ.get("SEQLAB_DATA"):
        raise SystemExit("set SEQLAB_DATA to the directory holding multi30k/")
    results = [run_case(name, args.runs.resolve(), overrides) for name in args.cases]
    for r in results:
        print(json.dumps(r))
    print(table(results))
    if args.json:
        path = args.json if args.json.is_absolute() else REPO / args.json
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update({r["case"]: r for r in results})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(old, indent=1) + "\n")


if __name__ == "__main__":
    main()
