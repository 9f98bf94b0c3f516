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
from functools import partial
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.nn import (
    DecoderLayerCache,
    LearnedPositionalEmbedding,
    RNNEncoder,
    RNNState,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
    dropout,
)
from seqlab.nn.rnn import locked_dropout, run_rnn_with_weights, word_dropout
from seqlab.options import DENSE_SPACE, Dropout, Positive, PositiveFloat


@dataclass
class RNNLMConfig:
    """Defaults: Zaremba et al. (2014) "small" (2 x 200 LSTM, uniform init ±0.1, no dropout)."""

    cell: Literal["rnn", "lstm", "gru"] = "lstm"  # the recurrence
    dim: Positive | None = None  # token embedding size (None: hidden, as tie_embeddings needs)
    hidden: Positive = 200  # state size of every layer
    layers: Positive = 2  # stacked recurrent (or Transformer) layers
    dropout: Dropout = 0.0  # on the embeddings, between layers and before the output layer (Zaremba)
    tie_embeddings: bool = False  # the output layer reuses the embedding matrix (Press & Wolf, 2017)
    init_range: PositiveFloat = 0.1  # every weight uniform in [-init_range, init_range]

    # AWD-LSTM's regularisation (Merity et al., 2017), in training only; each composes with `dropout` above:
    weight_drop: Dropout = 0.0  # DropConnect on every layer's hidden-to-hidden matrix, a fresh mask per forward
    dropout_words: Dropout = 0.0  # whole word types of the embedding matrix dropped (the rest rescaled)
    dropout_input: Dropout = 0.0  # variational: one mask per sequence over time, on the embeddings' output
    dropout_hidden: Dropout = 0.0  # variational, between stacked layers (runs the layers one call each)
    dropout_output: Dropout = 0.0  # variational, on the last layer's outputs (before the output layer)

    def validate(self) -> None:
        if self.tie_embeddings and self.dim not in (None, self.hidden):
            raise ConfigError(f"model.tie_embeddings needs model.dim == model.hidden ({self.hidden}), "
                              f"got {self.dim}")


