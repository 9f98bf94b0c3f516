"""The Transformer (Vaswani et al., 2017), one sub-layer at a time.

Every sub-layer (self-attention, cross-attention, feed-forward) sits in a residual connection with a
LayerNorm: post-LN, the paper's order, computes LayerNorm(x + Dropout(Sublayer(x))); pre-LN
(`norm_first=True`, as in GPT-2) computes x + Dropout(Sublayer(LayerNorm(x))) and the stack ends with a
final LayerNorm. Post-LN layers match `nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer`
(batch_first=True) given the same weights (`load_from_torch`).

Layers and stacks return (x, weights): weights is None unless need_weights (see each forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.nn.attention import KVCache, MultiHeadAttention
from seqlab.nn.dropout import Dropout
from seqlab.nn.positional import RotaryEmbedding


def relu2(x: Tensor) -> Tensor:
    """ReLU squared (So et al., 2021, Primer; modded-nanogpt's MLP)."""
    return F.relu(x).square()


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "relu2": relu2}


class FeedForward(nn.Module):
    """Position-wise feed-forward network: linear2(dropout(activation(linear1(x)))), D -> d_ff -> D."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r} (expected one of {sorted(_ACTIVATIONS)})")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = Dropout(dropout)
        self.activation = _ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


def _sublayer_input(x: Tensor, norm: nn.LayerNorm, norm_first: bool) -> Tensor:
    """What a sub-layer reads: LayerNorm(x) in pre-LN, x itself in post-LN."""
    return norm(x) if norm_first else x


def _residual(x: Tensor, out: Tensor, norm: nn.LayerNorm, dropout: Dropout, norm_first: bool) -> Tensor:
    """Add a sub-layer's output back: x + Dropout(out), then LayerNorm in post-LN."""
    x = x + dropout(out)
    return x if norm_first else norm(x)


@torch.no_grad()
def _copy_modules(pairs: list[tuple[nn.Module, nn.Module]]) -> None:
    for ours, theirs in pairs:
        ours.load_state_dict(theirs.state_dict())


class TransformerEncoderLayer(nn.Module):
    """Self-attention, then feed-forward, each in a residual connection with LayerNorm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D) -> (x (B, T, D), self-attention weights (B, H, T, Tk) or None).
        Masks and cache as in `MultiHeadAttention.forward` (True = blocked)."""
        h = _sublayer_input(x, self.norm1, self.norm_first)
        a, weights = self.self_attn(h, h, h, key_padding_mask, attn_mask, is_causal, need_weights, cache)
        x = _residual(x, a, self.norm1, self.dropout1, self.norm_first)
        h = _sublayer_input(x, self.norm2, self.norm_first)
        x = _residual(x, self.ff(h), self.norm2, self.dropout2, self.norm_first)
        return x, weights

    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> None:
        """Copy the weights of torch's `nn.TransformerEncoderLayer` (same sizes)."""
        self.self_attn.load_from_torch(layer.self_attn)
        _copy_modules([(self.ff.linear1, layer.linear1), (self.ff.linear2, layer.linear2),
                       (self.norm1, layer.norm1), (self.norm2, layer.norm2)])


class TransformerEncoder(nn.Module):
    """A stack of n_layers encoder layers (plus a final LayerNorm when norm_first)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, activation, norm_first)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model) if norm_first else None

    def new_cache(self) -> list[KVCache]:
        """An empty cache per layer, for incremental (causal) encoding."""
        return [KVCache() for _ in self.layers]

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        cache: list[KVCache] | None = None,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """x: (B, T, D) -> (x (B, T, D), per-layer self-attention weights [(B, H, T, Tk)] or None)."""
        all_weights = []
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, key_padding_mask, attn_mask, is_causal, need_weights,
                               None if cache is None else cache[i])
            all_weights.append(weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, all_weights if need_weights else None


class DecoderLayerCache:
    """The caches of one decoder layer: self-attention keys/values grow by one step per call;
    cross-attention keys/values (the projected memory) are computed on the first call and reused."""

    def __init__(self):
        self.self_attn = KVCache()
        self.cross_attn = KVCache(static=True)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (B',) in that order (beam search)."""
        self.self_attn.reorder(index)
        self.cross_attn.reorder(index)


