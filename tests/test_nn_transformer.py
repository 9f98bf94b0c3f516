"""Transformer blocks: parity with torch's layers, causality, KV-cache decoding, positional encodings."""

import math

import pytest
import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.nn import (
    FeedForward,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    causal_mask,
    padding_mask,
)
from tests.helpers import assert_seeded

B, D, H, FF = 2, 8, 2, 16


def _assert_same_grads(ours: nn.Module, ref: nn.Module):
    """Gradients of our parameters equal torch's (our in_proj is torch's in_proj_weight/bias)."""
    ref_params = dict(ref.named_parameters())
    ours_params = dict(ours.named_parameters())
    renames = {"ff.": "", "cross_attn.": "multihead_attn.", "in_proj.": "in_proj_"}
    for name, param in ours_params.items():
        ref_name = name
        for a, b in renames.items():
            ref_name = ref_name.replace(a, b)
        torch.testing.assert_close(param.grad, ref_params[ref_name].grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=activation, norm_first=norm_first,
                                     batch_first=True)
    ours = TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=activation, norm_first=norm_first)
    ours.load_from_torch(ref)
    x = torch.randn(B, 5, D)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    kpm = padding_mask(torch.tensor([5, 3]), 5)
    out, weights = ours(x_ours, key_padding_mask=kpm, attn_mask=causal_mask(5))
    ref_out = ref(x_ref, src_mask=causal_mask(5), src_key_padding_mask=kpm)
    assert out.shape == (B, 5, D) and weights is None
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (ref_out * grad).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    _assert_same_grads(ours, ref)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first):
    torch.manual_seed(0)
    ref = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first, batch_first=True)
    ours = TransformerDecoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first)
    ours.load_from_torch(ref)
    x, memory = torch.randn(B, 4, D), torch.randn(B, 6, D)
    x_o, m_o, x_r, m_r = (t.clone().requires_grad_() for t in (x, memory, x, memory))
    tgt_kpm = padding_mask(torch.tensor([4, 2]), 4)
    mem_kpm = padding_mask(torch.tensor([3, 6]), 6)
    out, weights = ours(x_o, m_o, key_padding_mask=tgt_kpm, memory_key_padding_mask=mem_kpm,
                        need_weights=True)
    ref_out = ref(x_r, m_r, tgt_mask=causal_mask(4), tgt_key_padding_mask=tgt_kpm,
                  memory_key_padding_mask=mem_kpm)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    assert weights.shape == (B, H, 4, 6) and weights[0, :, :, 3:].eq(0).all()  # cross-attention weights
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (ref_out * grad).sum().backward()
    torch.testing.assert_close(x_o.grad, x_r.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m_o.grad, m_r.grad, atol=1e-5, rtol=1e-4)
    _assert_same_grads(ours, ref)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_stack_shapes_and_weights(norm_first):
    torch.manual_seed(0)
    encoder = TransformerEncoder(3, D, H, FF, norm_first=norm_first).eval()
    assert (encoder.norm is not None) == norm_first
    x = torch.randn(B, 5, D)
    out, weights = encoder(x, key_padding_mask=padding_mask(torch.tensor([5, 2]), 5), need_weights=True)
    assert out.shape == (B, 5, D) and len(weights) == 3 and weights[0].shape == (B, H, 5, 5)
    assert weights[2][1, :, :, 2:].eq(0).all()
    assert encoder(x)[1] is None


def _decoder(cross_attention: bool, norm_first: bool, seed: int = 0) -> TransformerDecoder:
    torch.manual_seed(seed)
    return TransformerDecoder(2, D, H, FF, norm_first=norm_first, cross_attention=cross_attention).eval()


@pytest.mark.parametrize("cross_attention", [True, False])
def test_decoder_is_causal(cross_attention):
    decoder = _decoder(cross_attention, norm_first=False)
    memory = torch.randn(B, 6, D) if cross_attention else None
    x = torch.randn(B, 5, D)
    t = 3
    changed = x.clone()
    changed[:, t] += 1.0
    out, _ = decoder(x, memory)
    out_changed, _ = decoder(changed, memory)
    torch.testing.assert_close(out_changed[:, :t], out[:, :t], atol=0, rtol=0)
    assert not torch.allclose(out_changed[:, t:], out[:, t:])  # the change is seen from t on


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("cross_attention", [True, False])
def test_kv_cache_decoding_equals_full_recompute(cross_attention, norm_first):
    decoder = _decoder(cross_attention, norm_first)
    T = 5
    x = torch.randn(B, T, D)
    memory = torch.randn(B, 6, D) if cross_attention else None
    mem_kpm = padding_mask(torch.tensor([6, 4]), 6) if cross_attention else None
    full, full_weights = decoder(x, memory, memory_key_padding_mask=mem_kpm, need_weights=True)
    cache = decoder.new_cache()
    steps, step_weights = [], []
    for t in range(T):
        assert len(cache[0].self_attn) == t
        out, weights = decoder(x[:, t : t + 1], memory, memory_key_padding_mask=mem_kpm, need_weights=True,
                               cache=cache)
        steps.append(out)
        step_weights.append(weights[-1])
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    if cross_attention:  # (B, H, 1, S) per step
        torch.testing.assert_close(torch.cat(step_weights, dim=2), full_weights[-1], atol=1e-6, rtol=1e-5)
    else:  # self-attention weights: step t attends to t + 1 keys
        torch.testing.assert_close(step_weights[-1], full_weights[-1][:, :, -1:], atol=1e-6, rtol=1e-5)