class RNNLM(nn.Module):
    """Embedding -> RNN/LSTM/GRU (stateful, layers) -> linear over the vocabulary.

    With AWD-LSTM's options (`weight_drop`, `dropout_words`, `dropout_input`, `dropout_hidden`, `dropout_output`),
    a training forward pass draws its masks and runs the recurrence through `run_rnn_with_weights`: the same fused
    kernel as `nn.LSTM`, given the dropped hidden-to-hidden matrices (computed from the raw parameters, which
    keep their names and get the gradients). Evaluation, and every option at 0, run `self.encoder.rnn` itself:
    the model of a run without these options is the one it was before they existed.
    """

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = RNNLMConfig
    max_len = None  # a recurrence reads any length

    def __init__(self, cfg: RNNLMConfig, vocab_size: int, max_len: int | None = None):
        super().__init__()
        emb_dim = cfg.dim or cfg.hidden
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        # The dense windows of a language model have no padding, so the encoder's recurrence runs unpacked,
        # from a given state (`self.encoder.rnn`), instead of through the packed `RNNEncoder.forward`.
        self.encoder = RNNEncoder(emb_dim, cfg.hidden, cfg.layers, cfg.cell, dropout=cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
        if cfg.tie_embeddings:
            self.head.weight = self.embedding.weight
        self.weight_drop, self.dropout_words = cfg.weight_drop, cfg.dropout_words
        self.dropout_input, self.dropout_hidden, self.dropout_output = (cfg.dropout_input, cfg.dropout_hidden,
                                                                        cfg.dropout_output)

    def new_state(self) -> None:
        """Generation starts from the zero state."""
        return None

    def forward(self, tokens: Tensor, state: RNNState | None = None) -> tuple[Tensor, RNNState]:
        """tokens: (B, T) -> (logits (B, T, V), the state after the last token)."""
        x = self.dropout(word_dropout(self.embedding, tokens, self.dropout_words, self.training))  # (B, T, E)
        x = locked_dropout(x, self.dropout_input, self.training)
        if self.training and (self.weight_drop or self.dropout_hidden):
            out, state = self._regularised_recurrence(x, state)  # (B, T, H)
        else:
            out, state = self.encoder.rnn(x, state)  # (B, T, H)
        return self.head(locked_dropout(self.dropout(out), self.dropout_output, self.training)), state

    def _regularised_recurrence(self, x: Tensor, state: RNNState | None) -> tuple[Tensor, RNNState]:
        """x (B, T, E) -> (B, T, H), state: the recurrence with each layer's hidden-to-hidden matrix dropped
        (DropConnect, one mask per call) and variational dropout between layers."""
        rnn = self.encoder.rnn
        weights = []
        for k in range(rnn.num_layers):
            w_hh = getattr(rnn, f"weight_hh_l{k}")
            if self.weight_drop:
                w_hh = F.dropout(w_hh, self.weight_drop, training=True)  # (G * H, H), scaled by 1 / (1 - p)
            weights.append([getattr(rnn, f"weight_ih_l{k}"), w_hh, getattr(rnn, f"bias_ih_l{k}"),
                            getattr(rnn, f"bias_hh_l{k}")])
        between = partial(locked_dropout, p=self.dropout_hidden, training=True) if self.dropout_hidden else None
        return run_rnn_with_weights(rnn, x, state, weights, between)


@dataclass
class TransformerLMConfig:
    """Defaults: a small GPT (pre-LN, GELU, learned positions, tied embeddings), nanoGPT's CPU scale."""

    dim: Positive = 192  # width of the embeddings and of every layer
    heads: Positive = 6  # attention heads (dim must divide by it)
    layers: Positive = 4  # stacked recurrent (or Transformer) layers
    ff_dim: Positive | None = None  # inner width of each feed-forward sub-layer (None: 4 * dim)
    dropout: Dropout = 0.0  # on embeddings, sub-layers and the residual stream
    positions: Literal["learned", "sinusoidal", "rotary"] = "learned"  # rotary: RoPE on queries and keys
    tie_embeddings: bool = True  # the output layer reuses the embedding matrix (false: an untied head)
    norm_first: bool = True  # pre-LN (GPT-2); False: the paper's post-LN
    # Options of the small-model speedrun literature (modded-nanogpt), each measured in docs/benchmarks.md:
    activation: Literal["gelu", "relu", "relu2"] = "gelu"  # of the feed-forward sub-layers (relu2: ReLU squared)
    qk_norm: bool = False  # RMS-normalise queries and keys per head before their dot product
    zero_init: bool = False  # the projections into the residual stream start at zero (each block the identity)
    softcap: PositiveFloat | None = None  # logits = softcap * tanh(logits / softcap) (None: as they are)

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ConfigError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")


class TransformerLM(nn.Module):
    """Token embedding + positions -> causal decoder-only Transformer blocks -> linear over the vocabulary."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = TransformerLMConfig

    def __init__(self, cfg: TransformerLMConfig, vocab_size: int, max_len: int | None = None):
        super().__init__()
        if not max_len:
            raise ConfigError("the transformer language model needs a context length (task.bptt)")
        self.max_len = max_len
        D = cfg.dim
        self.softcap = cfg.softcap
        self.embedding = nn.Embedding(vocab_size, D)
        rotary = None
        if cfg.positions == "learned":
            self.positions = LearnedPositionalEmbedding(max_len, D, cfg.dropout)
        elif cfg.positions == "sinusoidal":
            self.positions = SinusoidalPositionalEncoding(D, max_len, cfg.dropout)
        else:  # positions enter in attention only; the embeddings are dropped out as the others do
            self.positions, rotary = dropout.Dropout(cfg.dropout), RotaryEmbedding(D // cfg.heads, max_len)
        self.decoder = TransformerDecoder(cfg.layers, D, cfg.heads, cfg.ff_dim or 4 * D, cfg.dropout,
                                          cfg.activation, cfg.norm_first, cross_attention=False,
                                          qk_norm=cfg.qk_norm, rotary=rotary)
        self.head = nn.Linear(D, vocab_size, bias=False)
        self._init_weights(cfg.layers, cfg.zero_init)
        if cfg.tie_embeddings:
            self.head.weight = self.embedding.weight

    @torch.no_grad()
    def _init_weights(self, layers: int, zero: bool = False) -> None:
        """GPT-2's: weights N(0, 0.02), biases 0, and the projections that feed the residual stream scaled
        by 1/sqrt(2 * layers) so that its variance does not grow with depth (zero: those start at 0)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for layer in self.decoder.layers:
            for proj in (layer.self_attn.out_proj, layer.ff.linear2):
                nn.init.normal_(proj.weight, std=0.0 if zero else 0.02 / math.sqrt(2 * layers))

    def new_state(self) -> list[DecoderLayerCache]:
        """An empty KV cache (one per layer) for incremental decoding."""
        return self.decoder.new_cache()

    def forward(
        self, tokens: Tensor, state: list[DecoderLayerCache] | None = None
    ) -> tuple[Tensor, list[DecoderLayerCache] | None]:
        """tokens: (B, T) -> (logits (B, T, V), state). With a cache, `tokens` are the positions after the
        cached ones (offset = cached length) and the cache is returned grown by T."""
        offset = 0 if state is None else len(state[0].self_attn)
        x = self.embedding(tokens)  # (B, T, D)
        x = self.positions(x) if isinstance(self.positions, nn.Dropout) else self.positions(x, offset)
        x, _ = self.decoder(x, cache=state)  # causal self-attention only
        logits = self.head(x)  # (B, T, V)
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits, state
