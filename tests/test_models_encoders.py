"""The padded text classifiers (cnn, rnn, transformer): shapes, padding invariance, tiny overfit,
determinism, and the configs they accept."""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import make_config
from seqlab.errors import ConfigError
from seqlab.models import MODELS
from seqlab.models.cnn import CNNClassifier, CNNConfig
from seqlab.models.rnn import RNNClassifier, RNNConfig
from seqlab.models.transformer import TransformerClassifier, TransformerConfig

V, C, PAD = 20, 3, 1
TINY = {
    "cnn": (CNNClassifier, CNNConfig(dim=8, widths=[2, 3], filters=4)),
    "cnn-wide": (CNNClassifier, CNNConfig(dim=8, widths=[1, 6], filters=3, embed_dropout=0.2)),
    "lstm-bi-last": (RNNClassifier, RNNConfig(dim=8, hidden=6, cell="lstm", pooling="last")),
    "gru-mean": (RNNClassifier, RNNConfig(dim=8, hidden=6, cell="gru", bidirectional=False,
                                          pooling="mean")),
    "rnn-2layer-max": (RNNClassifier, RNNConfig(dim=8, hidden=6, cell="rnn", layers=2, pooling="max",
                                                activation="tanh")),
    "lstm-additive": (RNNClassifier, RNNConfig(dim=8, hidden=6, pooling="attention")),
    "lstm-bi-concat": (RNNClassifier, RNNConfig(dim=8, hidden=6, pooling="concat")),
    "gru-dot": (RNNClassifier, RNNConfig(dim=8, hidden=6, cell="gru", pooling="attention",
                                         attention="dot")),
    "lstmnet": (RNNClassifier, RNNConfig(dim=8, hidden=8, cell="lstm", bidirectional=False,
                                         pooling="last", activation="relu", dropout=0.0)),
    "tf-cls-preln-sin": (TransformerClassifier, TransformerConfig(dim=8, heads=2, layers=2, ff_dim=16)),
    "tf-mean-postln-learned": (TransformerClassifier, TransformerConfig(
        dim=8, heads=2, layers=1, ff_dim=16, positions="learned", norm_first=False, pooling="mean",
        max_len=16)),
    "tf-max": (TransformerClassifier, TransformerConfig(dim=8, heads=2, layers=1, ff_dim=16, pooling="max",
                                                        activation="relu")),
    "tf-attention-dot": (TransformerClassifier, TransformerConfig(dim=8, heads=4, layers=1, ff_dim=16,
                                                                  pooling="attention", attention="dot")),
}
LENGTHS = torch.tensor([5, 2, 3, 1, 4, 5])
LABELS = torch.tensor([0, 1, 2, 1, 0, 2])


def build(name, seed=0, **changes):
    cls, cfg = TINY[name]
    torch.manual_seed(seed)
    return cls(dataclasses.replace(cfg, **changes), vocab_size=V, num_classes=C, padding_idx=PAD)