class TransformerDecoderLayer(nn.Module):
    """Masked (causal) self-attention, then cross-attention to the encoder's memory, then feed-forward,
    each in a residual connection with LayerNorm. With cross_attention=False it is the decoder-only
    (GPT) block of a language model."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, cross_attention: bool = True, qk_norm: bool = False,
                 rotary: RotaryEmbedding | None = None):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, qk_norm=qk_norm, rotary=rotary)
        self.norm1, self.dropout1 = nn.LayerNorm(d_model), Dropout(dropout)
        if cross_attention:
            self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
            self.norm2, self.dropout2 = nn.LayerNorm(d_model), Dropout(dropout)
        else:
            self.cross_attn = None
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm3, self.dropout3 = nn.LayerNorm(d_model), Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
        cache: DecoderLayerCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D) target positions; memory: (B, S, D) encoder output (cross-attention only);
        key_padding_mask: (B, Tk) over the target keys (cached ones included); memory_key_padding_mask:
        (B, S). Returns (x (B, T, D), weights): with need_weights, the cross-attention weights
        (B, H, T, S), or the self-attention weights (B, H, T, Tk) when cross_attention=False.

        With a cache, x holds only the new positions; they see every cached one.
        """
        h = _sublayer_input(x, self.norm1, self.norm_first)
        a, weights = self.self_attn(h, h, h, key_padding_mask, is_causal=True,
                                    need_weights=need_weights and self.cross_attn is None,
                                    cache=None if cache is None else cache.self_attn)
        x = _residual(x, a, self.norm1, self.dropout1, self.norm_first)
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("a decoder layer with cross-attention needs memory")
            h = _sublayer_input(x, self.norm2, self.norm_first)
            a, weights = self.cross_attn(h, memory, memory, memory_key_padding_mask,
                                         need_weights=need_weights,
                                         cache=None if cache is None else cache.cross_attn)
            x = _residual(x, a, self.norm2, self.dropout2, self.norm_first)
        h = _sublayer_input(x, self.norm3, self.norm_first)
        x = _residual(x, self.ff(h), self.norm3, self.dropout3, self.norm_first)
        return x, weights

    def load_from_torch(self, layer: nn.TransformerDecoderLayer) -> None:
        """Copy the weights of torch's `nn.TransformerDecoderLayer` (same sizes, cross_attention=True)."""
        self.self_attn.load_from_torch(layer.self_attn)
        self.cross_attn.load_from_torch(layer.multihead_attn)
        _copy_modules([(self.ff.linear1, layer.linear1), (self.ff.linear2, layer.linear2),
                       (self.norm1, layer.norm1), (self.norm2, layer.norm2), (self.norm3, layer.norm3)])


class TransformerDecoder(nn.Module):
    """A stack of n_layers decoder layers (plus a final LayerNorm when norm_first)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, cross_attention: bool = True,
                 qk_norm: bool = False, rotary: RotaryEmbedding | None = None):
        """qk_norm and rotary (one table shared by every layer's self-attention): see `MultiHeadAttention`."""
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, n_heads, d_ff, dropout, activation, norm_first, cross_attention,
                                    qk_norm, rotary)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model) if norm_first else None

    def new_cache(self) -> list[DecoderLayerCache]:
        """An empty cache per layer, for incremental decoding."""
        return [DecoderLayerCache() for _ in self.layers]

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
        cache: list[DecoderLayerCache] | None = None,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """x: (B, T, D) -> (x (B, T, D), per-layer weights as in `TransformerDecoderLayer.forward` or None).

        Incremental decoding: `cache = decoder.new_cache()`, then call with the new positions only
        (their positional offset is `len(cache[0].self_attn)` before the call).
        """
        all_weights = []
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, memory, key_padding_mask, memory_key_padding_mask, need_weights,
                               None if cache is None else cache[i])
            all_weights.append(weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, all_weights if need_weights else None
