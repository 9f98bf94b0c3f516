"""Language models: next-token logits for every position of a window of tokens.

Both models take the same call, so the `lm` task never asks which one it has::

    logits, state = model(tokens, state)      # tokens: (B, T) -> logits: (B, T, V)

- `RNNLM` (the lecture's h_t = f_W(h_{t-1}, x_t)): `state` is the recurrent hidden state, h or (h, c),
  each (layers, B, H). None starts from zeros; the returned state continues the stream, which is what
  truncated BPTT carries (detached) from one window to the next.
- `TransformerLM` (decoder-only, GPT style): `state` is the KV cache, one `DecoderLayerCache` per layer,
  or None. Training passes None (each window on its own, causal mask) and gets None back; generation
  passes `model.new_state()` and then only the new tokens, which see every cached position.

`new_state()` is what generation starts from; `max_len` is the longest context a model can read (None: no
limit), which the task sets to its window length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.nn import (
    DecoderLayerCache,
    LearnedPositionalEmbedding,
    RNNEncoder,
    RNNState,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
)


@dataclass
class RNNLMConfig:
    """Defaults: Zaremba et al. (2014) "small" (2 x 200 LSTM, uniform init ±0.1, no dropout)."""

    cell: str = "lstm"  # rnn|lstm|gru
    emb_dim: int | None = None  # None: hidden_dim (required by tie_weights)
    hidden_dim: int = 200
    layers: int = 2
    dropout: float = 0.0  # on the embeddings, between layers and before the output layer (Zaremba)
    tie_weights: bool = False  # the output layer reuses the embedding matrix (Press & Wolf, 2017)
    init_range: float = 0.1  # every weight uniform in [-init_range, init_range]

    def validate(self) -> None:
        if self.cell not in ("rnn", "lstm", "gru"):
            raise ConfigError(f"model.cell must be rnn, lstm or gru, got {self.cell!r}")
        if self.hidden_dim < 1 or self.layers < 1 or (self.emb_dim is not None and self.emb_dim < 1):
            raise ConfigError("model.hidden_dim, model.layers and model.emb_dim must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and self.emb_dim not in (None, self.hidden_dim):
            raise ConfigError(f"model.tie_weights needs model.emb_dim == model.hidden_dim "
                              f"({self.hidden_dim}), got {self.emb_dim}")


class RNNLM(nn.Module):
    """Embedding -> RNN/LSTM/GRU (stateful, layers) -> linear over the vocabulary."""

    Config = RNNLMConfig
    max_len = None  # a recurrence reads any length

    def __init__(self, cfg: RNNLMConfig, vocab_size: int, max_len: int | None = None):
        super().__init__()
        emb_dim = cfg.emb_dim or cfg.hidden_dim
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        # The dense windows of a language model have no padding, so the encoder's recurrence runs unpacked,
        # from a given state (`self.encoder.rnn`), instead of through the packed `RNNEncoder.forward`.
        self.encoder = RNNEncoder(emb_dim, cfg.hidden_dim, cfg.layers, cfg.cell, dropout=cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_dim, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
        if cfg.tie_weights:
            self.head.weight = self.embedding.weight

    def new_state(self) -> None:
        """Generation starts from the zero state."""
        return None

    def forward(self, tokens: Tensor, state: RNNState | None = None) -> tuple[Tensor, RNNState]:
        """tokens: (B, T) -> (logits (B, T, V), the state after the last token)."""
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        out, state = self.encoder.rnn(x, state)  # (B, T, H)
        return self.head(self.dropout(out)), state


@dataclass
class TransformerLMConfig:
    """Defaults: a small GPT (pre-LN, GELU, learned positions, tied embeddings), nanoGPT's CPU scale."""

    d_model: int = 192
    n_heads: int = 6
    layers: int = 4
    d_ff: int | None = None  # None: 4 * d_model
    dropout: float = 0.0
    positions: str = "learned"  # learned|sinusoidal
    tie_weights: bool = True
    norm_first: bool = True  # pre-LN (GPT-2); False: the paper's post-LN

    def validate(self) -> None:
        if self.positions not in ("learned", "sinusoidal"):
            raise ConfigError(f"model.positions must be learned or sinusoidal, got {self.positions!r}")
        if self.d_model < 1 or self.layers < 1 or self.n_heads < 1:
            raise ConfigError("model.d_model, model.layers and model.n_heads must be at least 1")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads "
                              f"({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class TransformerLM(nn.Module):
    """Token embedding + positions -> causal decoder-only Transformer blocks -> linear over the vocabulary."""

    Config = TransformerLMConfig

    def __init__(self, cfg: TransformerLMConfig, vocab_size: int, max_len: int | None = None):
        super().__init__()
        if not max_len:
            raise ConfigError("the transformer language model needs a context length (task.bptt)")
        self.max_len = max_len
        D = cfg.d_model
        self.embedding = nn.Embedding(vocab_size, D)
        if cfg.positions == "learned":
            self.positions = LearnedPositionalEmbedding(max_len, D, cfg.dropout)
        else:
            self.positions = SinusoidalPositionalEncoding(D, max_len, cfg.dropout)
        self.decoder = TransformerDecoder(cfg.layers, D, cfg.n_heads, cfg.d_ff or 4 * D, cfg.dropout, "gelu",
                                          cfg.norm_first, cross_attention=False)
        self.head = nn.Linear(D, vocab_size, bias=False)
        self._init_weights(cfg.layers)
        if cfg.tie_weights:
            self.head.weight = self.embedding.weight

    @torch.no_grad()
    def _init_weights(self, layers: int) -> None:
        """GPT-2's: weights N(0, 0.02), biases 0, and the projections that feed the residual stream scaled
        by 1/sqrt(2 * layers) so that its variance does not grow with depth."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for layer in self.decoder.layers:
            for proj in (layer.self_attn.out_proj, layer.ff.linear2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * layers))

    def new_state(self) -> list[DecoderLayerCache]:
        """An empty KV cache (one per layer) for incremental decoding."""
        return self.decoder.new_cache()

    def forward(
        self, tokens: Tensor, state: list[DecoderLayerCache] | None = None
    ) -> tuple[Tensor, list[DecoderLayerCache] | None]:
        """tokens: (B, T) -> (logits (B, T, V), state). With a cache, `tokens` are the positions after the
        cached ones (offset = cached length) and the cache is returned grown by T."""
        offset = 0 if state is None else len(state[0].self_attn)
        x = self.positions(self.embedding(tokens), offset)  # (B, T, D)
        x, _ = self.decoder(x, cache=state)  # causal self-attention only
        return self.head(x), state
