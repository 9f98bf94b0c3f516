"""Sequence-to-sequence models for translation: the RNN encoder-decoder with attention, and the Transformer.

Both take the same tensors and return logits (teacher forcing: `tgt_in` is the target shifted right,
`<bos> y_1 ... y_{T-1}`, and position t predicts y_t)::

    forward(src (B, S), src_lengths (B,), tgt_in (B, T)) -> logits (B, T, V_tgt)

and the same decoding interface, which `seqlab.tasks.decoding` drives (greedy and beam search)::

    state = model.encode(src, src_lengths)                   # what the decoder reads, one row per sentence
    logits, state, attention = model.decode_step(tokens (N,), state, need_weights)  # one target position
    state = model.reorder_state(state, index (N',))         # keep rows `index`, e.g. the surviving beams

`forward_with_attention` also returns the source x target attention (B, T, S) that plots show: the
lecture's "what does the network seem to be focusing on?". Every attention comes from `seqlab.nn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.nn import (
    AdditiveAttention,
    DecoderLayerCache,
    DotProductAttention,
    RNNEncoder,
    RNNState,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
    TransformerEncoder,
    padding_mask,
)
from seqlab.options import DENSE_SPACE, Dropout, Positive


def _embeddings(
    src_vocab_size: int, tgt_vocab_size: int, dim: int, padding_idx: int, share: bool, shared_vocab: bool
) -> tuple[nn.Embedding, nn.Embedding]:
    """Source and target embeddings, one module for both when `share` (which needs a joint vocabulary)."""
    if share and not shared_vocab:
        raise ConfigError("model.share_embeddings needs a joint vocabulary (task.joint_vocab=true)")
    src = nn.Embedding(src_vocab_size, dim, padding_idx=padding_idx)
    tgt = src if share else nn.Embedding(tgt_vocab_size, dim, padding_idx=padding_idx)
    return src, tgt


# ---------------------------------------------------------------------------------------------- RNN


@dataclass
class RNNSeq2SeqConfig:
    """A bidirectional GRU/LSTM encoder; a GRU/LSTM decoder that attends to the encoder's outputs at
    every step (Luong et al., 2015: the decoder state h_t queries the source, additive (Bahdanau) or
    multiplicative scores; the attentional state tanh(W_c [c_t; h_t]), `dim` wide, gives the logits
    and is fed to the next step)."""

    cell: Literal["gru", "lstm"] = "gru"  # the recurrence of encoder and decoder
    dim: Positive = 256  # token embeddings and the attentional state
    hidden: Positive = 256  # encoder, per direction; the decoder's state is 2 * hidden wide
    layers: Positive = 1  # encoder layers
    decoder_layers: Positive | None = None  # None: as many as the encoder's
    attention: Literal["additive", "dot", "general"] = "general"  # additive: Bahdanau; general: Luong's
    input_feeding: bool = True  # feed the previous attentional state into the next step
    dropout: Dropout = 0.3  # on embeddings, between layers and on the attentional state
    share_embeddings: bool = False  # one embedding for source and target (needs task.joint_vocab)
    tie_embeddings: bool = False  # output projection = target embedding


@dataclass
class RNNDecoderState:
    """What the RNN decoder carries from one target position to the next (N rows)."""

    memory: Tensor  # (N, S, 2H) encoder outputs
    memory_mask: Tensor  # (N, S) True at source padding
    hidden: RNNState  # (L, N, Hd), or (h, c) for an LSTM
    feed: Tensor  # (N, E) the previous attentional state (zeros before the first step)


class RNNSeq2Seq(nn.Module):
    """See `RNNSeq2SeqConfig`. Decoding runs one target position at a time (the recurrence and input
    feeding need it), in training too; the output projection then runs once over all positions."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = RNNSeq2SeqConfig

    def __init__(self, cfg: RNNSeq2SeqConfig, src_vocab_size: int, tgt_vocab_size: int, padding_idx: int,
                 shared_vocab: bool = False):
        super().__init__()
        self.cfg = cfg
        dim = 2 * cfg.hidden  # decoder state = encoder output width, so "dot" attention fits
        self.decoder_layers = cfg.decoder_layers or cfg.layers
        self.src_embed, self.tgt_embed = _embeddings(src_vocab_size, tgt_vocab_size, cfg.dim,
                                                     padding_idx, cfg.share_embeddings, shared_vocab)
        self.encoder = RNNEncoder(cfg.dim, cfg.hidden, cfg.layers, cfg.cell, bidirectional=True,
                                  dropout=cfg.dropout)
        self.bridge = nn.Linear(dim, self.decoder_layers * dim)  # encoder's final state -> decoder's initial state
        rnn = nn.GRU if cfg.cell == "gru" else nn.LSTM
        self.decoder = rnn(cfg.dim * (2 if cfg.input_feeding else 1), dim, self.decoder_layers,
                           batch_first=True, dropout=cfg.dropout if self.decoder_layers > 1 else 0.0)
        if cfg.attention == "additive":
            self.attention: nn.Module = AdditiveAttention(dim, dim, dim)
        else:
            self.attention = DotProductAttention(dim, dim, scaled=True, general=cfg.attention == "general")
        self.combine = nn.Linear(2 * dim, cfg.dim, bias=False)  # W_c [c_t; h_t]
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.dim, tgt_vocab_size)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight

    def encode(self, src: Tensor, src_lengths: Tensor) -> RNNDecoderState:
        """src: (B, S), src_lengths: (B,) -> the decoder's initial state."""
        memory, final, _ = self.encoder(self.dropout(self.src_embed(src)), src_lengths)  # (B, S, 2H), (B, 2H)
        B = src.size(0)
        h = torch.tanh(self.bridge(final)).view(B, self.decoder_layers, -1).transpose(0, 1).contiguous()
        hidden: RNNState = (h, torch.zeros_like(h)) if self.cfg.cell == "lstm" else h  # (L, B, Hd)
        mask = padding_mask(src_lengths.to(src.device), src.size(1))
        return RNNDecoderState(memory, mask, hidden, memory.new_zeros(B, self.cfg.dim))

    def _step(self, tokens: Tensor, state: RNNDecoderState) -> tuple[Tensor, RNNDecoderState, Tensor]:
        """tokens: (N,) -> (attentional state (N, E), new state, attention (N, S))."""
        x = self.dropout(self.tgt_embed(tokens))  # (N, E)
        if self.cfg.input_feeding:
            x = torch.cat([x, state.feed], dim=-1)
        out, hidden = self.decoder(x.unsqueeze(1), state.hidden)
        h = out.squeeze(1)  # (N, Hd)
        context, weights = self.attention(h, state.memory, state.memory_mask)  # (N, 2H), (N, S)
        attentional = self.dropout(torch.tanh(self.combine(torch.cat([context, h], dim=-1))))
        return attentional, RNNDecoderState(state.memory, state.memory_mask, hidden, attentional), weights

    def forward_with_attention(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor
                               ) -> tuple[Tensor, Tensor]:
        """-> (logits (B, T, V), attention (B, T, S))."""
        state = self.encode(src, src_lengths)
        outputs, weights = [], []
        for t in range(tgt_in.size(1)):
            h, state, w = self._step(tgt_in[:, t], state)
            outputs.append(h)
            weights.append(w)
        return self.out(torch.stack(outputs, dim=1)), torch.stack(weights, dim=1)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """src: (B, S), src_lengths: (B,), tgt_in: (B, T) -> logits (B, T, V)."""
        return self.forward_with_attention(src, src_lengths, tgt_in)[0]

    def decode_step(self, tokens: Tensor, state: RNNDecoderState, need_weights: bool = False
                    ) -> tuple[Tensor, RNNDecoderState, Tensor | None]:
        """tokens: (N,) the previous target token of each row -> (logits (N, V), state, attention (N, S))."""
        h, state, weights = self._step(tokens, state)
        return self.out(h), state, weights if need_weights else None

    def reorder_state(self, state: RNNDecoderState, index: Tensor) -> RNNDecoderState:
        """Keep rows `index` (N',) of the state, in that order."""
        hidden = (tuple(s.index_select(1, index) for s in state.hidden) if isinstance(state.hidden, tuple)
                  else state.hidden.index_select(1, index))
        return RNNDecoderState(state.memory.index_select(0, index), state.memory_mask.index_select(0, index),
                               hidden, state.feed.index_select(0, index))


