"""Issue 8 benchmark: data-parallel training on the CPU, 2 processes x 1 thread vs 1 process x 1 thread.

    flock /work/bench.lock python bench/bench_ddp.py [--batch 64] [--epochs 2] [--out bench/results/ddp.json]

Trains the `cnn` classifier on the bundled AG_NEWS sample (6,600 texts) twice at the same global batch: one
process with `train.batch_size=2b` (`python -m seqlab train`), and `torchrun --nproc_per_node 2 -m seqlab
train` with `train.batch_size=b` per rank, both with `threads=1`. Throughput is the training examples/s of each
epoch as the run's metrics.jsonl reports it (rank 0, over the examples of all ranks; evaluation and data
preparation excluded); the ratio uses the median over epochs. The machine's load average is recorded: its 2
cores may be shared with other work.
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
BIN = Path(sys.executable).parent


def _run(cmd: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    subprocess.run(cmd + [f"--out={out}", "--quiet"], check=True, cwd=REPO, stdout=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["split"] == "train_epoch"]
    test = next(r for r in records if r["split"] == "test")
    return {"wall_s": wall, "examples_per_s": [r["examples_per_s"] for r in epochs],
            "median_examples_per_s": statistics.median(r["examples_per_s"] for r in epochs),
            "test_accuracy": test["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="per-rank batch b (one process uses 2b)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default="bench/results/ddp.json")
    a = ap.parse_args()
    common = ["dataset=sample", "model=cnn", "threads=1", "train.bucket=false", "train.optimizer=sgd",
              "train.lr=0.5", f"train.epochs={a.epochs}"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        one = _run([sys.executable, "-m", "seqlab", "train", *common, f"train.batch_size={2 * a.batch}"],
                   Path(tmp) / "one")
        two = _run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "seqlab", "train",
                    *common, f"train.batch_size={a.batch}"], Path(tmp) / "two")
    result = {"global_batch": 2 * a.batch, "epochs": a.epochs, "load_before": load_before,
              "load_after": os.getloadavg()[0], "one_process": one, "two_processes": two,
              "speedup": two["median_examples_per_s"] / one["median_examples_per_s"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"1 process x 1 thread : {one['median_examples_per_s']:8.0f} examples/s  test acc "
          f"{one['test_accuracy']:.4f}  wall {one['wall_s']:.1f} s")
    print(f"2 processes x 1 thread: {two['median_examples_per_s']:8.0f} examples/s  test acc "
          f"{two['test_accuracy']:.4f}  wall {two['wall_s']:.1f} s")
    print(f"speed-up {result['speedup']:.2f}x at global batch {2 * a.batch} | load {load_before:.1f} -> "
          f"{result['load_after']:.1f}")


if __name__ == "__main__":
    main()
