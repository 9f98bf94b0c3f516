"""Issue 20 benchmark: `seqlab tune` within a wall-clock budget, and fastText's autotune beside it, in one run.

    SEQLAB_DATA=../shared/data python bench/bench_tune.py [--cases imdb,sst2,fasttext] [--out bench/results/tune.json]
    SEQLAB_DATA=../shared/data python bench/bench_tune.py --cases fasttext --fasttext-files TRAIN VALID TEST

Cases (each tuned on its valid split only; the best trial's run is evaluated once on test):
  - imdb: `seqlab tune imdb/bag --budget 10m` (target: test accuracy >= 91.2%, NBSVM's);
  - sst2: `seqlab tune sst2/bag --budget 5m` (target >= 82.6%, the TF-IDF SVM here);
  - fasttext: files in fastText's format (default: TREC-6, its train split less a seeded 10% as the
    validation file, TREC_10 as test). fastText's autotune (`train_supervised(autotuneValidationFile=VALID,
    autotuneDuration=300, thread=2)`) and `seqlab tune data.train=TRAIN data.valid=VALID --budget 5m`, both
    tested on TEST (P@1). Each command runs as a process of its own (`python -m seqlab.cli tune ...`), one after
    the other, never side by side, so each has the machine's two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seqlab.report.card import hardware  # noqa: E402

CASES = {"imdb": ("imdb/bag", "10m"), "sst2": ("sst2/bag", "5m")}


def run_tune(args: list[str], out: Path) -> dict:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "seqlab.cli", "tune", *args, "--out", str(out)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    result = json.loads((out / "result.json").read_text())
    result["wall_seconds"] = time.time() - t0
    result["log"] = proc.stdout.splitlines()
    return result


def trec_fasttext_files(root: Path) -> tuple[Path, Path, Path]:
    """TREC-6 in fastText's format: train less a seeded 10% (the validation file), and TREC_10 as test."""
    from seqlab.data import get_dataset, read

    spec = get_dataset("trec")
    rows = [(ex.label, " ".join(ex.text.split())) for ex in read(spec.train, format=spec.format,
                                                                 **spec.reader_options)]
    test = [(ex.label, " ".join(ex.text.split())) for ex in read(spec.test, format=spec.format,
                                                                 **spec.reader_options)]
    random.Random(0).shuffle(rows)
    n_valid = len(rows) // 10
    files = []
    for name, part in (("train", rows[n_valid:]), ("valid", rows[:n_valid]), ("test", test)):
        path = root / f"trec.{name}"
        path.write_text("".join(f"__label__{label} {text}\n" for label, text in part), encoding="utf-8")
        files.append(path)
    return files[0], files[1], files[2]


FASTTEXT_AUTOTUNE = """
import json, sys, time, fasttext
train, valid, test, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.time()
model = fasttext.train_supervised(input=train, autotuneValidationFile=valid, autotuneDuration=seconds, thread=2,
                                  verbose=0)
wall = time.time() - t0
n, p1, r1 = model.test(test)
args = model.f.getArgs()
print(json.dumps({"test_p@1": p1, "test_examples": n, "wall_seconds": wall, "valid_p@1": model.test(valid)[1],
                  "params": {k: str(getattr(args, k)) for k in ("lr", "epoch", "dim", "wordNgrams", "minCount",
                                                                 "bucket", "loss")}}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="imdb,sst2,fasttext")
    p.add_argument("--fasttext-files", nargs=3, type=Path, metavar=("TRAIN", "VALID", "TEST"))
    p.add_argument("--fasttext-budget", type=int, default=300, help="seconds, for both autotunes")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tune.json")
    a = p.parse_args()
    report: dict = {"hardware": hardware(), "load_average_before": os.getloadavg(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for case in a.cases.split(","):
            if case in CASES:
                preset, budget = CASES[case]
                r = run_tune([preset, "--budget", budget], root / case)
                report["cases"][case] = {k: r[k] for k in ("best_params", "valid", "test", "trials", "seconds",
                                                           "wall_seconds", "budget_seconds", "log")}
            elif case == "fasttext":
                train, valid, test = a.fasttext_files or trec_fasttext_files(root)
                ft = subprocess.run([sys.executable, "-c", FASTTEXT_AUTOTUNE, str(train), str(valid), str(test),
                                     str(a.fasttext_budget)], capture_output=True, text=True)
                if ft.returncode:
                    raise RuntimeError(ft.stderr[-3000:])
                peer = json.loads(ft.stdout.strip().splitlines()[-1])
                r = run_tune([f"data.train={train}", f"data.valid={valid}", f"data.test={test}",
                              "data.format=fasttext", "--budget", f"{a.fasttext_budget}s"], root / case)
                report["cases"][case] = {"files": [str(f) for f in (train, valid, test)], "fasttext_autotune": peer,
                                         "seqlab_tune": {k: r[k] for k in ("best_params", "valid", "test", "trials",
                                                                           "seconds", "wall_seconds", "log")}}
            else:
                raise SystemExit(f"unknown case {case!r}")
            print(json.dumps({case: {k: v for k, v in report["cases"][case].items() if k != "log"}}, default=str),
                  flush=True)
            report["load_average_after"] = os.getloadavg()
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(report, indent=1, default=str))  # after each case: a crash keeps the rest


if __name__ == "__main__":
    main()
