"""Issue 22 benchmark: one cached decoding step of the Tiny Shakespeare preset's Transformer beside a full forward
pass over a 110-token context (the average context the recomputing generator reads at the preset's 128).

    python bench/bench_kv_step.py [--threads 2] [--rounds 5]

The preset's model with random weights (the timing does not depend on them), in inference mode: per round, 100
one-token steps with a KV cache of 20-120 positions, 20 full forward passes over 110 tokens, and 100 draws of
`sample_next` (which both generators pay per token). Reported per round and as medians: ms per step, per full pass,
per draw, and the ratio full / (step + draw), i.e. what the cache saves per generated token without the window's
rebuilds that `bench_lm.py generate` also counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seqlab.config import make_config  # noqa: E402
from seqlab.models.lm import TransformerLM  # noqa: E402
from seqlab.report.card import hardware  # noqa: E402
from seqlab.tasks.generate import sample_next  # noqa: E402


def seconds_per_call(fn, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = TransformerLM(make_config("tiny_shakespeare/transformer").model_options, vocab_size=65,
                          max_len=128).eval()
    token, context, logits = torch.tensor([[1]]), torch.ones(1, 110, dtype=torch.long), torch.randn(1, 65)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(a.rounds):
        state = model.new_state()
        model(torch.ones(1, 20, dtype=torch.long), state)
        step = seconds_per_call(lambda s=state: model(token, s), 100)
        full = seconds_per_call(lambda: model(context, None), 20)
        draw = seconds_per_call(lambda: int(sample_next(logits, 1.0, None, None, generator)[0]), 100)
        rows.append((step, full, draw, full / (step + draw)))
        print(f"step {step * 1e3:.3f} ms  full pass {full * 1e3:.3f} ms  draw {draw * 1e3:.3f} ms  "
              f"ratio {rows[-1][3]:.2f}", flush=True)
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"median: step {med[0] * 1e3:.3f} ms, full pass {med[1] * 1e3:.3f} ms, draw {med[2] * 1e3:.3f} ms, "
          f"ratio {med[3]:.2f} | {hardware()} | {a.threads} threads")


if __name__ == "__main__":
    main()
