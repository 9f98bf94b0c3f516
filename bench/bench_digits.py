"""Image benchmark: seqlab's ConvNet on scikit-learn's 8x8 digits beside an SVM peer, in one run.

    python bench/bench_digits.py [PRESET.yaml] [key=value ...] [--out RUN_DIR] [--json FILE]

Both see the same split: seqlab's fixed digits test split (20%, the same for every seed) and its
training split (the ConvNet also holds out its valid split from it; the SVM trains on that training
split too, with scikit-learn's defaults: RBF kernel, C=1, gamma="scale", on pixels scaled to [0, 1]).
The machine's load average is recorded beside the timings (the CPU may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import seqlab
from seqlab.config import make_config
from seqlab.tasks.image import ImageTask

DEFAULT_PRESET = Path(__file__).resolve().parent.parent / "configs" / "digits" / "convnet.yaml"


def run_svm(preset: str, overrides: list[str]) -> dict:
    from sklearn.svm import SVC

    task = ImageTask(make_config(preset, overrides), torch.device("cpu"), log=None)
    task.prepare()
    train, test = task.splits["train"], task.splits["test"]

    def flat(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1) / 255.0

    t0 = time.perf_counter()
    svm = SVC().fit(flat(train.images), train.labels)
    seconds = time.perf_counter() - t0
    return {"train_seconds": seconds, "train_examples": len(train.labels),
            "test": {"accuracy": float((svm.predict(flat(test.images)) == test.labels).mean()),
                     "examples": len(test.labels)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("args", nargs="*", help="[PRESET.yaml] [key=value ...] for seqlab")
    ap.add_argument("--out", default="runs/bench-digits", help="seqlab's run directory (must not exist)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    preset = next((x for x in a.args if "=" not in x), str(DEFAULT_PRESET))
    overrides = [x for x in a.args if "=" in x]
    results: dict = {"command": " ".join(["python", *sys.argv]), "load_before": os.getloadavg()}
    results["svm"] = run_svm(preset, overrides)
    t0 = time.perf_counter()
    run = seqlab.train(preset, overrides, out=a.out, quiet=True)
    seconds = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    rep = seqlab.evaluate(run)
    results["seqlab"] = {"run_dir": str(run), "train_seconds": seconds, "parameters": summary["parameters"],
                         "threads": summary.get("threads"), "best_valid": summary["results"].get("valid"),
                         "test": {k: rep[k] for k in ("accuracy", "macro_f1", "loss", "examples")}}
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    print("\n| model | digits test accuracy | train time |\n|---|---:|---:|")
    print(f"| seqlab {Path(preset).stem} | {results['seqlab']['test']['accuracy']:.2%} | {seconds:.1f} s |")
    print(f"| SVM (scikit-learn SVC) | {results['svm']['test']['accuracy']:.2%} | "
          f"{results['svm']['train_seconds']:.1f} s |")


if __name__ == "__main__":
    main()
