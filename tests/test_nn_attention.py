"""Masks and attention: parity with torch's MultiheadAttention, the two SDPA paths, zero weight on padding."""

import pytest
import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.nn import (
    AdditiveAttention,
    AttentionPooling,
    DotProductAttention,
    MultiHeadAttention,
    causal_mask,
    masked_softmax,
    padding_mask,
    scaled_dot_product_attention,
)
from tests.helpers import assert_seeded

B, D, H = 3, 8, 2


def test_padding_mask_marks_positions_past_each_length():
    mask = padding_mask(torch.tensor([3, 1, 0]), 4)
    expected = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    assert padding_mask(torch.tensor([2, 3])).shape == (2, 3)  # max_len defaults to the longest


def test_causal_mask_blocks_the_future():
    assert torch.equal(causal_mask(3), torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.bool))
    # two new queries after three cached keys: they sit at positions 3 and 4
    expected = torch.tensor([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, key_len=5), expected)


@pytest.mark.filterwarnings("ignore:Anomaly Detection")
def test_masked_softmax_fully_blocked_row_is_zero_not_nan():
    scores = torch.randn(2, 4, requires_grad=True)
    blocked = torch.tensor([[False, True, False, True], [True, True, True, True]])
    weights = masked_softmax(scores, blocked)
    assert torch.equal(weights[1], torch.zeros(4))
    assert weights[0, [1, 3]].eq(0).all() and torch.allclose(weights[0].sum(), torch.tensor(1.0))
    with torch.autograd.detect_anomaly():  # no NaN even inside the backward pass
        weights.sum().backward()
    assert torch.isfinite(scores.grad).all()


def _pair(seed=0, bias=True):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(D, H, bias=bias, batch_first=True)
    ours = MultiHeadAttention(D, H, bias=bias)
    ours.load_from_torch(ref)
    return ours, ref


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _assert_same_grads(ours, ref, inputs_ours, inputs_ref):
    for a, b in zip(inputs_ours, inputs_ref, strict=True):
        _close(a.grad, b.grad)
    _close(ours.in_proj.weight.grad, ref.in_proj_weight.grad)
    _close(ours.in_proj.bias.grad, ref.in_proj_bias.grad)
    _close(ours.out_proj.weight.grad, ref.out_proj.weight.grad)
    _close(ours.out_proj.bias.grad, ref.out_proj.bias.grad)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("causal", ["attn_mask", "is_causal", None])
def test_self_attention_matches_torch_forward_and_grads(need_weights, causal):
    ours, ref = _pair()
    T = 5
    x = torch.randn(B, T, D)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    kpm = padding_mask(torch.tensor([5, 3, 4]), T)
    mask = causal_mask(T)
    out, weights = ours(x_ours, x_ours, x_ours, key_padding_mask=kpm,
                        attn_mask=mask if causal == "attn_mask" else None,
                        is_causal=causal == "is_causal", need_weights=need_weights)
    ref_out, ref_weights = ref(x_ref, x_ref, x_ref, key_padding_mask=kpm, need_weights=need_weights,
                               attn_mask=mask if causal else None)
    _close(out, ref_out)
    if need_weights:
        assert weights.shape == (B, H, T, T)
        torch.testing.assert_close(weights.mean(dim=1), ref_weights)  # torch averages the heads
    else:
        assert weights is None
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (ref_out * grad).sum().backward()
    _assert_same_grads(ours, ref, [x_ours], [x_ref])


@pytest.mark.parametrize("need_weights", [False, True])
def test_cross_attention_matches_torch(need_weights):
    ours, ref = _pair(seed=1)
    q, kv = torch.randn(B, 4, D), torch.randn(B, 6, D)
    q_o, kv_o, q_r, kv_r = (t.clone().requires_grad_() for t in (q, kv, q, kv))
    kpm = padding_mask(torch.tensor([6, 2, 5]), 6)
    out, _ = ours(q_o, kv_o, kv_o, key_padding_mask=kpm, need_weights=need_weights)
    ref_out, _ = ref(q_r, kv_r, kv_r, key_padding_mask=kpm, need_weights=need_weights)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    out.pow(2).sum().backward()
    ref_out.pow(2).sum().backward()
    _assert_same_grads(ours, ref, [q_o, kv_o], [q_r, kv_r])


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("Tq", [1, 3, 5])
def test_weights_path_equals_kernel_path(is_causal, Tq):
    torch.manual_seed(0)
    Tk = 5
    q, k, v = torch.randn(B, H, Tq, 4), torch.randn(B, H, Tk, 4), torch.randn(B, H, Tk, 4)
    kpm = padding_mask(torch.tensor([5, 2, 4]), Tk)
    for masks in [{}, {"key_padding_mask": kpm}, {"attn_mask": torch.rand(Tq, Tk) < 0.3}]:
        fast, none = scaled_dot_product_attention(q, k, v, is_causal=is_causal, **masks)
        slow, weights = scaled_dot_product_attention(q, k, v, is_causal=is_causal, need_weights=True, **masks)
        assert none is None and weights.shape == (B, H, Tq, Tk)
        torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(slow, weights @ v)


