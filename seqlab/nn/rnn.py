"""Recurrent encoders over padded batches, and pooling of their outputs.

The recurrence itself is torch's (`nn.RNN`/`nn.LSTM`/`nn.GRU`, cuDNN/oneDNN-fused); what is written out
here is the packing that makes padding invisible: a packed sequence stops each row at its own length,
so the final state is that of the last real token and padding changes nothing.

Below the encoder, the regularisers of AWD-LSTM (Merity et al., 2017) that a language model's unpacked
recurrence uses: variational (locked) dropout, embedding (word) dropout, and a run of a torch RNN with weights
given per call (DropConnect on the hidden-to-hidden matrices, variational dropout between layers).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlab.errors import ConfigError
from seqlab.nn.masks import padding_mask

_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

RNNState = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for an LSTM; each (num_layers * dirs, B, H)


class RNNEncoder(nn.Module):
    """A (multi-layer, optionally bidirectional) RNN, LSTM or GRU over (B, T, D) with lengths.

    `dropout` applies between stacked layers (as in torch, so it needs num_layers > 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, num_layers: int = 1, cell: str = "rnn",
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        if cell not in _CELLS:
            raise ConfigError(f"unknown recurrent cell {cell!r} (expected one of {sorted(_CELLS)})")
        self.num_layers, self.num_directions = num_layers, 2 if bidirectional else 1
        self.output_dim = hidden_dim * self.num_directions
        self.rnn = _CELLS[cell](input_dim, hidden_dim, num_layers, batch_first=True,
                                bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: Tensor, lengths: Tensor, need_state: bool = True) -> tuple[Tensor, Tensor, RNNState | None]:
        """x: (B, T, D), lengths: (B,) -> (outputs (B, T, H * dirs), zero at padding;
        final (B, H * dirs): the last layer's final hidden state of each direction, concatenated;
        state: the raw h (or (h, c)), (num_layers * dirs, B, H), for a decoder to start from).

        An empty sequence (length 0) gets zero outputs, final and state. `need_state=False` (a classifier) lets a
        single direction run unpacked over the padding, which cannot change the outputs before it (state None):
        on the CPU a packed LSTM's backward pass is 7-25x slower (64 x 400 tokens, 256 units).
        """
        B, T, _ = x.shape
        empty = (lengths == 0).to(x.device)  # (B,)
        if need_state or self.num_directions == 2:
            packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            packed_out, state = self.rnn(packed)
            outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=T)  # zeros at padding
        else:
            outputs, state = self.rnn(x)[0], None
            outputs = outputs.masked_fill(padding_mask(lengths, T).to(x.device)[:, :, None], 0.0)
        outputs = outputs.masked_fill(empty[:, None, None], 0.0)  # (B, T, H * dirs)
        if isinstance(state, tuple):
            state = tuple(s.masked_fill(empty[None, :, None], 0.0) for s in state)
        elif state is not None:
            state = state.masked_fill(empty[None, :, None], 0.0)
        # The last layer's final hidden states, read from the outputs (equal to the top layer of `state`, and
        # traceable for ONNX export, which cannot export the packed final state): the forward direction at
        # each row's last real position, the backward one at position 0.
        H = self.output_dim // self.num_directions
        last = (lengths.clamp(min=1) - 1).to(x.device)  # (B,)
        final = outputs[torch.arange(B, device=x.device), last, :H]  # (B, H)
        if self.num_directions == 2:
            final = torch.cat([final, outputs[:, 0, H:]], dim=-1)  # (B, 2H): forward then backward
        return outputs, final, state


def pool_sequence(outputs: Tensor, key_padding_mask: Tensor | None = None, kind: str = "mean") -> Tensor:
    """Pool (B, T, D) over time into (B, D), ignoring padding (True in key_padding_mask (B, T)).

    kind="mean": average of the unpadded positions; kind="max": their elementwise maximum.
    A fully padded row pools to zeros.
    """
    if key_padding_mask is None:
        key_padding_mask = torch.zeros(outputs.shape[:2], dtype=torch.bool, device=outputs.device)
    padded = key_padding_mask.unsqueeze(-1)  # (B, T, 1)
    if kind == "mean":
        count = (~padded).sum(dim=1).clamp(min=1)  # (B, 1)
        return outputs.masked_fill(padded, 0.0).sum(dim=1) / count
    if kind == "max":
        pooled = outputs.masked_fill(padded, float("-inf")).amax(dim=1)  # (B, D)
        return pooled.masked_fill(padded.all(dim=1), 0.0)
    raise ConfigError(f"unknown pooling {kind!r} (expected 'mean' or 'max')")


