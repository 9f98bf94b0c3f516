"""Language models: shapes, the shared call, causality, state carrying, KV cache, weight tying, overfit."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seqlab.config import build_dataclass
from seqlab.errors import ConfigError
from seqlab.models import MODELS
from seqlab.models.lm import RNNLM, RNNLMConfig, TransformerLM, TransformerLMConfig
from seqlab.nn import RotaryEmbedding
from seqlab.nn.transformer import relu2
from seqlab.train.checkpoint import load_weights, save_weights

V = 13


def rnn(cell="lstm", **kw) -> RNNLM:
    return RNNLM(RNNLMConfig(cell=cell, **{"hidden": 16, **kw}), vocab_size=V)


def transformer(max_len=16, **kw) -> TransformerLM:
    kw = {"dim": 16, "heads": 2, "layers": 2, **kw}
    return TransformerLM(TransformerLMConfig(**kw), vocab_size=V, max_len=max_len)


def test_registry_holds_both_models():
    assert MODELS["lm"] == {"rnn": RNNLM, "transformer": TransformerLM}


@pytest.mark.parametrize("make", [lambda: rnn("rnn"), lambda: rnn("lstm"), lambda: rnn("gru"), transformer])
def test_same_call_same_shapes(make):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randint(V, (3, 7))
    logits, state = model(x)
    assert logits.shape == (3, 7, V)
    logits2, _ = model(x, model.new_state())
    torch.testing.assert_close(logits, logits2)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnn_state_continues_the_stream(cell):
    """Two windows with the state carried read like one long window."""
    torch.manual_seed(0)
    model = rnn(cell, layers=2).eval()
    x = torch.randint(V, (2, 10))
    whole, _ = model(x)
    first, state = model(x[:, :6])
    second, _ = model(x[:, 6:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    restarted, _ = model(x[:, 6:])
    assert not torch.allclose(restarted, second)  # the state matters


@pytest.mark.parametrize("make", [rnn, transformer])
def test_changing_a_later_token_never_changes_earlier_logits(make):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randint(V, (2, 12))
    for t in (0, 5, 11):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % V
        a, _ = model(x)
        b, _ = model(y)
        torch.testing.assert_close(a[:, :t], b[:, :t])
        assert not torch.allclose(a[:, t:], b[:, t:])


MODERN = {"positions": "rotary", "qk_norm": True, "activation": "relu2", "softcap": 10.0, "tie_embeddings": False}


@pytest.mark.parametrize("options", [{"positions": "learned"}, {"positions": "sinusoidal"}, {"positions": "rotary"},
                                     MODERN], ids=["learned", "sinusoidal", "rotary", "modern"])
def test_kv_cache_equals_full_recompute(options):
    """Prefix, then one token at a time, through the cache's preallocated buffers (grown past their first 8
    positions): the logits of a full forward pass at every position."""
    torch.manual_seed(0)
    model = transformer(max_len=24, **options).eval()
    x = torch.randint(V, (2, 20))
    full, _ = model(x)
    cache = model.new_state()
    for c in cache:
        c.self_attn.capacity = 8
    steps = [model(x[:, :5], cache)[0]]
    for t in range(5, 20):
        logits, cache = model(x[:, t : t + 1], cache)
        steps.append(logits)
    assert len(cache[0].self_attn) == 20
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_rotary_positions_make_attention_depend_on_distance_only():
    rotary = RotaryEmbedding(8, max_len=32)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    dots = [(rotary(q, p) * rotary(k, p + 3)).sum().item() for p in (0, 5, 20)]  # key 3 positions later
    assert dots == pytest.approx([dots[0]] * 3, abs=1e-5)
    assert (rotary(q, 0) * rotary(k, 1)).sum().item() != pytest.approx(dots[0], abs=1e-4)
    torch.testing.assert_close(rotary(q, 0), q)  # position 0: no rotation
    torch.testing.assert_close(rotary(q, 7).norm(), q.norm())  # a rotation keeps lengths
    with pytest.raises(ConfigError, match="even width"):
        RotaryEmbedding(7, max_len=4)


def test_rotary_rotates_each_channel_pair_by_its_angle_and_queries_and_keys_stacked_alike():
    rotary = RotaryEmbedding(8, max_len=32)
    x = torch.randn(2, 3, 5, 8)  # (B, H, T, dh) at positions 4..8
    angles = torch.arange(4, 9.0)[:, None] * 10000.0 ** (-torch.arange(0, 8, 2.0) / 8)  # (T, dh/2)
    x1, x2 = x[..., :4], x[..., 4:]  # channel i pairs with channel i + dh/2
    expected = torch.cat([x1 * angles.cos() - x2 * angles.sin(), x1 * angles.sin() + x2 * angles.cos()], -1)
    assert torch.equal(rotary(x, 4), expected)  # the formula as written, to the bit
    q, k = torch.randn(2, 2, 3, 5, 8).unbind(0)
    assert torch.equal(rotary(torch.stack([q, k]), 4), torch.stack([rotary(q, 4), rotary(k, 4)]))


def test_modern_options_do_what_they_say():
    torch.manual_seed(0)
    model = transformer(**MODERN, zero_init=True).eval()
    x = torch.randint(V, (2, 9))
    logits, _ = model(x)
    assert logits.abs().max() < 10.0  # soft-capped
    assert model.head.weight is not model.embedding.weight and not hasattr(model.positions, "embedding")
    for layer in model.decoder.layers:  # zero-initialised projections into the residual stream
        assert not layer.self_attn.out_proj.weight.any() and not layer.ff.linear2.weight.any()
        assert layer.self_attn.qk_norm and layer.ff.activation is relu2
    h = model.decoder.norm(model.embedding(x))  # every block starts as the identity
    torch.testing.assert_close(logits, 10.0 * torch.tanh(model.head(h) / 10.0))
    assert torch.equal(relu2(torch.tensor([-2.0, 0.5, 3.0])), torch.tensor([0.0, 0.25, 9.0]))


def test_transformer_context_is_limited_to_max_len():
    model = transformer(max_len=8).eval()
    with pytest.raises(ConfigError, match="max_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ConfigError, match="context length"):
        TransformerLM(TransformerLMConfig(dim=16, heads=2), vocab_size=V, max_len=None)


@pytest.mark.parametrize("make", [lambda: rnn(tie_embeddings=True), lambda: transformer(tie_embeddings=True)])
def test_tied_weights_share_one_matrix_and_survive_save_load(make, tmp_path):
    torch.manual_seed(0)
    model = make()
    assert model.head.weight is model.embedding.weight
    save_weights(model, tmp_path / "m.safetensors")
    torch.manual_seed(1)
    other = make()
    load_weights(other, tmp_path / "m.safetensors")
    assert other.head.weight is other.embedding.weight
    x = torch.randint(V, (2, 5))
    torch.testing.assert_close(other.eval()(x)[0], model.eval()(x)[0])


def test_untied_weights_are_separate():
    assert rnn().head.weight is not rnn().embedding.weight
    model = transformer(tie_embeddings=False)
    assert model.head.weight is not model.embedding.weight


@pytest.mark.parametrize("cls,values,match", [
    (RNNLMConfig, {"cell": "lstmm"}, "cell"),
    (RNNLMConfig, {"tie_embeddings": True, "dim": 8, "hidden": 16}, "dim"),
    (RNNLMConfig, {"dropout": 1.0}, "dropout"),
    (TransformerLMConfig, {"dim": 10, "heads": 3}, "divisible"),
    (TransformerLMConfig, {"positions": "alibi"}, "positions"),
    (TransformerLMConfig, {"activation": "swiglu"}, "activation"),
    (TransformerLMConfig, {"softcap": 0}, "softcap"),
])
def test_bad_options_are_config_errors(cls, values, match):
    with pytest.raises(ConfigError, match=match):
        build_dataclass(cls, values, "model")


@pytest.mark.parametrize("make", [lambda: rnn(hidden=32), lambda: transformer(dim=32, heads=4),
                                  lambda: transformer(dim=32, heads=4, **MODERN)], ids=["rnn", "transformer", "modern"])
def test_tiny_overfit(make):
    """A few sequences are learned by heart: the loss goes to ~0."""
    torch.manual_seed(0)
    model = make()
    x = torch.randint(V, (4, 13))
    inputs, targets = x[:, :-1], x[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        logits, _ = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("make", [rnn, transformer, lambda: transformer(**MODERN)],
                         ids=["rnn", "transformer", "modern"])
def test_same_seed_same_model(make):
    x = torch.randint(V, (2, 6))
    torch.manual_seed(3)
    a = make().eval()(x)[0]
    torch.manual_seed(3)
    b = make().eval()(x)[0]
    torch.manual_seed(4)
    c = make().eval()(x)[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


# ---------------------------------------------------------------- AWD-LSTM's regularisation (RNNLM only)
AWD = {"weight_drop": 0.4, "dropout_words": 0.1, "dropout_input": 0.3, "dropout_hidden": 0.2, "dropout_output": 0.3}
FIXTURE = Path(__file__).parent / "fixtures" / "rnnlm_plain_logits.safetensors"


@pytest.mark.parametrize("cell,kw", [("lstm", {"tie_embeddings": True}), ("gru", {}), ("rnn", {"dim": 8})])
def test_default_options_give_the_logits_of_the_model_before_awd_options(cell, kw):
    """tests/fixtures/rnnlm_plain_logits.safetensors was written by RNNLM before the AWD options existed
    (tests/fixtures/make_rnnlm_plain.py): same seeds, same config -> the same logits, in training mode (the
    same dropout draws) and in evaluation; and the parameter names are those of a run directory of then."""
    from safetensors.torch import load_file

    expected = load_file(str(FIXTURE))
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(cell=cell, hidden=16, layers=2, dropout=0.3, **kw), vocab_size=V)
    x = torch.randint(V, (3, 7), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    torch.testing.assert_close(model.train()(x)[0], expected[f"{cell}.train"], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.eval()(x)[0], expected[f"{cell}.eval"], rtol=0, atol=1e-6)
    # bit for bit on this CPU (the fixture may come from another): the plain path, written out
    torch.manual_seed(2)
    logits = model.train()(x)[0]
    torch.manual_seed(2)
    out, _ = model.encoder.rnn(model.dropout(model.embedding(x)))
    assert torch.equal(logits, model.head(model.dropout(out)))
    names = {n for n, _ in model.named_parameters()}
    assert names == {"embedding.weight", "head.bias", *(["head.weight"] if not kw.get("tie_embeddings") else []),
                     *(f"encoder.rnn.{w}_l{k}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                       for k in range(2))}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_awd_options_keep_parameters_shapes_and_evaluation(cell):
    """The options add no parameter and change no initial weight; in evaluation they do nothing at all."""
    x = torch.randint(V, (3, 7))
    torch.manual_seed(0)
    plain = rnn(cell, layers=2).eval()
    torch.manual_seed(0)
    awd = rnn(cell, layers=2, **AWD)
    assert [n for n, _ in awd.named_parameters()] == [n for n, _ in plain.named_parameters()]
    logits, state = awd.train()(x)
    assert logits.shape == (3, 7, V)
    assert all(s.shape == (2, 3, 16) for s in (state if cell == "lstm" else (state,)))
    assert not torch.allclose(logits, plain(x)[0])
    torch.testing.assert_close(awd.eval()(x)[0], plain(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_recurrence_with_given_weights_is_the_module_s(cell):
    """run_rnn_with_weights with the module's own weights: rnn(x, state), in one call and layer by layer."""
    from seqlab.nn.rnn import run_rnn_with_weights

    torch.manual_seed(0)
    model = rnn(cell, layers=3).eval()
    net, x = model.encoder.rnn, torch.randn(2, 5, 16)
    weights = [[getattr(net, f"{w}_l{k}") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")] for k in range(3)]
    _, state = net(torch.randn(2, 4, 16))
    for start in (None, state):
        expected, expected_state = net(x, start)
        for between in (None, lambda h: h):
            out, final = run_rnn_with_weights(net, x, start, weights, between)
            torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
            for a, b in zip(final if cell == "lstm" else (final,), expected_state if cell == "lstm" else
                            (expected_state,), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_weight_drop_is_dropconnect_on_the_hidden_to_hidden_matrices_only():
    """A fresh mask per training call; the fused kernel runs with exactly the dropped matrices (an nn.LSTM given
    them gives the same logits); evaluation is an nn.LSTM with the raw weights; the gradients reach the raw
    matrices, zero where the mask dropped a weight."""
    torch.manual_seed(0)
    model = rnn("lstm", layers=2, weight_drop=0.5).train()
    x = torch.randint(V, (4, 9))
    a, b = model(x)[0], model(x)[0]
    assert not torch.allclose(a, b)  # another mask

    net = model.encoder.rnn
    reference = torch.nn.LSTM(16, 16, 2, batch_first=True)
    reference.load_state_dict(net.state_dict())
    torch.manual_seed(5)
    logits = model(x)[0]
    torch.manual_seed(5)  # the forward pass draws exactly these masks, layer by layer, before anything else
    with torch.no_grad():
        for k in range(2):
            dropped = F.dropout(getattr(net, f"weight_hh_l{k}"), 0.5, training=True)
            getattr(reference, f"weight_hh_l{k}").copy_(dropped)
    emb = model.embedding(x)
    torch.testing.assert_close(logits, model.head(reference(emb)[0]), rtol=1e-6, atol=1e-6)

    model.eval()
    reference.load_state_dict(net.state_dict())
    torch.testing.assert_close(model(x)[0], model.head(reference(emb)[0]), rtol=0, atol=0)

    model.train()
    model.zero_grad()
    model(x)[0].logsumexp(-1).sum().backward()
    for k in range(2):
        hh, ih = getattr(net, f"weight_hh_l{k}").grad, getattr(net, f"weight_ih_l{k}").grad
        assert hh is not None and hh.abs().sum() > 0
        assert 0.3 < (hh == 0).float().mean() < 0.7  # half the matrix was dropped: no gradient there
        assert (ih == 0).float().mean() < 0.1


def test_variational_dropout_keeps_one_mask_over_time_and_word_dropout_drops_whole_types():
    from seqlab.nn.rnn import locked_dropout, word_dropout

    torch.manual_seed(0)
    x = torch.rand(3, 50, 8) + 0.5
    y = locked_dropout(x, 0.5, training=True)
    ratio = y / x  # (B, T, D): each (b, d) the same at every time step, 0 or 2
    assert torch.equal(ratio, ratio[:, :1].expand_as(ratio))
    assert set(ratio.unique().tolist()) == {0.0, 2.0}
    assert locked_dropout(x, 0.5, training=False) is x and locked_dropout(x, 0.0, training=True) is x

    emb = torch.nn.Embedding(V, 4)
    tokens = torch.arange(V).repeat(2, 3)  # (2, 3V): every type in several places
    out = word_dropout(emb, tokens, 0.5, training=True)
    scale = (out / emb(tokens))[..., 0]  # (B, T)
    for t in range(V):
        values = scale[tokens == t].unique()
        assert len(values) == 1 and values.item() in (0.0, 2.0)  # a type is dropped everywhere, or nowhere
    assert 0 < (scale == 0).sum() < scale.numel()
    torch.testing.assert_close(word_dropout(emb, tokens, 0.5, training=False), emb(tokens))


def test_awd_options_train_deterministically():
    """Training-mode masks come from the seed: same seed -> the same logits and gradients, another -> others."""
    x = torch.randint(V, (2, 6))

    def run(seed):
        torch.manual_seed(0)
        model = rnn("lstm", layers=2, **AWD).train()
        torch.manual_seed(seed)
        logits = model(x)[0]
        logits.sum().backward()
        return logits.detach(), model.encoder.rnn.weight_hh_l1.grad

    (a, ga), (b, gb), (c, gc) = run(1), run(1), run(2)
    assert torch.equal(a, b) and torch.equal(ga, gb)
    assert not torch.allclose(a, c) and not torch.allclose(ga, gc)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tiny_overfit_with_awd_options(cell):
    """Light masks still let a few sequences be learned (evaluated without them)."""
    torch.manual_seed(0)
    model = rnn(cell, hidden=32, layers=2, weight_drop=0.1, dropout_words=0.02, dropout_input=0.05,
                dropout_hidden=0.05, dropout_output=0.05)
    x = torch.randint(V, (4, 13))
    inputs, targets = x[:, :-1], x[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        logits, _ = model.train()(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss = F.cross_entropy(model.eval()(inputs)[0].flatten(0, 1), targets.flatten())
    assert loss.item() < 0.05


@pytest.mark.parametrize("key", ["weight_drop", "dropout_words", "dropout_input", "dropout_hidden", "dropout_output"])
@pytest.mark.parametrize("value", [1.0, 1.5, -0.1])
def test_bad_awd_options_are_one_line_config_errors(key, value):
    with pytest.raises(ConfigError, match=key) as e:
        build_dataclass(RNNLMConfig, {key: value}, "model")
    assert "\n" not in str(e.value)