def test_causal_with_fewer_queries_sees_all_earlier_keys():
    """Tq < Tk (after a cache): query i is position Tk - Tq + i, not position i."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    _, weights = scaled_dot_product_attention(q, k, v, is_causal=True, need_weights=True)
    assert (weights[0, 0, 0, :3] > 0).all() and weights[0, 0, 0, 3] == 0
    assert (weights[0, 0, 1] > 0).all()


@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_padded_row_gives_zeros_not_nan(need_weights):
    torch.manual_seed(0)
    ours = MultiHeadAttention(D, H)
    x = torch.randn(2, 4, D, requires_grad=True)
    kpm = padding_mask(torch.tensor([4, 0]), 4)
    out, _ = ours(x, x, x, key_padding_mask=kpm, need_weights=need_weights)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], ours.out_proj.bias.expand(4, D))  # no value reaches the row
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_mha_padded_key_gets_exactly_zero_weight():
    ours, _ = _pair()
    x = torch.randn(B, 5, D)
    kpm = padding_mask(torch.tensor([5, 3, 1]), 5)
    _, weights = ours(x, x, x, key_padding_mask=kpm, need_weights=True)  # (B, H, Tq, Tk)
    assert weights.masked_select(kpm[:, None, None, :]).eq(0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, 5))


def _single_query_attentions():
    torch.manual_seed(0)
    return {
        "additive": AdditiveAttention(query_dim=5, key_dim=D, hidden_dim=7),
        "dot": DotProductAttention(D, D, scaled=True, general=False),
        "general": DotProductAttention(5, D, scaled=False, general=True),
    }


@pytest.mark.parametrize("name", ["additive", "dot", "general"])
def test_single_query_attention_weights_and_padding_invariance(name):
    attention = _single_query_attentions()[name]
    query = torch.randn(B, D if name == "dot" else 5)
    keys = torch.randn(B, 4, D)
    lengths = torch.tensor([4, 2, 1])
    context, weights = attention(query, keys, padding_mask(lengths, 4))
    assert context.shape == (B, D) and weights.shape == (B, 4)
    assert weights[1, 2:].eq(0).all() and weights[2, 1:].eq(0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B))
    torch.testing.assert_close(context[2], keys[2, 0])  # one real key: all the weight on it
    # more padding, full of garbage, changes nothing
    longer = torch.cat([keys, torch.randn(B, 3, D)], dim=1)
    context2, weights2 = attention(query, longer, padding_mask(lengths, 7))
    torch.testing.assert_close(context2, context)
    torch.testing.assert_close(weights2[:, :4], weights)


@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_attention_pooling(kind):
    torch.manual_seed(0)
    pool = AttentionPooling(D, kind=kind)
    x = torch.randn(B, 5, D)
    kpm = padding_mask(torch.tensor([5, 3, 2]), 5)
    pooled, weights = pool(x, kpm)
    assert pooled.shape == (B, D) and weights.shape == (B, 5)
    assert weights.masked_select(kpm).eq(0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B))
    torch.testing.assert_close(pooled, torch.einsum("bt,btd->bd", weights, x))
    pooled.sum().backward()
    assert pool.query.grad is not None and pool.query.grad.abs().sum() > 0


def test_bad_configurations_raise_config_error():
    with pytest.raises(ConfigError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ConfigError, match="query_dim == key_dim"):
        DotProductAttention(4, 6, general=False)
    with pytest.raises(ConfigError, match="pooling kind"):
        AttentionPooling(4, kind="max")


def test_same_seed_same_outputs():
    x = torch.randn(B, 4, D, generator=torch.Generator().manual_seed(0))

    def run(seed):
        torch.manual_seed(seed)
        mha, pool = MultiHeadAttention(D, H, dropout=0.5), AttentionPooling(D)
        return mha(x, x, x)[0], pool(x)[0]  # training mode: dropout draws from the seeded RNG too

    assert_seeded(run)
