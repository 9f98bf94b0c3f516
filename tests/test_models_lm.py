"""Language models: shapes, the shared call, causality, state carrying, KV cache, weight tying, overfit."""

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
