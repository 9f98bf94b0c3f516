"""Attention, written out: scaled dot-product, multi-head (with a KV cache for decoding), and the
single-query attentions of RNN seq2seq (Bahdanau's additive, Luong's dot/general) and of pooling.

Masks follow `seqlab.nn.masks`: True = blocked. Shapes: B batch, H heads, Tq queries, Tk keys,
dh = d_model / H per-head width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.nn.masks import causal_mask, masked_softmax
from seqlab.nn.positional import RotaryEmbedding


def _merge_masks(
    Tq: int,
    Tk: int,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
    device: torch.device | None = None,
) -> Tensor | None:
    """One bool mask (True = blocked) broadcastable to (B, H, Tq, Tk), or None when nothing is blocked.

    attn_mask: (Tq, Tk) or (B, H or 1, Tq, Tk); key_padding_mask: (B, Tk); is_causal: the Tq queries
    are the last Tq of the Tk positions and see no later key (see `causal_mask`).
    """
    blocked = causal_mask(Tq, device, key_len=Tk) if is_causal else None  # (Tq, Tk)
    if attn_mask is not None:
        blocked = attn_mask if blocked is None else blocked | attn_mask
    if key_padding_mask is not None:
        padding = key_padding_mask[:, None, None, :]  # (B, 1, 1, Tk)
        blocked = padding if blocked is None else blocked | padding
    return blocked


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """A(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

    q: (B, H, Tq, dh); k, v: (B, H, Tk, dh); masks, True = blocked: attn_mask (Tq, Tk) or broadcastable
    to (B, H, Tq, Tk), key_padding_mask (B, Tk); is_causal: the Tq queries are the last Tq of the Tk
    positions (Tq < Tk after a KV cache) and see no later key.
    Returns (out (B, H, Tq, dh), weights (B, H, Tq, Tk) or None). Without `need_weights` the fused
    `F.scaled_dot_product_attention` kernel does the work; with it the formula is computed as written
    and the weights returned are the attention distribution before dropout. A query whose every key
    is blocked outputs zeros (never NaN). `dropout_p` is applied as given: pass 0 in eval mode.
    """
    Tq, Tk = q.size(-2), k.size(-2)
    is_causal = is_causal and Tq > 1  # a single query is the last position: it may see every key
    if not need_weights and attn_mask is None and key_padding_mask is None and (not is_causal or Tq == Tk):
        # Nothing to merge: the kernel applies causality itself (its is_causal is right only for Tq == Tk).
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal), None
    blocked = _merge_masks(Tq, Tk, attn_mask, key_padding_mask, is_causal, q.device)
    if need_weights:
        scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5  # (B, H, Tq, Tk)
        weights = masked_softmax(scores, blocked)
        return F.dropout(weights, dropout_p) @ v, weights
    fully_blocked = blocked.all(dim=-1, keepdim=True)  # (.., Tq, 1): such rows attend everywhere, then zeroed
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked | fully_blocked, dropout_p=dropout_p)
    return out.masked_fill(fully_blocked, 0.0), None


class KVCache:
    """Keys and values of one attention layer kept across decoding steps, each (B, H, T, dh).

    static=False (self-attention): every call writes the new positions' keys/values after the cached ones,
    into buffers preallocated for `capacity` positions (doubled when full: no concatenation per token), so a
    new token attends to all earlier ones without recomputing them. static=True (cross-attention): the first
    call stores the projected memory and later calls reuse it without projecting it again.
    """

    def __init__(self, static: bool = False, capacity: int = 64):
        self.static, self.capacity = static, capacity
        self.k: Tensor | None = None  # (B, H, T, dh): views of the first T positions of the buffers
        self.v: Tensor | None = None
        self._buffers: tuple[Tensor, Tensor] | None = None

    def __len__(self) -> int:
        """Number of cached positions T (the positional offset of the next token)."""
        return 0 if self.k is None else self.k.size(2)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add k, v: (B, H, t, dh) after the cached positions; return all of them, (B, H, T + t, dh)."""
        if self.static:
            self.k, self.v = k, v
            return k, v
        T, t = len(self), k.size(2)
        if self._buffers is None or T + t > self._buffers[0].size(2):
            size = max(self.capacity, 2 * (T + t))
            buffers = tuple(x.new_empty(x.shape[0], x.shape[1], size, x.shape[3]) for x in (k, v))
            if T:
                buffers[0][:, :, :T], buffers[1][:, :, :T] = self.k, self.v
            self._buffers = buffers
        bk, bv = self._buffers
        bk[:, :, T:T + t], bv[:, :, T:T + t] = k, v
        self.k, self.v = bk[:, :, :T + t], bv[:, :, :T + t]
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (B',) in that order, e.g. the surviving hypotheses of a beam search."""
        if self.k is not None:
            if self._buffers is not None:
                self._buffers = tuple(b.index_select(0, index) for b in self._buffers)
                self.k, self.v = self._buffers[0][:, :, :len(self)], self._buffers[1][:, :, :len(self)]
            else:
                self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: H parallel scaled dot-product attentions over different learned projections
    of query, key and value; the heads' outputs are concatenated and projected by W^O (`out_proj`).

    W^Q, W^K, W^V are stacked in one (3D, D) projection `in_proj` (as torch's `in_proj_weight`): a
    self-attention call (query is key is value) makes one matmul for all three; cross-attention projects
    the query with the first D rows and the memory with the other 2D. Options of the speedrun literature:
    `qk_norm` (queries and keys RMS-normalised per head before the dot product: bounded logits) and
    `rotary` (a `RotaryEmbedding` applied to queries and keys, at the cache's offset when decoding).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 qk_norm: bool = False, rotary: RotaryEmbedding | None = None):
        super().__init__()
        if d_model % n_heads != 0:
            raise ConfigError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.dropout, self.qk_norm = d_model, n_heads, dropout, qk_norm
        # drawn as three (D, D) layers, in the order seqlab 0.2.0 drew its q/k/v_proj: a seed gives the same model
        parts = [nn.Linear(d_model, d_model, bias=bias) for _ in range(3)]
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias, device="meta")
        self.in_proj.weight = nn.Parameter(torch.cat([p.weight.detach() for p in parts]))
        if bias:
            self.in_proj.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]))
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = rotary
        self._register_load_state_dict_pre_hook(_stack_projections, with_module=True)

    def _project(self, x: Tensor, start: int, end: int) -> Tensor:
        """x (B, T, D) through rows start:end of in_proj -> (B, T, end - start)."""
        b = self.in_proj.bias
        return F.linear(x, self.in_proj.weight[start:end], None if b is None else b[start:end])

    def _heads(self, x: Tensor, n: int) -> Tensor:
        """(B, T, n * D) -> (n, B, H, T, dh): n projections split into heads."""
        B, T, _ = x.shape
        return x.view(B, T, n, self.n_heads, -1).permute(2, 0, 3, 1, 4)

    def _place(self, x: Tensor, offset: int) -> Tensor:
        """Queries or keys (..., T, dh) at positions offset..offset+T-1, RMS-normalised (`qk_norm`) and rotated
        (`rotary`); the same for both, so a self-attention call places its queries and keys in one go."""
        if self.qk_norm:
            x = F.rms_norm(x, (x.size(-1),))
        return x if self.rotary is None else self.rotary(x, offset)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """query: (B, Tq, D); key, value: (B, Tk, D). Returns (out (B, Tq, D), per-head weights
        (B, H, Tq, Tk) when need_weights else None).

        With a cache the keys attended to are the cached ones followed by this call's: key_padding_mask
        and attn_mask then cover all of them, and is_causal lets query i see every cached key.
        """
        B, Tq, D = query.shape
        offset = 0 if cache is None or cache.static else len(cache)
        reused = cache is not None and cache.static and len(cache) > 0  # cross-attention's memory, projected once
        if query is key and key is value and not reused:
            qkv = self._heads(self.in_proj(query), 3)  # (3, B, H, Tq, dh)
            (q, k), v = self._place(qkv[:2], offset).unbind(0), qkv[2]
        else:
            q = self._place(self._heads(self._project(query, 0, D), 1)[0], offset)
            if reused:
                k, v = cache.k, cache.v
            elif key is value:
                k, v = self._heads(self._project(key, D, 3 * D), 2).unbind(0)
                k = self._place(k, offset)
            else:
                k = self._place(self._heads(self._project(key, D, 2 * D), 1)[0], offset)
                v = self._heads(self._project(value, 2 * D, 3 * D), 1)[0]
        if cache is not None and not reused:
            k, v = cache.append(k, v)
        out, weights = scaled_dot_product_attention(
            q, k, v, attn_mask, key_padding_mask, is_causal,
            dropout_p=self.dropout if self.training else 0.0, need_weights=need_weights,
        )
        out = out.transpose(1, 2).reshape(B, Tq, D)  # concatenate the heads
        return self.out_proj(out), weights

    @torch.no_grad()
    def load_from_torch(self, module: nn.MultiheadAttention) -> None:
        """Copy the weights of torch's `nn.MultiheadAttention` (same d_model and heads): its packed
        `in_proj_weight` (3D, D) holds W^Q, W^K, W^V stacked in that order, as `in_proj` does."""
        self.in_proj.weight.copy_(module.in_proj_weight)
        self.out_proj.weight.copy_(module.out_proj.weight)
        if module.in_proj_bias is not None:
            self.in_proj.bias.copy_(module.in_proj_bias)
            self.out_proj.bias.copy_(module.out_proj.bias)


