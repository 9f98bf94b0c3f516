"""Generating a sequence from an encoded input, written once for the tasks that do it (translate, caption;
the language model shares the loss and the perplexity):

- teacher forcing: the decoder reads `<bos> y_1 .. y_{T-1}` and predicts `y_1 .. y_{T-1} <eos>`;
- the loss: cross-entropy over the real target tokens, label-smoothed (eps spread uniformly over the
  vocabulary), with the plain NLL beside it for the perplexity;
- decoding in batches: greedy (beam 1) or beam search (`seqlab.tasks.decoding`), rows in any order;
- the decoded evaluation: loss and perplexity by teacher forcing, and the task's scores of the decoded
  outputs: greedy on `valid` (its score picks the best epoch, and greedy is fast), beam search elsewhere
  with the greedy scores beside as `greedy_*`;
- the decoding chosen on valid (`task.beam_choices`, `task.length_penalty_choices`): after training, with the
  kept weights, every pair decodes valid and the best by the run's metric becomes the run's `task.beam` and
  `task.length_penalty` (the test split's and the predictor's), written to `RUN/decoding.json`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data.batching import Packed, pad_batch, sequential_batches
from seqlab.data.io import atomic_write_text
from seqlab.data.subword import TextTokenizer
from seqlab.errors import CheckpointError
from seqlab.options import Range
from seqlab.tasks.base import Option, Task
from seqlab.tasks.decoding import Hypothesis, beam_search, greedy_search

BEAM = Option(int, None, "beam size (default: the run's task.beam; 1: greedy)", Range(min=1), optional=True)
DECODING_FILE = "decoding.json"  # the beam size and length penalty chosen on valid, and what each pair scored


def teacher_forcing(tokens: Packed, index: np.ndarray, tok: TextTokenizer, max_len: int) -> tuple[Tensor, Tensor]:
    """The decoder's input and target for sequences `index` of `tokens` (ids without bos/eos), cut to
    `max_len - 1` tokens: tgt_in (N, T) `<bos> y_1 .. y_{T-1}` and tgt_out (N, T) `y_1 .. <eos>`, padded."""
    tgt, lengths = pad_batch(tokens, index, tok.pad_id, max_len - 1)  # (N, T - 1)
    N = len(index)
    tgt_in = torch.cat([torch.full((N, 1), tok.bos_id), tgt], dim=1)
    tgt_out = torch.cat([tgt, torch.full((N, 1), tok.pad_id)], dim=1)
    tgt_out[torch.arange(N), lengths] = tok.eos_id
    return tgt_in, tgt_out


def token_nll(logits: Tensor, targets: Tensor, real: Tensor, smoothing: float = 0.0) -> tuple[Tensor, Tensor, int]:
    """logits (..., V), targets (...) and real (...) the positions that count -> (the label-smoothed loss
    summed over them, the NLL summed, their number)."""
    logp = F.log_softmax(logits[real].float(), dim=-1)  # (N, V) the real positions only
    nll = -logp.gather(1, targets[real][:, None]).squeeze(1)  # (N,)
    smoothed = (1 - smoothing) * nll - smoothing * logp.mean(dim=-1) if smoothing else nll
    return smoothed.sum(), nll.sum(), int(real.sum())


def perplexity(loss: float) -> dict[str, float]:
    """loss (nats per token) and its perplexity."""
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}


class SequenceTask(Task):
    """A task that decodes a sequence of `target` tokens from an encoded input. Subclasses give the target
    tokenizer (`target`), `opt.label_smoothing`, `opt.beam` and `opt.length_penalty`, and implement
    `forward` (the teacher-forced logits), `encode_inputs` (the decoder's initial state for some examples),
    `scores` (of decoded outputs) and `describe_scores` (one line of them)."""

    default_metric = "bleu"
    headline = "perplexity"  # the per-epoch lines show train and valid perplexity; the decoded score is logged
    unit: ClassVar[str] = "sentences"  # what decoding speed counts (`sentences_per_s`)
    target: TextTokenizer | None = None
    decoding: dict | None = None  # the choice on valid (`choose_decoding`), once made or loaded

    def forward(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        """(logits (N, T, V), targets (N, T), an extra loss term: 0 for most models). `len(batch)` is its
        number of examples (sentences, images)."""
        raise NotImplementedError

    def encode_inputs(self, model: nn.Module, split: Any, index: np.ndarray) -> tuple[Any, Tensor, list[int] | None]:
        """(the decoder state of examples `index` of `split`, how many tokens each may generate (eos
        included), the input length of each to trim attention to, or None)."""
        raise NotImplementedError

    def scores(self, outputs: list[str], split: str) -> dict[str, float]:
        raise NotImplementedError

    def describe_scores(self, scores: dict[str, float]) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ loss
    def _sums(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor, int, Tensor]:
        logits, targets, extra = self.forward(model, batch)
        smoothed, nll, n = token_nll(logits, targets, targets != self.target.pad_id, self.opt.label_smoothing)
        return smoothed, nll, n, extra

    def training_loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        smoothed, nll, n, extra = self._sums(model, batch)
        return smoothed / n + extra, {"nll": nll.item(), "n": n, "examples": len(batch)}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return perplexity(sums.get("nll", 0.0) / max(sums.get("n", 0.0), 1.0))

    def teacher_forced_loss(self, model: nn.Module, split: str) -> float:
        nll, n = 0.0, 0
        for index in sequential_batches(len(self.splits[split]), self.cfg.train.eval_batch_size):
            _, nll_sum, count, _ = self._sums(model, self.make_batch(index, split))
            nll, n = nll + nll_sum.item(), n + count
        return nll / max(n, 1)

    # ------------------------------------------------------------------ decoding
    def decode_order(self, split: Any) -> np.ndarray | None:
        """The order in which examples are batched for decoding (e.g. by length); None: as they come."""
        return None

    def decode(self, model: nn.Module, split: Any, beam: int, need_weights: bool = False) -> list[Hypothesis]:
        """Decode every example of `split`, in batches (see `decode_order`); beam 1 is greedy."""
        n = len(split)
        order = self.decode_order(split)
        order = np.arange(n) if order is None else order
        hyps: list[Hypothesis | None] = [None] * n
        for batch in sequential_batches(n, max(1, self.cfg.train.eval_batch_size // beam)):
            index = order[batch]
            state, max_lengths, trims = self.encode_inputs(model, split, index)
            out = search(model, state, self.target.bos_id, self.target.eos_id, max_lengths, beam,
                         self.opt.length_penalty, need_weights)
            for k, (i, h) in enumerate(zip(index, out, strict=True)):
                if h.attention is not None:
                    h.attention = h.attention[:, : trims[k]].cpu() if trims is not None else h.attention.cpu()
                hyps[i] = h
        return hyps

    def detokenize(self, hyps: list[Hypothesis]) -> list[str]:
        return [self.target.decode(h.tokens).strip() for h in hyps]

    def decoded_scores(self, model: nn.Module, split: str, beam: int) -> tuple[dict[str, float], float]:
        """The scores of `split` decoded with `beam`, and the examples decoded per second."""
        t0 = time.perf_counter()
        outputs = self.detokenize(self.decode(model, self.splits[split], beam))
        speed = len(outputs) / max(time.perf_counter() - t0, 1e-9)
        return self.scores(outputs, split), speed

    # ------------------------------------------------------------------ the decoding chosen on valid
    def before_test(self, model: nn.Module) -> None:
        """With the kept weights: the beam size and length penalty chosen on valid, when there are choices."""
        beams = self.opt.beam_choices or [self.opt.beam]
        penalties = self.opt.length_penalty_choices or [self.opt.length_penalty]
        if (len(beams) > 1 or len(penalties) > 1) and self.has_split("valid"):
            self.choose_decoding(model, [int(b) for b in beams], [float(x) for x in penalties])

    def choose_decoding(self, model: nn.Module, beams: list[int], penalties: list[float]) -> dict:
        """Decode valid with every beam size and length penalty (beam 1, greedy, once: it has no penalty);
        the best by the run's metric (the task's decoded default when that is not a decoded score; ties: the
        first tried) becomes `task.beam` and `task.length_penalty`. Returns `self.decoding`."""
        metric = self.cfg.train.metric or self.default_metric
        tried = []
        for beam in beams:
            for lp in penalties if beam > 1 else penalties[:1]:
                self.opt.length_penalty = lp
                scores, speed = self.decoded_scores(model, "valid", beam)
                metric = metric if metric in scores else self.default_metric
                tried.append({"beam": beam, "length_penalty": lp, **scores, f"{self.unit}_per_s": speed})
                self.log(f"valid, beam {beam}, length penalty {lp:g}: {self.describe_scores(scores)}")
        best = max(tried, key=lambda t: t[metric])  # decoded scores are higher-better (BLEU, chrF, CIDEr-D)
        self.opt.beam, self.opt.length_penalty = best["beam"], best["length_penalty"]
        self.decoding = {"beam": best["beam"], "length_penalty": best["length_penalty"], "metric": metric,
                         "valid": tried}
        self.log(f"decoding chosen on valid {metric}: beam {best['beam']}, length penalty {best['length_penalty']:g}")
        return self.decoding

    def save_artifacts(self, run_dir: str | Path) -> None:
        super().save_artifacts(run_dir)
        if self.decoding is not None:
            atomic_write_text(Path(run_dir) / DECODING_FILE, json.dumps(self.decoding, indent=1))

    def load_artifacts(self, run_dir: str | Path) -> None:
        """The task's files, and the decoding chosen on valid if the run chose one."""
        super().load_artifacts(run_dir)
        path = Path(run_dir) / DECODING_FILE
        if not path.exists():
            return
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            beam, lp = blob["beam"], blob["length_penalty"]
            if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1 or not isinstance(lp, (int, float)) \
                    or lp < 0:
                raise ValueError("beam or length_penalty out of range")
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{DECODING_FILE} is corrupt ({e.__class__.__name__})", path=path) from None
        self.decoding, self.opt.beam, self.opt.length_penalty = blob, beam, float(lp)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """loss and perplexity (teacher forcing); the decoded scores, greedy on `valid`, beam search elsewhere
        (the greedy scores beside as greedy_*)."""
        out = perplexity(self.teacher_forced_loss(model, split))
        speed_key = f"{self.unit}_per_s"
        greedy, speed = self.decoded_scores(model, split, 1)
        use_beam = split != "valid" and self.opt.beam > 1
        if not use_beam:
            out.update(greedy, **{speed_key: speed})
        else:
            scores, beam_speed = self.decoded_scores(model, split, self.opt.beam)
            out.update(scores, **{speed_key: beam_speed}, **{f"greedy_{k}": v for k, v in greedy.items()},
                       **{f"greedy_{speed_key}": speed})
        self.log(f"{split}: {self.describe_scores(out)}  ({f'beam {self.opt.beam}' if use_beam else 'greedy'}, "
                 f"{len(self.splits[split])} {self.unit}, {out[speed_key]:.0f}/s)")
        return out


def search(model: nn.Module, state: Any, bos: int, eos: int, max_lengths: Tensor, beam: int,
           length_penalty: float = 1.0, need_weights: bool = False) -> list[Hypothesis]:
    """Greedy search for beam 1, else beam search: one hypothesis per row of `state`."""
    if beam == 1:
        return greedy_search(model, state, bos, eos, max_lengths, need_weights)
    return beam_search(model, state, bos, eos, max_lengths, beam, length_penalty, need_weights)