def test_kv_cache_prefill_then_steps_and_reorder():
    """A prompt of several tokens at once, then single steps, with a beam-search reorder in between."""
    decoder = _decoder(cross_attention=True, norm_first=False)
    x, memory = torch.randn(3, 6, D), torch.randn(3, 4, D)
    cache = decoder.new_cache()
    decoder(x[:, :3], memory, cache=cache)
    index = torch.tensor([2, 0, 0])
    for layer_cache in cache:
        layer_cache.reorder(index)
    x, memory = x[index], memory[index]
    steps = [decoder(x[:, t : t + 1], memory, cache=cache)[0] for t in range(3, 6)]
    full, _ = decoder(x, memory)
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 3:], atol=1e-5, rtol=1e-4)


def test_causal_encoder_with_cache_equals_full_recompute():
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, D, H, FF, norm_first=True).eval()
    x = torch.randn(B, 4, D)
    full, _ = encoder(x, is_causal=True)
    cache = encoder.new_cache()
    steps = [encoder(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_decoder_only_block_has_no_cross_attention():
    layer = TransformerDecoderLayer(D, H, FF, cross_attention=False)
    assert layer.cross_attn is None and not any("cross" in name for name, _ in layer.named_parameters())
    with pytest.raises(ValueError, match="memory"):
        TransformerDecoderLayer(D, H, FF)(torch.randn(1, 2, D))


def test_feed_forward_rejects_unknown_activation():
    with pytest.raises(ConfigError, match="activation"):
        FeedForward(D, FF, activation="tanh")


def test_sinusoidal_values_match_the_formula():
    d_model = 6
    pe = SinusoidalPositionalEncoding(d_model, max_len=50)
    out = pe(torch.zeros(1, 50, d_model))[0]  # (T, D): the table itself
    for pos in (0, 1, 7, 49):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert out[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert out[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)
    assert not list(pe.parameters()) and "pe" not in pe.state_dict()  # a buffer, not a parameter
    odd = SinusoidalPositionalEncoding(5, max_len=10)(torch.zeros(1, 3, 5))[0]
    assert odd[2, 4].item() == pytest.approx(math.sin(2 / 10000 ** (4 / 5)), abs=1e-6)


@pytest.mark.parametrize("make", [lambda: SinusoidalPositionalEncoding(D, max_len=10),
                                  lambda: LearnedPositionalEmbedding(10, D)])
def test_positional_offset_and_max_len(make):
    torch.manual_seed(0)
    pe = make()
    x = torch.randn(B, 7, D)
    full = pe(x)
    torch.testing.assert_close(pe(x[:, 4:6], offset=4), full[:, 4:6])
    assert not torch.allclose(pe(x[:, 4:6]), full[:, 4:6])
    with pytest.raises(ConfigError, match="max_len=10"):
        pe(x, offset=4)


def test_same_seed_same_outputs():
    g = torch.Generator().manual_seed(0)
    x, memory = torch.randn(B, 4, D, generator=g), torch.randn(B, 3, D, generator=g)

    def run(seed):
        torch.manual_seed(seed)
        decoder = TransformerDecoder(2, D, H, FF, dropout=0.5)  # training mode: dropout is seeded too
        return decoder(x, memory)[0]

    assert_seeded(run)


def test_dropout_passes_its_input_itself_when_it_drops_nothing():
    """seqlab.nn.dropout.Dropout: in eval mode and at p = 0 the input itself (no operation dispatched); in
    training with p > 0 the same draws as torch's nn.Dropout from the same seed; no state."""
    from seqlab.nn.dropout import Dropout

    x = torch.randn(4, 8)
    for p, training in [(0.3, False), (0.0, True), (0.0, False)]:
        assert Dropout(p).train(training)(x) is x
    ours, theirs = Dropout(0.3).train(), torch.nn.Dropout(0.3).train()
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(1)
    assert torch.equal(a, theirs(x)) and not torch.equal(a, x)
    assert Dropout(0.3).state_dict() == {}