# ----------------------------------------------------------------- AWD-LSTM's regularisation (Merity et al., 2017)
def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational ("locked") dropout: x (B, T, D) times one mask (B, 1, D) per sequence, shared by all of its
    time steps and scaled by 1 / (1 - p) (Gal & Ghahramani, 2016). p = 0 or not training: x itself."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)  # (B, 1, D)
    return x * mask


def word_dropout(embedding: nn.Embedding, tokens: Tensor, p: float, training: bool) -> Tensor:
    """Embedding dropout: whole word types of the embedding matrix (V, E) dropped (one draw per type for the
    batch, every occurrence alike) and the rest scaled by 1 / (1 - p). tokens (B, T) -> (B, T, E).

    Equal to looking `tokens` up in the masked matrix (Merity et al.'s `embedded_dropout`), without building it."""
    x = embedding(tokens)  # (B, T, E)
    if not training or p == 0.0:
        return x
    keep = x.new_empty(embedding.num_embeddings).bernoulli_(1.0 - p) / (1.0 - p)  # (V,)
    return x * keep[tokens].unsqueeze(-1)


_KERNELS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}


def run_rnn_with_weights(rnn: nn.RNNBase, x: Tensor, state: RNNState | None, weights: list[list[Tensor]],
                         between: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, RNNState]:
    """Run a unidirectional, batch-first `rnn` (nn.RNN/LSTM/GRU with biases) over x (B, T, D) from `state`
    ((layers, B, H), or (h, c); None: zeros) with `weights[k]` = layer k's [w_ih, w_hh, b_ih, b_hh] in place of
    its parameters: the fused kernel nn.LSTM's own forward calls (`torch._VF.lstm`...), given these tensors, so
    that gradients reach whatever they were computed from (DropConnect's raw weights).

    `between` None: all layers in one call, with the module's own dropout between them (as `rnn(x, state)`).
    Otherwise one call per layer and `between(outputs (B, T, H))` applied to each layer's outputs but the last's
    (after the module's dropout): a mask that a fused multi-layer call cannot take (variational dropout).
    Returns (outputs of the last layer (B, T, H), the final state, as nn.LSTM's)."""
    if rnn.bidirectional or not rnn.batch_first or not rnn.bias or getattr(rnn, "proj_size", 0):
        raise ValueError("run_rnn_with_weights takes a unidirectional, batch-first RNN with biases, no projection")
    kernel, lstm = _KERNELS[rnn.mode], rnn.mode == "LSTM"
    if state is None:
        zeros = x.new_zeros(rnn.num_layers, x.size(0), rnn.hidden_size)
        state = (zeros, zeros) if lstm else zeros
    with warnings.catch_warnings():  # CUDA: weights outside the module's flattened buffer are compacted per call
        warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk of memory.*")
        if between is None:
            flat = [w for layer in weights for w in layer]
            out, *final = kernel(x, state, flat, True, rnn.num_layers, rnn.dropout, rnn.training, False, True)
            return out, (tuple(final) if lstm else final[0])
        finals = []
        for k, layer in enumerate(weights):
            hx = (state[0][k:k + 1], state[1][k:k + 1]) if lstm else state[k:k + 1]
            x, *final = kernel(x, hx, layer, True, 1, 0.0, rnn.training, False, True)
            finals.append(final)
            if k < len(weights) - 1:
                x = between(F.dropout(x, rnn.dropout, rnn.training))
    if lstm:
        return x, (torch.cat([f[0] for f in finals]), torch.cat([f[1] for f in finals]))
    return x, torch.cat([f[0] for f in finals])
