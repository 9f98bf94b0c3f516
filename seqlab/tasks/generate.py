"""Sampling from a language model, one token at a time: temperature, top-k, nucleus (top-p), a seed.

Any model with the `lm` call works (`logits, state = model(tokens, state)`, `model.new_state()`,
`model.max_len`). With `use_cache=True` each step feeds only the new token and the model's state (the RNN's
hidden state, the Transformer's KV cache) carries the rest, so a Transformer token costs O(context) instead of
a forward pass over the whole context; `use_cache=False` recomputes the context from scratch at every step
(the reference the cache must equal, token for token).

A model with a context limit (`max_len`, the Transformer's positions) reads at most `max_len` tokens. When
the context is full, it is cut to its last `max_len - max_len // 4` tokens and the cache is rebuilt from
them (one forward pass every `max_len // 4` tokens): both modes use the same contexts, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    """ConfigError for options no sampler can honour."""
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0: always the most likely token), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token per row of logits: (B, V) -> (B,).

    temperature 0 takes the argmax; otherwise the logits are divided by the temperature, cut to the
    `top_k` most likely tokens and to the smallest set whose probability reaches `top_p` (the most likely
    token is always kept), and a token is drawn from the renormalised distribution."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    # torch.multinomial's own draw of one sample, the exponential race argmax(p / E) with E ~ Exp(1): the same
    # token from the same generator state, without its validity check (a host sync that costs more than the
    # draw at a vocabulary of 65; softmax probabilities always pass it)
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax(dim=-1)


@torch.inference_mode()
def generate_ids(
    model: nn.Module,
    prompt: Sequence[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    banned: Sequence[int] = (),
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield `max_new_tokens` token ids continuing `prompt` (a non-empty list of ids), one as soon as it is
    drawn. `seed` makes the draw reproducible (None: a fresh random seed); `banned` ids are never drawn
    (e.g. padding)."""
    if not prompt:
        raise ConfigError("generation needs a prompt of at least one token")
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    window = model.max_len
    keep = window - window // 4 if window else None
    context = list(prompt)[-window:] if window else list(prompt)

    def forward(tokens: list[int], state):
        logits, state = model(torch.tensor([tokens], device=device), state)
        return logits[:, -1], state  # (1, V)

    logits, state = forward(context, model.new_state() if use_cache else None)
    banned = torch.tensor(sorted(set(banned)), dtype=torch.long, device=device)
    for i in range(max_new_tokens):
        token = int(sample_next(logits.index_fill(-1, banned, float("-inf")), temperature, top_k, top_p,
                                generator)[0])
        yield token
        if i == max_new_tokens - 1:
            break
        context.append(token)
        if window and len(context) > window:
            context = context[-keep:]
            logits, state = forward(context, model.new_state() if use_cache else None)
        elif use_cache:
            logits, state = forward([token], state)
        else:
            logits, _ = forward(context, None)
