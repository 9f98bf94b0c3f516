"""Issue 10 benchmark: Flickr8k captioning from scratch, beside the two reference baselines, in one run.

    SEQLAB_DATA=../shared/data flock /work/bench.lock python bench/bench_caption.py [CASE ...] \\
        [--runs runs/bench-caption] [--json bench/results/caption.json] [key=value ...]

Cases: baselines (always run first, seconds), rnn_attention (`flickr8k/rnn_attention`),
transformer (`flickr8k/transformer`), and each one's image-blind baseline (`rnn_attention_blind`,
`transformer_blind`: the same with `model.image_blind=true`; run both of a pair to get the gap). key=value
overrides go to every trained case (e.g. train.epochs=4).

Baselines, scored by the same `caption_scores` as the models (corpus BLEU-1..4 against all five references,
sacrebleu, lowercased, final periods dropped; CIDEr-D):
- `consensus`: one caption for every test image, "a brown and white dog is running on the grass";
- `nearest_colour`: the first caption of the training image whose colour histogram (8 bins per RGB
  channel of the 64x64 picture, normalised) is nearest (L1) to the test image's;
- `nearest_colour_consensus`: of the captions of the 5 nearest training images, the one with the highest
  sentence BLEU against the other 24 (Devlin et al., 2015, "Exploring nearest neighbor approaches").

A trained case is one `python -m seqlab train PRESET --quiet` process: its wall time includes start-up,
decoding the pictures (or mapping them from the cache), training, greedy scores on val after every epoch
(CIDEr-D picks the checkpoint), the beam sizes and length penalties the preset tries on val (`decoding`) and
the test (with the chosen beam, greedy beside). Reported: test BLEU-1..4 and CIDEr-D for beam and greedy,
training images/s (over the time in training steps), captioning images/s on test, the load average (the CPU
may be shared) and whether it met the target (BLEU-4 >= 12 in <= 45 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from preset_run import load_average, train_preset
from sacrebleu.metrics import BLEU

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seqlab.data import get_dataset  # noqa: E402
from seqlab.data.captions import ImageSource, load_images, read_captions_jsonl  # noqa: E402
from seqlab.data.datasets import cache_dir  # noqa: E402
from seqlab.tasks.caption import caption_scores, caption_words  # noqa: E402

# case -> (preset, its own overrides); a `_blind` case is its preset's image-blind baseline (issue 23): the same
# decoder and training, the grid a learned constant (`model.image_blind=true`), so its gap to the preset is
# what the captioner takes from the picture
CASES = {"rnn_attention": ("flickr8k/rnn_attention", []), "transformer": ("flickr8k/transformer", []),
         "rnn_attention_blind": ("flickr8k/rnn_attention", ["model.image_blind=true"]),
         "transformer_blind": ("flickr8k/transformer", ["model.image_blind=true"])}
CONSENSUS = "a brown and white dog is running on the grass"
BUDGET_S = 45 * 60
TARGET_BLEU4 = 12.0
NEIGHBOURS = 5


def colour_histograms(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 3 * bins) per-channel histograms, each channel's summing to 1."""
    q = (images.astype(np.int64) * bins) // 256  # (N, 3, H, W) bin of each pixel
    n = len(images)
    offsets = (np.arange(n)[:, None] * 3 + np.arange(3)[None, :]) * bins  # (N, 3)
    flat = (q + offsets[:, :, None, None]).ravel()
    hist = np.bincount(flat, minlength=n * 3 * bins).reshape(n, 3 * bins).astype(np.float64)
    return hist / (images.shape[2] * images.shape[3])


