"""Issue 19 benchmark: learn from unlabeled text. A language model pretrained on IMDB's own text, classifiers
fine-tuned from it, and the same classifiers from scratch beside them, in one run.

    SEQLAB_DATA=../shared/data python bench/bench_pretrain.py [--lm RUN_DIR] [--cases imdb,sst2]
                                                            [--out bench/results/pretrain.json]

1. `seqlab train imdb/lm` (IMDB's 50,000 unlabeled + 25,000 training reviews, imdb:test excluded), unless
   `--lm` names a finished run of that preset (its own summary gives its time).
2. For each case: `seqlab train CASE/finetune init_from=LM` and the same classifier from a random start with
   the same budget and schedule but for what only fine-tuning needs: `init_from=null train.layer_lr_decay=1
   train.gradual_unfreezing=false` (every layer at the full learning rate). Model selection on each run's valid split
   (held out of train); test is IMDB test / GLUE SST-2 dev, read once at the end.
Every command is a process of its own, one after the other (never side by side: two cores). Times are whole
processes (reading, tokenizing, training, the test evaluation).
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


def train(preset: str, out: Path, *overrides: str) -> dict:
    """One `seqlab train` process; its summary (test metrics, times, init_from facts) and whole wall time."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "seqlab.cli", "train", preset, *overrides, "--out", str(out)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return summary(out, time.time() - t0)


def summary(run: Path, wall: float | None = None) -> dict:
    s = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [m for m in metrics if m.get("split") == "valid"]
    return {"run": str(run), "process_seconds": wall, "wall_seconds": s["wall_seconds"],
            "fit_seconds": s["fit_seconds"], "parameters": s["parameters"], "test": s["results"].get("test"),
            "best_valid": s["results"].get("valid"), "valid_curve": valid,
            "init_from": s["counts"].get("init_from"), "excluded_texts": s["counts"].get("excluded_texts")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", help="a finished run of imdb/lm to fine-tune from (default: pretrain one here)")
    ap.add_argument("--cases", default="imdb,sst2")
    ap.add_argument("--runs", default="runs/bench_pretrain", help="where the runs go")
    ap.add_argument("--out", default=str(REPO / "bench/results/pretrain.json"))
    a = ap.parse_args()
    runs = Path(a.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    results: dict = {"hardware": hardware(), "load_average_before": os.getloadavg()}
    if a.lm:
        lm = Path(a.lm).resolve()
        results["lm"] = summary(lm)
    else:
        lm = runs / "imdb-lm"
        results["lm"] = train("imdb/lm", lm)
    print(f"lm: valid {results['lm']['best_valid']} in {results['lm']['wall_seconds']:.0f} s", flush=True)
    for case in a.cases.split(","):
        for name, overrides in (("finetuned", [f"init_from={lm}"]),
                                ("scratch", ["init_from=null", "train.layer_lr_decay=1.0",
                                             "train.gradual_unfreezing=false"])):
            r = train(f"{case}/finetune", runs / f"{case}-{name}", *overrides)
            results[f"{case}_{name}"] = r
            print(f"{case} {name}: test accuracy {r['test']['accuracy']:.4f}, {r['process_seconds']:.0f} s",
                  flush=True)
    results["load_average_after"] = os.getloadavg()
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