def batch(T=5, pad_with=None, seed=0):
    """tokens (6, T): the same texts, padded to T with PAD (or with random ids when pad_with='noise')."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randint(2, V, (len(LENGTHS), 5), generator=g)
    tokens = torch.full((len(LENGTHS), T), PAD)
    tokens[:, :5] = real
    padding = torch.arange(T)[None, :] >= LENGTHS[:, None]
    fill = torch.randint(2, V, tokens.shape, generator=torch.Generator().manual_seed(seed + 1))
    tokens[padding] = fill[padding] if pad_with == "noise" else PAD
    return tokens, LENGTHS.clone()


def no_dropout(name):
    return {f.name: 0.0 for f in dataclasses.fields(TINY[name][1]) if "dropout" in f.name}


@pytest.mark.parametrize("name", TINY)
def test_shape_and_registry(name):
    model = build(name)
    assert model.inputs == "padded" and model.Config is type(TINY[name][1])
    assert type(model) in MODELS["classify"].values()
    logits = model(*batch())
    assert logits.shape == (len(LENGTHS), C) and logits.dtype == torch.float32
    assert model.embedding.embedding.padding_idx == PAD and model.embedding.weight[PAD].eq(0).all()


@pytest.mark.parametrize("name", TINY)
def test_padding_changes_nothing(name):
    """The same texts padded to T=5, to T=9, and with random token ids in the padding: same logits."""
    model = build(name).eval()
    with torch.no_grad():
        ref = model(*batch(5))
        torch.testing.assert_close(model(*batch(9)), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(*batch(9, pad_with="noise")), ref, atol=1e-5, rtol=1e-5)
        # each text alone, unpadded, agrees with its row of the batch
        tokens, lengths = batch(5)
        for i, n in enumerate(lengths.tolist()):
            alone = model(tokens[i : i + 1, :n], lengths[i : i + 1])
            torch.testing.assert_close(alone, ref[i : i + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_tiny_overfit(name):
    model = build(name, **no_dropout(name))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    tokens, lengths = batch()
    for _ in range(200):
        opt.zero_grad()
        loss = F.cross_entropy(model(tokens, lengths), LABELS)
        if loss.item() < 0.01:
            break
        loss.backward()
        opt.step()
    assert loss.item() < 0.01
    assert model.embedding.weight[PAD].eq(0).all()  # the padding row never trains


@pytest.mark.parametrize("name", TINY)
def test_same_seed_same_result(name):
    results = []
    for seed in (0, 0, 1):
        model = build(name, seed=seed)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        torch.manual_seed(5)  # dropout masks
        F.cross_entropy(model(*batch()), LABELS).backward()
        opt.step()
        results.append(model.eval()(*batch()))
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_cnn_takes_texts_shorter_than_its_widest_filter():
    assert CNNClassifier.min_len(CNNConfig(widths=[3, 4, 5])) == 5
    model = build("cnn-wide").eval()  # widths 1 and 6
    tokens, lengths = batch(5)
    assert torch.isfinite(model(tokens, lengths)).all()


def test_lstmnet_is_final_hidden_state_relu_linear():
    """pooling=last, activation=relu on a 1-layer LSTM is exactly the lecture's LSTMNet."""
    model = build("lstmnet").eval()
    tokens, lengths = batch()
    with torch.no_grad():
        lstm = model.encoder.rnn
        _, (h, _) = lstm(torch.nn.utils.rnn.pack_padded_sequence(model.embedding(tokens), lengths, batch_first=True,
                                                                 enforce_sorted=False))
        expected = model.fc(F.relu(h[-1]))
        torch.testing.assert_close(model(tokens, lengths), expected)


def test_return_attention_only_where_there_is_attention():
    with pytest.raises(ValueError):
        build("lstm-bi-last")(*batch(), return_attention=True)
    with pytest.raises(ValueError):
        build("tf-max")(*batch(), return_attention=True)
    assert not build("gru-mean").attends and build("gru-dot").attends and build("tf-cls-preln-sin").attends


@pytest.mark.parametrize(
    "model, key, value, expect",
    [
        ("cnn", "widths", [3, 0], "model.widths must be at least 1"),
        ("cnn", "filters", 0, "at least 1"),
        ("rnn", "cell", "lstmm", "must be one of rnn, lstm, gru"),
        ("rnn", "pooling", "first", "must be one of last"),
        ("rnn", "activation", "sigmoid", "must be one of none"),
        ("transformer", "heads", 3, "divisible"),
        ("transformer", "positions", "rotary", "sinusoidal, learned"),
        ("transformer", "pooling", "last", "cls, mean"),
    ],
)
def test_bad_model_options_are_config_errors(model, key, value, expect):
    with pytest.raises(ConfigError, match=expect):
        make_config(None, {"model": model, f"model.{key}": value})


def test_models_are_selected_by_name_in_configs():
    cfg = make_config(None, ["model=cnn", "model.widths=[2,3]", "model.filters=7"])
    assert isinstance(cfg.model_options, CNNConfig) and cfg.model_options.widths == [2, 3]
    cfg = make_config(None, ["model=rnn", "model.cell=gru", "model.bidirectional=false"])
    assert cfg.model_options.cell == "gru" and cfg.model_options.bidirectional is False
    cfg = make_config(None, ["model=transformer", "model.pooling=mean"])
    assert cfg.model_options.pooling == "mean"



CONFIGS = Path(seqlab.__file__).parent / "configs"
PRESETS = [CONFIGS / d / f"{m}.yaml" for d in ("sst2", "trec", "sample")
           for m in ("cnn", "rnn", "transformer", "lstmnet")]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_presets_resolve(preset):
    cfg = make_config(preset)
    assert cfg.model == {"lstmnet": "rnn"}.get(preset.stem, preset.stem)
    assert cfg.train.optimizer in ("adam", "adamw") and cfg.dataset == preset.parent.name