# ---------------------------------------------------------------------------------------------- Transformer


@dataclass
class TransformerSeq2SeqConfig:
    """The Transformer of "Attention is all you need": an encoder stack over the source, a decoder stack
    with masked self-attention over the target and cross-attention to the encoder's output."""

    dim: Positive = 256  # width of the embeddings and of every layer
    heads: Positive = 4  # attention heads (dim must divide by it)
    layers: Positive = 3  # encoder layers
    decoder_layers: Positive | None = None  # None: as many as the encoder's
    ff_dim: Positive = 1024  # inner width of each feed-forward sub-layer
    dropout: Dropout = 0.1  # on embeddings, between layers and on the attentional state
    activation: Literal["relu", "gelu"] = "relu"  # of the feed-forward sub-layers
    norm_first: bool = True  # pre-LN (stable without a long warm-up); false: the paper's post-LN
    max_len: Positive = 256  # longest sequence the positional encoding covers
    share_embeddings: bool = False  # one embedding for source and target (needs task.joint_vocab)
    tie_embeddings: bool = True  # output projection = target embedding

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ConfigError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")


@dataclass
class TransformerDecoderState:
    """The encoder's output and the decoder's key/value caches (N rows)."""

    memory: Tensor  # (N, S, D)
    memory_mask: Tensor  # (N, S) True at source padding
    cache: list[DecoderLayerCache]


