"""Language models: shapes, the shared call, causality, state carrying, KV cache, weight tying, overfit."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.config import build_dataclass
from seqlab.errors import ConfigError
from seqlab.models import MODELS
from seqlab.models.lm import RNNLM, RNNLMConfig, TransformerLM, TransformerLMConfig
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


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_kv_cache_equals_full_recompute(positions):
    torch.manual_seed(0)
    model = transformer(positions=positions).eval()
    x = torch.randint(V, (2, 12))
    full, _ = model(x)
    cache = model.new_state()
    steps = [model(x[:, :5], cache)[0]]
    for t in range(5, 12):
        logits, cache = model(x[:, t : t + 1], cache)
        steps.append(logits)
    assert len(cache[0].self_attn) == 12
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


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
    (TransformerLMConfig, {"positions": "rotary"}, "positions"),
])
def test_bad_options_are_config_errors(cls, values, match):
    with pytest.raises(ConfigError, match=match):
        build_dataclass(cls, values, "model")


@pytest.mark.parametrize("make", [lambda: rnn(hidden=32), lambda: transformer(dim=32, heads=4)])
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


@pytest.mark.parametrize("make", [rnn, transformer])
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
