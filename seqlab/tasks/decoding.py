"""Greedy and beam search, batched, over any decoder that takes one step at a time.

Written once for every task that generates a sequence from an encoded input (translation, captioning);
`sample_search` draws sequences from the model instead, for self-critical training.
A model takes part through two methods (see `StepDecoder`): `decode_step` scores the next token of each
row given the previous one and a state (the encoder's output, hidden states or key/value caches), and
`reorder_state` keeps some rows of that state in a given order. Search keeps a batch of rows alive:
rows of sentences that are done are dropped from the batch as soon as they finish, and beam search
holds `beam_size` rows per sentence.

Lengths: `max_lengths[b]` is how many tokens sentence b may generate, its end-of-sentence token
included; a hypothesis that reaches it without one is finished as it stands. Beam search ranks
finished hypotheses by log-probability / length ** length_penalty (0: the raw sum, 1: the mean per
token), where length counts the generated tokens and the end-of-sentence token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.tasks.generate import sample_next


class StepDecoder(Protocol):
    """What the search needs from a model."""

    def decode_step(self, tokens: Tensor, state: Any, need_weights: bool = False
                    ) -> tuple[Tensor, Any, Tensor | None]:
        """tokens: (N,) the previous token of each row -> (logits (N, V) of the next token, the new state,
        attention (N, S) over the input when need_weights, else None)."""
        ...

    def reorder_state(self, state: Any, index: Tensor) -> Any:
        """Keep rows `index` (N',) of `state`, in that order (rows may repeat)."""
        ...


@dataclass
class Hypothesis:
    """One output sequence."""

    tokens: list[int]  # the generated tokens, without bos and eos
    log_prob: float  # sum of the log-probabilities of the generated tokens, eos included when generated
    attention: Tensor | None = None  # (len(tokens), S): where each token looked in the input


def _drop_finished(model: StepDecoder, state: Any, rows: Tensor, tok: Tensor, ended: Tensor, t: int,
                   max_lengths: Tensor) -> tuple[Tensor, Any, Tensor] | None:
    """After step t of a one-row-per-sentence search: drop the rows that drew eos (`ended`, (N,)) or reached
    their sentence's max length. Returns (rows, state, prev) of the rows that go on, or None when none does."""
    done = ended | (t + 1 >= max_lengths[rows])
    if bool(done.all()):
        return None
    keep = (~done).nonzero().squeeze(1)
    if len(keep) < len(rows):
        rows, state = rows[keep], model.reorder_state(state, keep)
    return rows, state, tok[keep]


@torch.no_grad()
def greedy_search(model: StepDecoder, state: Any, bos: int, eos: int, max_lengths: Tensor,
                  need_weights: bool = False) -> list[Hypothesis]:
    """The most probable next token at every step, for B sentences at once. `state` holds B rows (one per
    sentence, from the model's `encode`); max_lengths: (B,). Returns one hypothesis per sentence."""
    B, T = len(max_lengths), int(max_lengths.max())
    device = max_lengths.device
    out = torch.zeros(B, T, dtype=torch.long, device=device)
    lengths = max_lengths.clone()  # tokens before eos
    log_prob = torch.zeros(B, device=device)
    weights: Tensor | None = None
    rows = torch.arange(B, device=device)  # the sentence of each row of the batch
    prev = torch.full((B,), bos, dtype=torch.long, device=device)
    for t in range(T):
        logits, state, w = model.decode_step(prev, state, need_weights)
        best, tok = F.log_softmax(logits.float(), dim=-1).max(dim=-1)  # (N,)
        out[rows, t] = tok
        log_prob[rows] += best
        if w is not None:
            if weights is None:
                weights = w.new_zeros(B, T, w.size(-1), dtype=torch.float)
            weights[rows, t] = w.float()
        ended = tok == eos
        lengths[rows[ended]] = t
        alive = _drop_finished(model, state, rows, tok, ended, t, max_lengths)
        if alive is None:
            break
        rows, state, prev = alive
    out, lengths, log_prob = out.tolist(), lengths.tolist(), log_prob.tolist()
    return [Hypothesis(out[b][: lengths[b]], log_prob[b],
                       None if weights is None else weights[b, : lengths[b]]) for b in range(B)]


@torch.no_grad()
def sample_search(model: StepDecoder, state: Any, bos: int, eos: int, max_lengths: Tensor,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One sequence drawn from the model's own distribution for each of the N rows of `state`, token by token
    (the softmax of the logits, no temperature; self-critical training rewards what is drawn). Rows are
    dropped as they finish, as in `greedy_search`. Returns (tokens (N, T) the drawn tokens, eos included where
    drawn, 0 after; steps (N,) how many were drawn)."""
    B, T = len(max_lengths), int(max_lengths.max())
    device = max_lengths.device
    out = torch.zeros(B, T, dtype=torch.long, device=device)
    steps = max_lengths.clone()
    rows = torch.arange(B, device=device)
    prev = torch.full((B,), bos, dtype=torch.long, device=device)
    for t in range(T):
        logits, state, _ = model.decode_step(prev, state)
        tok = sample_next(logits, generator=generator)  # (N,)
        out[rows, t] = tok
        ended = tok == eos
        steps[rows[ended]] = t + 1
        alive = _drop_finished(model, state, rows, tok, ended, t, max_lengths)
        if alive is None:
            break
        rows, state, prev = alive
    return out, steps


@torch.no_grad()
def beam_search(model: StepDecoder, state: Any, bos: int, eos: int, max_lengths: Tensor, beam_size: int,
                length_penalty: float = 1.0, need_weights: bool = False) -> list[Hypothesis]:
    """Beam search for B sentences at once: each keeps the `beam_size` best partial hypotheses; at every
    step the 2 * beam_size best extensions are scored, those ending in eos among the first beam_size are
    finished, and the best beam_size others go on. A sentence is done when it has beam_size finished
    hypotheses or reaches its max length. Returns the best finished hypothesis of each sentence (ranked
    by log_prob / length ** length_penalty). `state` holds B rows, as for `greedy_search`."""
    B, K, T = len(max_lengths), beam_size, int(max_lengths.max())
    device = max_lengths.device
    state = model.reorder_state(state, torch.arange(B, device=device).repeat_interleave(K))  # B * K rows
    sent = torch.arange(B, device=device)  # the sentences still searching
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: expand only the first
    seqs = torch.zeros(B * K, 0, dtype=torch.long, device=device)  # (N, t) tokens so far
    attn: Tensor | None = None  # (N, t, S)
    finished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(B)]
    prev = torch.full((B * K,), bos, dtype=torch.long, device=device)

    def finish(b: int, row: int, last_tok: int | None, log_prob: float, length: int, w: Tensor | None):
        """Add the hypothesis of `row` (extended by `last_tok` unless it ended in eos) to sentence b's."""
        tokens = seqs[row].tolist() + ([] if last_tok is None else [last_tok])
        a = None
        if attn is not None:
            a = attn[row] if last_tok is None else torch.cat([attn[row], w[row, None].float()])
        finished[b].append((log_prob / length**length_penalty, Hypothesis(tokens, log_prob, a)))

    for t in range(T):
        logits, state, w = model.decode_step(prev, state, need_weights)
        if w is not None and attn is None:
            attn = w.new_zeros(len(seqs), 0, w.size(-1), dtype=torch.float)
        logp = F.log_softmax(logits.float(), dim=-1)  # (A * K, V)
        A, V = len(sent), logp.size(-1)
        cand = (scores.unsqueeze(-1) + logp.view(A, K, V)).view(A, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (A, 2K) best first
        top_tok = top_idx % V
        top_row = torch.arange(A, device=device)[:, None] * K + top_idx // V  # the row each one extends
        is_eos = top_tok == eos
        # the K best candidates that do not end: eos ones sort after every other (at most K end in eos)
        rank = torch.arange(top_idx.size(1), device=device).expand_as(top_idx)
        go_on = torch.where(is_eos, rank + top_idx.size(1), rank).argsort(dim=1)[:, :K]  # (A, K)
        next_scores, next_tok, next_row = (x.gather(1, go_on) for x in (top_scores, top_tok, top_row))
        last = (t + 1 >= max_lengths[sent]).tolist()
        for a, j in (is_eos[:, :K] & top_scores[:, :K].isfinite()).nonzero().tolist():
            b = int(sent[a])
            if len(finished[b]) < K:
                finish(b, int(top_row[a, j]), None, float(top_scores[a, j]), t + 1, w)
        done = []
        for a in range(A):
            b = int(sent[a])
            if last[a]:  # out of length: the beams finish as they are
                for k in range(K):
                    finish(b, int(next_row[a, k]), int(next_tok[a, k]), float(next_scores[a, k]), t + 1, w)
            done.append(last[a] or len(finished[b]) >= K)
        keep = (~torch.tensor(done, device=device)).nonzero().squeeze(1)
        if len(keep) == 0:
            break
        index = next_row[keep].flatten()  # (A' * K,) rows that go on, in beam order
        seqs = torch.cat([seqs[index], next_tok[keep].flatten()[:, None]], dim=1)
        if attn is not None:
            attn = torch.cat([attn[index], w[index, None].float()], dim=1)
        state = model.reorder_state(state, index)
        sent, scores, prev = sent[keep], next_scores[keep], next_tok[keep].flatten()
    return [max(f, key=lambda sh: sh[0])[1] for f in finished]