def baselines() -> dict:
    spec = get_dataset("flickr8k")
    rows = read_captions_jsonl(spec.train)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    refs = [r.captions for r in test]
    out = {"consensus": caption_scores([CONSENSUS] * len(test), refs)}
    t0 = time.perf_counter()
    source = ImageSource(Path(spec.train).with_name(spec.reader_options["images"]))
    cache = cache_dir() / "captions"
    h_train = colour_histograms(np.asarray(load_images(source, [r.image for r in train], 64, cache)[0]))
    h_test = colour_histograms(np.asarray(load_images(source, [r.image for r in test], 64, cache)[0]))
    d = np.stack([np.abs(h - h_train).sum(axis=1) for h in h_test])  # (N_test, N_train) L1 distances
    order = d.argsort(axis=1)
    out["nearest_colour"] = caption_scores([train[j].captions[0] for j in order[:, 0]], refs)
    bleu = BLEU(lowercase=True, effective_order=True)
    hyps = []
    for i in range(len(test)):  # Devlin et al. (2015): the candidate most like the others
        cands = [" ".join(caption_words(c)) for j in order[i, :NEIGHBOURS] for c in train[j].captions]
        agree = [bleu.sentence_score(c, cands[:n] + cands[n + 1:]).score for n, c in enumerate(cands)]
        hyps.append(cands[int(np.argmax(agree))])
    out["nearest_colour_consensus"] = caption_scores(hyps, refs)
    out["seconds"] = time.perf_counter() - t0
    return out


def run_case(name: str, runs: Path, overrides: list[str]) -> dict:
    load_before = load_average()
    preset, own = CASES[name]
    out = runs / name
    wall, lines = train_preset(preset, [*overrides, *own], out)
    epochs = [x for x in lines if x["split"] == "train_epoch"]
    valid = [x for x in lines if x["split"] == "valid"]
    test = lines[-1]
    best = max(valid, key=lambda x: x["cider"])
    train_s = sum(x["seconds"] for x in epochs)
    images = sum(x["examples_per_s"] * x["seconds"] for x in epochs)
    return {
        "preset": preset, "overrides": [*overrides, *own], "wall_s": wall, "epochs": len(epochs),
        "train_images_per_s": images / max(train_s, 1e-9),
        "test": {k: test[k] for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider")},
        "test_greedy": {k: test[f"greedy_{k}"] for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider")},
        "captioning_images_per_s": test["images_per_s"], "greedy_images_per_s": test["greedy_images_per_s"],
        "best_valid_cider": best["cider"], "best_epoch": best["epoch"],
        "decoding": json.loads(decoding.read_text()) if (decoding := out / "decoding.json").exists() else None,
        "beam_ge_greedy": test["bleu4"] >= test["greedy_bleu4"],
        "meets_target": test["bleu4"] >= TARGET_BLEU4 and wall <= BUDGET_S,
        "load_before": load_before, "load_after": load_average(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs="*", help="cases and key=value overrides")
    p.add_argument("--runs", default="runs/bench-caption")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    cases = [x for x in a.args if "=" not in x]
    overrides = [x for x in a.args if "=" in x]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c!r} (choices: {', '.join(CASES)})")
    os.environ.setdefault("SEQLAB_DATA", str(REPO.parent / "shared" / "data"))
    results: dict = {"load_start": load_average(), "baselines": baselines()}
    for name, r in results["baselines"].items():
        if name == "seconds":
            continue
        print(f"{name:<16} BLEU-4 {r['bleu4']:5.2f}  BLEU-1 {r['bleu1']:5.2f}  CIDEr-D {r['cider']:.3f}", flush=True)
    for c in cases:
        r = results[c] = run_case(c, Path(a.runs), overrides)
        print(f"{c:<16} BLEU-4 {r['test']['bleu4']:5.2f} (greedy {r['test_greedy']['bleu4']:5.2f})  CIDEr-D "
              f"{r['test']['cider']:.3f} (greedy {r['test_greedy']['cider']:.3f})  wall {r['wall_s'] / 60:.1f} min  "
              f"train {r['train_images_per_s']:.0f} img/s  caption {r['captioning_images_per_s']:.0f} img/s  "
              f"load {r['load_before']:.1f}->{r['load_after']:.1f}", flush=True)
    for c in cases:
        seeing = c.removesuffix("_blind")
        if c.endswith("_blind") and seeing in results:
            gap = results[f"{seeing}_gap"] = {k: results[seeing]["test"][k] - results[c]["test"][k]
                                              for k in ("bleu4", "cider")}
            print(f"{seeing:<16} over its image-blind baseline: BLEU-4 {gap['bleu4']:+.2f}  CIDEr-D "
                  f"{gap['cider']:+.3f}", flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