# Checkpoints written before the fused projection (seqlab 0.2.0 and older) hold W^Q, W^K, W^V as three
# modules: they are stacked, in that order, as such weights load (and the optimiser's state with them,
# `seqlab.train.optim.stack_optimizer_state`; tests/test_migration.py loads and resumes such runs).
STACKED = {"in_proj": ("q_proj", "k_proj", "v_proj")}


def _stack_projections(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    for new, olds in STACKED.items():
        for kind in ("weight", "bias"):
            names = [f"{prefix}{old}.{kind}" for old in olds]
            if all(n in state_dict for n in names):
                state_dict[f"{prefix}{new}.{kind}"] = torch.cat([state_dict.pop(n) for n in names])


def _attend(scores: Tensor, keys: Tensor, key_padding_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """scores: (B, Tk), keys: (B, Tk, Dk) -> (context (B, Dk), weights (B, Tk))."""
    weights = masked_softmax(scores, key_padding_mask)
    context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # weighted sum of the keys
    return context, weights


class AdditiveAttention(nn.Module):
    """Bahdanau (additive) attention of one query over a sequence: score_j = v^T tanh(W_q q + W_k k_j)."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim)
        self.score = nn.Linear(hidden_dim, 1, bias=False)  # v

    def forward(
        self, query: Tensor, keys: Tensor, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """query: (B, Dq), keys: (B, Tk, Dk), key_padding_mask: (B, Tk) ->
        (context (B, Dk), weights (B, Tk): sum to 1 over unpadded keys, 0 on padded ones)."""
        hidden = torch.tanh(self.query_proj(query).unsqueeze(1) + self.key_proj(keys))  # (B, Tk, hidden)
        return _attend(self.score(hidden).squeeze(-1), keys, key_padding_mask)


class DotProductAttention(nn.Module):
    """Luong attention of one query over a sequence: score_j = q . k_j ("dot") or q^T W k_j ("general"),
    divided by sqrt(key_dim) when scaled."""

    def __init__(self, query_dim: int, key_dim: int, scaled: bool = True, general: bool = True):
        super().__init__()
        if not general and query_dim != key_dim:
            raise ConfigError(f"dot attention needs query_dim == key_dim (got {query_dim}, {key_dim}); "
                              "use general=True")
        self.proj = nn.Linear(query_dim, key_dim, bias=False) if general else None  # W^T
        self.scale = key_dim**-0.5 if scaled else 1.0

    def forward(
        self, query: Tensor, keys: Tensor, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """query: (B, Dq), keys: (B, Tk, Dk), key_padding_mask: (B, Tk) ->
        (context (B, Dk), weights (B, Tk): sum to 1 over unpadded keys, 0 on padded ones)."""
        if self.proj is not None:
            query = self.proj(query)  # (B, Dk)
        scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1) * self.scale  # (B, Tk)
        return _attend(scores, keys, key_padding_mask)


class AttentionPooling(nn.Module):
    """Pool a sequence into one vector with a learned query: the weights say which positions the
    pooled vector came from (exposed for explanations)."""

    def __init__(self, dim: int, kind: str = "additive"):
        super().__init__()
        self.query = nn.Parameter(torch.randn(dim) * dim**-0.5)
        if kind == "additive":
            self.attention: nn.Module = AdditiveAttention(dim, dim, dim)
        elif kind == "dot":
            self.attention = DotProductAttention(dim, dim, scaled=True, general=False)
        else:
            raise ConfigError(f"unknown attention pooling kind {kind!r} (expected 'additive' or 'dot')")

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, T, D), key_padding_mask: (B, T) -> (pooled (B, D), weights (B, T))."""
        query = self.query.expand(x.size(0), -1)  # (B, D)
        return self.attention(query, x, key_padding_mask)
