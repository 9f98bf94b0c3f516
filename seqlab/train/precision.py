"""`precision=auto`: the faster of fp32 and bf16 autocast for this model on this machine, measured.

Whether bf16 pays depends on the CPU and on the model: where bf16 matrix units exist (AVX512-BF16, AMX) a
word-level LSTM's step can run 1.6x faster, while small Transformers lose to the casts (0.84x at d_model 128),
and where they do not, bf16 is emulated and many times slower. So the run times a few training steps of its
own model on one of its own batches, in turns, and keeps bf16 (fp16 on a CUDA device without bf16) only when
it is at least `MIN_SPEEDUP` times faster: the lower precision has to pay for itself. The probe leaves no trace:
the RNG streams, the task's carried state and the model's buffers are as before it, and the gradients are
dropped, so a run that chose fp32 is the run `precision=fp32` gives. The choice is written in the run's
config.yaml (a resumed run keeps it)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqlab.train.device import autocast, rng_state, set_rng_state

MIN_SPEEDUP = 1.15  # the lower precision must be this much faster per step
ROUNDS = 4  # steps per precision, in turns; the first round warms up and is not counted


def candidates(device: torch.device) -> list[str]:
    """fp32 and the lower precision this device runs autocast in (none on MPS)."""
    if device.type == "cuda":
        return ["fp32", "bf16" if torch.cuda.is_bf16_supported() else "fp16"]
    return ["fp32", "bf16"] if device.type == "cpu" else ["fp32"]


def step_seconds(task: Any, model: nn.Module, device: torch.device, precisions: list[str],
                 rounds: int = ROUNDS) -> dict[str, float]:
    """The median seconds of a forward and backward pass on the first training batch, per precision (the
    precisions take turns, so a change of the machine's load falls on all of them)."""
    saved_rng, saved_task = rng_state(), task.state_dict()
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    item, _ = task.shard_plan(task.epoch_plan(0), 0, 1)[0]
    batch = task.make_batch(item)
    times: dict[str, list[float]] = {p: [] for p in precisions}
    model.train()
    try:
        for r in range(rounds):
            for p in precisions:
                t0 = time.perf_counter()
                with autocast(device, p):
                    loss, _ = task.training_loss(model, batch)
                loss.float().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if r:
                    times[p].append(time.perf_counter() - t0)
                model.zero_grad(set_to_none=True)
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        task.load_state_dict(saved_task)
        set_rng_state(saved_rng)
    return {p: statistics.median(t) for p, t in times.items()}


def choose(seconds: dict[str, float]) -> str:
    """fp32 unless another precision is at least MIN_SPEEDUP times faster (then the fastest)."""
    best = min(seconds, key=seconds.get)
    return best if seconds["fp32"] >= MIN_SPEEDUP * seconds[best] else "fp32"


def auto_precision(task: Any, model: nn.Module, device: torch.device,
                   log: Callable[[str], None] = print) -> str:
    """Measure (`step_seconds`) and `choose`; say what was measured."""
    precisions = candidates(device)
    if len(precisions) == 1:
        return precisions[0]
    seconds = step_seconds(task, model, device, precisions)
    chosen = choose(seconds)
    times = ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in seconds.items())
    log(f"precision=auto: a training step takes {times} here; {chosen} "
        f"({seconds['fp32'] / seconds[chosen]:.2f}x fp32's speed; another precision needs {MIN_SPEEDUP}x)")
    return chosen
