"""Issue 22 benchmark: seqlab's decoder-only Transformer beside nanoGPT's `GPT`, training steps at the same shapes.

    python bench/bench_nanogpt.py [--threads 2] [--rounds 8] [--steps 20] [--compile] [--out bench/results/nanogpt.json]

nanoGPT's model.py (MIT) is imported from ../shared/peers/nanogpt/, nothing of it copied. Both models: 4 layers,
4 heads, d_model 128, context 64, vocabulary 65 (Tiny Shakespeare's characters), GELU MLP of 4 x d, biases,
tied embeddings, no dropout, fp32; batch 16 (1,024 tokens a step). A step is what each trains with: forward,
cross-entropy, backward, gradient clipping at 1.0, AdamW (nanoGPT: its `configure_optimizers`,
which fuses on CUDA only; seqlab: `build_optimizer` with the tiny_shakespeare/transformer preset's train section, AdamW
and the plain GPT block as nanoGPT's rather than the preset's options).
Batches are random token ids (the speed does not depend on them). The two alternate in rounds of `--steps` steps
after a warm-up, each going first in every other round; reported: the median ms per step over the rounds, tokens/s
and the ratio. `--compile`: both models' forward through `torch.compile` (inductor; nanoGPT's train.py compiles by
default, seqlab's `compile=true`), compiled in the warm-up round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO.parent / "shared" / "peers" / "nanogpt"))

from model import GPT, GPTConfig  # noqa: E402  (nanoGPT)

from seqlab.config import make_config  # noqa: E402
from seqlab.models.lm import TransformerLM  # noqa: E402
from seqlab.report.card import hardware  # noqa: E402
from seqlab.train.optim import build_optimizer  # noqa: E402

LAYERS, HEADS, DIM, BLOCK, VOCAB, BATCH = 4, 4, 128, 64, 65, 16


def seqlab_step(compile_model: bool):
    # nanoGPT's model and optimiser: the plain GPT block (learned positions, GELU, tied head) and AdamW, not the
    # preset's speedrun options (bench/bench_lm_options.py measures those)
    cfg = make_config("tiny_shakespeare/transformer", {
        "model.dim": DIM, "model.heads": HEADS, "model.layers": LAYERS, "model.dropout": 0.0,
        "model.positions": "learned", "model.qk_norm": False, "model.activation": "gelu",
        "model.tie_embeddings": True, "model.zero_init": False, "model.softcap": None, "train.optimizer": "adamw"})
    torch.manual_seed(0)
    model = TransformerLM(cfg.model_options, vocab_size=VOCAB, max_len=BLOCK).train()
    opt = build_optimizer(model, cfg.train)
    forward = torch.compile(model) if compile_model else model

    def step(x, y):
        logits, _ = forward(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return model, step


def nanogpt_step(compile_model: bool):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=BLOCK, vocab_size=VOCAB, n_layer=LAYERS, n_head=HEADS, n_embd=DIM,
                          dropout=0.0, bias=True)).train()
    opt = model.configure_optimizers(0.1, 2e-3, (0.9, 0.99), "cpu")
    forward = torch.compile(model) if compile_model else model

    def step(x, y):
        _, loss = forward(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return model, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)  # even: each goes first as often
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "nanogpt.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (BATCH, BLOCK + 1), generator=g) for _ in range(a.steps)]
    peers = {"seqlab": seqlab_step(a.compile), "nanogpt": nanogpt_step(a.compile)}
    params = {name: sum(p.numel() for p in model.parameters()) for name, (model, _) in peers.items()}
    times: dict[str, list[float]] = {name: [] for name in peers}
    load = os.getloadavg()
    for r in range(a.rounds + 1):  # round 0 warms up
        # who goes first alternates: the first of a round was measured to pay for fresh memory (its GELU and
        # copies up to 2-4x slower in a profile, whichever model it was)
        for name in sorted(peers, reverse=r % 2 == 1):
            step = peers[name][1]
            t = time.perf_counter()
            for b in batches:
                step(b[:, :-1].contiguous(), b[:, 1:].contiguous())
            if r:
                times[name].append((time.perf_counter() - t) / a.steps)
    out = {"hardware": hardware(), "threads": a.threads, "compile": a.compile, "load_average_before": load,
           "load_average_after": os.getloadavg(), "parameters": params,
           "shapes": {"layers": LAYERS, "heads": HEADS, "dim": DIM, "block": BLOCK, "batch": BATCH}}
    for name, ts in times.items():
        ms = statistics.median(ts) * 1000
        out[name] = {"ms_per_step": ms, "tokens_per_s": BATCH * BLOCK / ms * 1000, "rounds_ms": [t * 1000 for t in ts]}
    out["ratio_seqlab_over_nanogpt"] = out["seqlab"]["tokens_per_s"] / out["nanogpt"]["tokens_per_s"]
    print(json.dumps(out, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
