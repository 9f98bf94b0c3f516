"""Issue 11 benchmark: ONNX Runtime against PyTorch eager for the `cnn` classifier, at batch 1 and 64.

    SEQLAB_DATA=../shared/data flock /work/bench.lock python bench/bench_onnx.py [--run RUN_DIR]
        [--threads 2] [--repeats 5] [--out bench/results/onnx.json]

The model is Kim's CNN of sst2/cnn (embeddings 300, widths 3/4/5 x 100 filters); unless --run
is given it is trained for `--steps` steps only, since speed does not depend on how long it trained. It is
exported with both exporters (`seqlab export` verifies each against PyTorch). Inputs are the SST-2 dev
sentences, tokenized and padded beforehand (not timed): batch 1 runs the first 300 sentences one by one,
batch 64 runs all 872 in batches of 64. Both runtimes get `--threads` threads. Figures are the median
over `--repeats` passes of sentences per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rate(fn, batches: list, repeats: int) -> float:
    """Median sentences/s of running `fn` over every batch, `repeats` times (after one warm-up pass)."""
    n = sum(len(b[1]) for b in batches)
    for b in batches:
        fn(b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for b in batches:
            fn(b)
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a trained SST-2 cnn run (default: train one briefly)")
    p.add_argument("--steps", type=int, default=300, help="training steps when no --run is given")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "onnx.json")
    a = p.parse_args()

    import seqlab
    from seqlab.data import get_dataset, read
    from seqlab.serve.export import export_onnx, ort_session

    torch.set_num_threads(a.threads)
    spec = get_dataset("sst2")
    texts = [ex.text for ex in read(spec.test, format=spec.format, **spec.reader_options)]
    report: dict = {"threads": a.threads, "load_average_before": os.getloadavg(), "sentences": len(texts)}
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run or seqlab.train(str(REPO / "sst2/cnn"),
                                    [f"threads={a.threads}", f"train.max_steps={a.steps}"],
                                    out=Path(tmp) / "sst2-cnn", quiet=True)
        predictor = seqlab.load(run)
        torch.set_num_threads(a.threads)  # after load, which sets the threads of the run's config
        task, model = predictor.task, predictor.model
        data = task.encode(texts)
        n = len(texts)
        batches = {1: [task.collate(data, np.array([i])) for i in range(300)],
                   64: [task.collate(data, np.arange(i, min(i + 64, n))) for i in range(0, n, 64)]}
        numpy_batches = {k: [tuple(t.numpy() for t in b) for b in v] for k, v in batches.items()}
        with torch.no_grad():
            report["pytorch"] = {str(k): rate(lambda b: model(*b), v, a.repeats) for k, v in batches.items()}
        for exporter in ("dynamo", "torchscript"):
            t = time.perf_counter()
            meta = export_onnx(run, Path(tmp) / exporter / "model.onnx", exporter=exporter)
            session = ort_session(Path(tmp) / exporter / "model.onnx", threads=a.threads)
            def feed(b, s=session):
                return s.run(None, {"tokens": b[0], "lengths": b[1]})

            report[f"onnxruntime ({exporter})"] = {
                **{str(k): rate(feed, v, a.repeats) for k, v in numpy_batches.items()},
                "export_seconds": time.perf_counter() - t, "max_abs_diff": meta["max_abs_diff"]}
    report["load_average_after"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    print(f"cnn classifier, SST-2 dev ({len(texts)} sentences), {a.threads} threads; load average "
          f"{report['load_average_before'][0]:.1f} -> {report['load_average_after'][0]:.1f}")
    print("| runtime | batch 1 (sentences/s) | batch 64 (sentences/s) | vs PyTorch at 1 / 64 | export s "
          "| max diff |")
    print("|---|---:|---:|---:|---:|---:|")
    base = report["pytorch"]
    print(f"| PyTorch eager | {base['1']:.0f} | {base['64']:.0f} | 1.00x / 1.00x | | |")
    for name in ("onnxruntime (dynamo)", "onnxruntime (torchscript)"):
        r = report[name]
        print(f"| {name} | {r['1']:.0f} | {r['64']:.0f} | {r['1'] / base['1']:.2f}x / "
              f"{r['64'] / base['64']:.2f}x | {r['export_seconds']:.1f} | {r['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()