class TransformerSeq2Seq(nn.Module):
    """See `TransformerSeq2SeqConfig`. Embeddings are scaled by sqrt(dim) (initialised with std
    dim^-1/2, so they enter with unit variance) and summed with sinusoidal positions."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = TransformerSeq2SeqConfig

    def __init__(self, cfg: TransformerSeq2SeqConfig, src_vocab_size: int, tgt_vocab_size: int,
                 padding_idx: int, shared_vocab: bool = False):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.src_embed, self.tgt_embed = _embeddings(src_vocab_size, tgt_vocab_size, d, padding_idx,
                                                     cfg.share_embeddings, shared_vocab)
        for emb in dict.fromkeys([self.src_embed, self.tgt_embed]):  # once each, in a fixed order
            nn.init.normal_(emb.weight, std=d**-0.5)
            with torch.no_grad():
                emb.weight[padding_idx].zero_()
        self.scale = d**0.5
        self.pos = SinusoidalPositionalEncoding(d, cfg.max_len, cfg.dropout)
        self.encoder = TransformerEncoder(cfg.layers, d, cfg.heads, cfg.ff_dim, cfg.dropout,
                                          cfg.activation, cfg.norm_first)
        self.decoder = TransformerDecoder(cfg.decoder_layers or cfg.layers, d, cfg.heads, cfg.ff_dim, cfg.dropout,
                                          cfg.activation, cfg.norm_first)
        self.out = nn.Linear(d, tgt_vocab_size)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight

    def encode(self, src: Tensor, src_lengths: Tensor) -> TransformerDecoderState:
        """src: (B, S), src_lengths: (B,) -> the encoder's output and empty decoder caches."""
        mask = padding_mask(src_lengths.to(src.device), src.size(1))  # (B, S)
        memory, _ = self.encoder(self.pos(self.src_embed(src) * self.scale), key_padding_mask=mask)
        return TransformerDecoderState(memory, mask, self.decoder.new_cache())

    def _decode(self, tgt: Tensor, state: TransformerDecoderState, need_weights: bool,
                cache: list[DecoderLayerCache] | None) -> tuple[Tensor, Tensor | None]:
        """tgt: (B, T) target tokens after the `len(cache)` cached ones -> (logits (B, T, V),
        the last layer's cross-attention averaged over heads (B, T, S) or None)."""
        offset = len(cache[0].self_attn) if cache else 0
        y = self.pos(self.tgt_embed(tgt) * self.scale, offset)
        h, weights = self.decoder(y, state.memory, None, state.memory_mask, need_weights, cache)
        return self.out(h), weights[-1].mean(dim=1) if need_weights else None

    def forward_with_attention(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor
                               ) -> tuple[Tensor, Tensor]:
        """-> (logits (B, T, V), attention (B, T, S))."""
        return self._decode(tgt_in, self.encode(src, src_lengths), True, None)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """src: (B, S), src_lengths: (B,), tgt_in: (B, T) -> logits (B, T, V)."""
        return self._decode(tgt_in, self.encode(src, src_lengths), False, None)[0]

    def decode_step(self, tokens: Tensor, state: TransformerDecoderState, need_weights: bool = False
                    ) -> tuple[Tensor, TransformerDecoderState, Tensor | None]:
        """tokens: (N,) the previous target token of each row -> (logits (N, V), state, attention (N, S)).
        Earlier positions come from the state's key/value caches."""
        logits, weights = self._decode(tokens[:, None], state, need_weights, state.cache)
        return logits[:, 0], state, None if weights is None else weights[:, 0]

    def reorder_state(self, state: TransformerDecoderState, index: Tensor) -> TransformerDecoderState:
        """Keep rows `index` (N',) of the state, in that order."""
        for layer_cache in state.cache:
            layer_cache.reorder(index)
        return TransformerDecoderState(state.memory.index_select(0, index),
                                       state.memory_mask.index_select(0, index), state.cache)
