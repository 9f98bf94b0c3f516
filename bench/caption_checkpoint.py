"""Issue 23 tool: a captioning run's saved checkpoint (not the epoch it kept) through the run's decoding choice on
val and the test, e.g. the last epoch's weights, which `train.metric=perplexity` would keep when the greedy
CIDEr-D picked an early epoch.

    SEQLAB_DATA=../shared/data python bench/caption_checkpoint.py RUN step-000001880 [--json OUT]

The beam sizes and length penalties are the run's own `task.beam_choices` / `task.length_penalty_choices`,
scored on val CIDEr-D (the run's metric); the test is decoded once, with the chosen one (greedy beside), as
`seqlab train` does at the end of a run. The run directory is not changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seqlab.api import _model, _open  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("checkpoint", help="a directory under RUN/checkpoints")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    _, dev, task = _open(a.run, log=print)
    task.prepare(artifacts=a.run)
    model = _model(task, a.run / "checkpoints" / a.checkpoint, dev)  # the checkpoint's model.safetensors
    with torch.no_grad():
        task.before_test(model)  # the decoding chosen on val, as at the end of `seqlab train`
        test = task.report(model, "test")
    decoding = task.decoding
    out = {"run": str(a.run), "checkpoint": a.checkpoint, "decoding": decoding, "test": test}
    print(json.dumps({"decoding": {k: decoding[k] for k in ("beam", "length_penalty")}, "test": test}))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
