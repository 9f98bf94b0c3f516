"""Taggers: shapes, padding invariance, tiny overfit and determinism for every encoder and char feature."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.config import build_dataclass
from seqlab.errors import ConfigError
from seqlab.models import MODELS
from seqlab.models.tagger import CharLSTM, CNNTaggerConfig, RNNTaggerConfig, TransformerTaggerConfig
from tests.helpers import assert_seeded

PAD, UNK, CPAD = 1, 0, 1
SMALL = {"rnn": {"hidden": 12, "layers": 2}, "cnn": {"hidden": 12, "kernel": 3, "layers": 2},
         "transformer": {"hidden": 12, "heads": 2, "layers": 2, "ff_dim": 24}}
CASES = [(name, char) for name in ("rnn", "cnn", "transformer") for char in ("none", "cnn", "lstm")]


def make(name, char="cnn", **kw):
    cls = MODELS["tag"][name]
    cfg = cls.Config(**{"dim": 8, "char": char, "char_dim": 6, "char_features": 8, "dropout": 0.0,
                        **SMALL[name], **kw})
    cfg.validate()
    return cls(cfg, vocab_size=20, num_tags=5, n_chars=15, padding_idx=PAD, unk_idx=UNK, char_padding_idx=CPAD)


def batch():
    """Two sentences (lengths 4 and 2) with random words and 1-3 characters per word, padded."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4, 2])
    words = torch.randint(2, 20, (2, 4), generator=g)
    words[1, 2:] = PAD
    chars = torch.randint(2, 15, (2, 4, 3), generator=g)
    chars[0, 1, 2:] = CPAD  # a word of one character
    chars[1, 2:] = CPAD  # padded words
    tags = torch.randint(0, 5, (2, 4), generator=g)
    return words, chars, lengths, tags


@pytest.mark.parametrize("name,char", CASES)
def test_shape_and_padding_invariance(name, char):
    torch.manual_seed(0)
    model = make(name, char).eval()
    words, chars, lengths, _ = batch()
    logits = model(words, chars, lengths)
    assert logits.shape == (2, 4, 5)
    # the short sentence alone (no padding at all) gives the same logits as inside the padded batch
    alone = model(words[1:, :2], chars[1:, :2], lengths[1:])
    torch.testing.assert_close(alone[0], logits[1, :2], atol=1e-5, rtol=1e-5)
    # more padding (words and characters) changes nothing either
    more = model(F.pad(words, (0, 3), value=PAD), F.pad(chars, (0, 2, 0, 3), value=CPAD), lengths)
    torch.testing.assert_close(more[:, :4], logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,char", [("rnn", "lstm"), ("cnn", "cnn"), ("transformer", "none")])
def test_tiny_overfit(name, char):
    torch.manual_seed(0)
    model = make(name, char)
    words, chars, lengths, tags = batch()
    tags[1, 2:] = -100
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(250):
        opt.zero_grad()
        loss = F.cross_entropy(model(words, chars, lengths).flatten(0, 1), tags.flatten(), ignore_index=-100)
        loss.backward()
        opt.step()
    assert loss.item() < 0.02


@pytest.mark.parametrize("name", ["rnn", "cnn", "transformer"])
def test_determinism(name):
    words, chars, lengths, _ = batch()

    def run(seed):
        torch.manual_seed(seed)
        model = make(name, "lstm", dropout=0.3, word_dropout=0.3)
        return model(words, chars, lengths)  # training mode: the dropouts draw from the seeded RNG

    assert_seeded(run)


def test_word_dropout_replaces_real_words_by_unk_only_in_training():
    torch.manual_seed(0)
    model = make("rnn", "none", word_dropout=0.5)
    words = torch.tensor([[5, 6, 7, 8, 9, 10, PAD, PAD]] * 50)
    seen = []
    model.embedding.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].clone()))
    chars = torch.full((50, 8, 1), CPAD)
    model(words, chars, torch.full((50,), 6))
    dropped = seen[-1] == UNK
    assert 0.35 < dropped[:, :6].float().mean() < 0.65 and not dropped[:, 6:].any()
    assert torch.equal(seen[-1][:, 6:], words[:, 6:])
    model.eval()
    model(words, chars, torch.full((50,), 6))
    assert torch.equal(seen[-1], words)


def test_char_lstm_reads_each_word_to_its_own_end():
    torch.manual_seed(0)
    m = CharLSTM(n_chars=10, char_dim=4, hidden=3, padding_idx=0)
    chars = torch.tensor([[[2, 3, 0, 0], [4, 0, 0, 0], [0, 0, 0, 0]]])  # words "ab", "c", a padded word
    out = m(chars)
    assert out.shape == (1, 3, 6)
    torch.testing.assert_close(out[0, 0], m(torch.tensor([[[2, 3]]]))[0, 0])
    assert torch.all(out[0, 2] == 0)


def test_bad_options_are_config_errors():
    bad = [(RNNTaggerConfig, {"char": "gru"}, "model.char must be one of none, cnn, lstm"),
           (RNNTaggerConfig, {"char": "lstm", "char_features": 7}, "even"),
           (CNNTaggerConfig, {"kernel": 4}, "odd"),
           (TransformerTaggerConfig, {"hidden": 10, "heads": 4}, "divisible")]
    for cls, values, match in bad:
        with pytest.raises(ConfigError, match=match):
            build_dataclass(cls, values, "model")
