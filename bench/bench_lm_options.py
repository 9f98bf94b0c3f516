"""Issue 22 ablation: the decoder options of the speedrun literature, one at a time and together, on Tiny Shakespeare.

    SEQLAB_DATA=../shared/data python bench/bench_lm_options.py [--runs runs/bench-lm-options] \\
        [--json bench/results/lm_options.json] [--only NAME ...] [key=value ...]

Each variant is `seqlab train tiny_shakespeare/transformer` with its overrides and the shared ones (default
`train.epochs=1`: 920 steps of 16 x 64 characters, warm-up and cosine decay as the preset), in a fresh process,
one after the other. Reported per variant: the valid loss (nats/char) at the end, the training tokens/s (from
metrics.jsonl), the whole-process wall time and the load average. Settings are chosen on this valid loss
(Tiny Shakespeare has no other split); the preset's target is measured by bench/bench_lm.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from preset_run import load_average, train_preset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seqlab.report.card import hardware  # noqa: E402

PRESET = "tiny_shakespeare/transformer"
MODERN = ["model.positions=rotary", "model.qk_norm=true", "model.activation=relu2", "model.zero_init=true",
          "model.softcap=15", "model.tie_embeddings=false"]
VARIANTS: dict[str, list[str]] = {
    "preset": [],
    "rotary": ["model.positions=rotary"],
    "qk_norm": ["model.qk_norm=true"],
    "relu2": ["model.activation=relu2"],
    "untied": ["model.tie_embeddings=false"],
    "zero_init": ["model.zero_init=true"],
    "softcap": ["model.softcap=15"],
    "muon": ["train.optimizer=muon"],
    "muon_lr0.05": ["train.optimizer=muon", "train.muon_lr=0.05"],
    "all_options": MODERN,
    "all_options_muon": [*MODERN, "train.optimizer=muon"],
    # the same 942,080 training characters in other shapes: fewer, larger steps; a longer context
    "batch32": ["train.batch_size=32", "task.steps_per_epoch=460"],
    "block128": ["task.bptt=128", "train.batch_size=8"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="key=value for every variant (default train.epochs=1)")
    ap.add_argument("--runs", default="runs/bench-lm-options")
    ap.add_argument("--json", help="append the results here (one JSON object per line)")
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="these variants only")
    a = ap.parse_args()
    os.environ.setdefault("SEQLAB_DATA", str(REPO.parent / "shared" / "data"))
    shared = a.overrides or ["train.epochs=1"]
    runs = Path(a.runs)
    for name in a.only or VARIANTS:
        out = runs / name
        shutil.rmtree(out, ignore_errors=True)
        load = load_average()
        wall, lines = train_preset(PRESET, [*shared, *VARIANTS[name]], out)
        valid = [r for r in lines if r["split"] == "valid"]
        epochs = [r for r in lines if r["split"] == "train_epoch"]
        seconds = sum(r["seconds"] for r in epochs)
        tokens = sum(r["examples_per_s"] * r["seconds"] for r in epochs)
        r = {"variant": name, "overrides": [*shared, *VARIANTS[name]], "valid_loss": valid[-1]["loss"],
             "best_valid_loss": min(v["loss"] for v in valid), "train_tokens_per_s": tokens / seconds,
             "wall_s": wall, "load_before": load, "load_after": load_average(), "hardware": hardware()}
        print(json.dumps(r), flush=True)
        if a.json:
            with open(a.json, "a", encoding="utf-8") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
