"""Captioners: shapes, causality, attention over the grid, decoding consistency, tiny overfit, determinism."""

import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.models.captioner import CaptionRNN, CaptionRNNConfig, CaptionTransformer, CaptionTransformerConfig
from seqlab.tasks.decoding import beam_search, greedy_search, sample_search
from tests.helpers import assert_seeded

V, PAD, BOS, EOS = 12, 0, 2, 3


def make(kind: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    if kind == "transformer":
        cfg = CaptionTransformerConfig(channels=[8, 16], dim=32, heads=4, layers=2, ff_dim=64, dropout=0.0,
                                       **kw)
        return CaptionTransformer(cfg, V, PAD, 3, 16)
    cfg = CaptionRNNConfig(channels=[8, 16], dim=16, hidden=32, attention_dim=16, dropout=0.0,
                           attention=kind == "rnn_attention", **kw)
    return CaptionRNN(cfg, V, PAD, 3, 16)


KINDS = ["rnn", "rnn_attention", "transformer"]


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_attention_sums_to_one(kind):
    model = make(kind).eval()
    images, tgt = torch.randn(2, 3, 16, 16), torch.randint(4, V, (5, 6))
    logits, attn = model.forward_with_attention(images, tgt, torch.tensor([0, 0, 1, 1, 1]))
    assert logits.shape == (5, 6, V)
    if kind == "rnn":
        assert attn is None
    else:
        assert attn.shape == (5, 6, 16)  # 16x16 pixels through 2 blocks: a 4x4 grid
        assert torch.allclose(attn.sum(-1), torch.ones(5, 6), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_a_later_word_never_changes_earlier_logits(kind):
    model = make(kind).eval()
    images, tgt = torch.randn(1, 3, 16, 16), torch.randint(4, V, (1, 7))
    changed = tgt.clone()
    changed[0, 4:] = (changed[0, 4:] + 1 - 4) % (V - 4) + 4
    a = model(images, tgt, torch.tensor([0]))
    b = model(images, changed, torch.tensor([0]))
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-5)  # position t reads word t: 0..3 never see word 4
    assert not torch.allclose(a[:, 4:], b[:, 4:], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_step_decoding_equals_teacher_forcing(kind):
    model = make(kind).eval()
    images, tgt = torch.randn(2, 3, 16, 16), torch.randint(4, V, (2, 5))
    full = model(images, tgt, torch.tensor([0, 1]))
    state = model.encode(images)
    for t in range(5):
        logits, state, _ = model.decode_step(tgt[:, t], state)
        assert torch.allclose(logits, full[:, t], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_beam_one_is_greedy_and_batched_equals_one_at_a_time(kind):
    model = make(kind).eval()
    images = torch.randn(3, 3, 16, 16)
    lengths = torch.full((3,), 8)
    greedy = greedy_search(model, model.encode(images), BOS, EOS, lengths, need_weights=kind != "rnn")
    beam1 = beam_search(model, model.encode(images), BOS, EOS, lengths, 1, need_weights=kind != "rnn")
    assert [h.tokens for h in greedy] == [h.tokens for h in beam1]
    assert [h.log_prob for h in greedy] == pytest.approx([h.log_prob for h in beam1], abs=1e-4)
    for i in range(3):
        one = greedy_search(model, model.encode(images[i: i + 1]), BOS, EOS, lengths[:1])[0]
        assert one.tokens == greedy[i].tokens
        assert one.log_prob == pytest.approx(greedy[i].log_prob, abs=1e-4)
    beam3 = beam_search(model, model.encode(images), BOS, EOS, lengths, 3)
    for i in range(3):
        one = beam_search(model, model.encode(images[i: i + 1]), BOS, EOS, lengths[:1], 3)[0]
        assert one.tokens == beam3[i].tokens


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_overfit_to_exact_captions(kind):
    torch.manual_seed(0)
    model = make(kind)
    images = torch.randn(3, 3, 16, 16)
    captions = [[5, 6, 7], [8, 9], [10, 11, 5, 6]]
    T = max(map(len, captions)) + 1
    tgt_in = torch.full((3, T), PAD)
    tgt_out = torch.full((3, T), PAD)
    for i, c in enumerate(captions):
        tgt_in[i, : len(c) + 1] = torch.tensor([BOS, *c])
        tgt_out[i, : len(c) + 1] = torch.tensor([*c, EOS])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    index = torch.arange(3)
    for _ in range(100):
        opt.zero_grad()
        logits = model(images, tgt_in, index)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=PAD)
        loss.backward()
        opt.step()
    model.eval()
    hyps = greedy_search(model, model.encode(images), BOS, EOS, torch.full((3,), 8))
    assert [h.tokens for h in hyps] == captions


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_weights_and_outputs(kind):
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 3, 16, 16, generator=g), torch.randint(4, V, (1, 4), generator=g)
    assert_seeded(lambda seed: make(kind, seed=seed)(x, t, torch.tensor([0])))


def test_too_many_blocks_and_missing_torchvision_are_config_errors():
    with pytest.raises(ConfigError, match="too small"):
        CaptionRNN(CaptionRNNConfig(channels=[4] * 5), V, PAD, 3, 16)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="torchvision"):
            CaptionRNN(CaptionRNNConfig(encoder="resnet18", encoder_weights="w.pt"), V, PAD, 3, 64)
    else:
        with pytest.raises(ConfigError, match="encoder_weights"):
            CaptionRNN(CaptionRNNConfig(encoder="resnet18"), V, PAD, 3, 64)


@pytest.mark.parametrize("kind", KINDS)
def test_an_image_blind_captioner_never_looks_at_the_picture_but_learns_the_captions(kind):
    """The baseline of issue 23: the same decoder, its grid a learned constant. Its captions are the same for
    every picture; trained, it learns the captions' language (one caption per picture: it can fit only one)."""
    model = make(kind, image_blind=True)
    assert not [n for n, _ in model.named_parameters() if n.startswith("encoder.net")]
    tgt = torch.randint(4, V, (2, 5))
    a = model(torch.randn(2, 3, 16, 16), tgt, torch.tensor([0, 1]))
    b = model(torch.randn(2, 3, 16, 16) * 5, tgt, torch.tensor([0, 1]))
    torch.testing.assert_close(a, b)
    seeing = make(kind)
    c = seeing(torch.randn(2, 3, 16, 16), tgt, torch.tensor([0, 1]))
    assert not torch.allclose(c, seeing(torch.randn(2, 3, 16, 16), tgt, torch.tensor([0, 1])))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tgt_in, tgt_out = torch.tensor([[BOS, 5, 6, 7]] * 3), torch.tensor([[5, 6, 7, EOS]] * 3)
    for _ in range(100):
        opt.zero_grad()
        logits = model(torch.randn(3, 3, 16, 16), tgt_in, torch.arange(3))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt_out.reshape(-1))
        loss.backward()
        opt.step()
    assert model.encoder.constant.grad is not None and loss.item() < 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_a_concept_head_gives_a_logit_per_word_and_the_decoder_reads_it(kind):
    """model.concepts (issue 23): forward_train returns (B, V) concept logits from the grid; the decoder's start
    reads their probabilities, so changing the head changes the captions' logits; step decoding still equals
    teacher forcing. Without the option the parameters are those of earlier runs (no concept head)."""
    assert not [n for n, _ in make(kind).named_parameters() if "concept" in n]
    model = make(kind, concepts=True).eval()
    images, tgt, index = torch.randn(2, 3, 16, 16), torch.randint(4, V, (3, 5)), torch.tensor([0, 1, 1])
    out = model.forward_train(images, tgt, index)
    assert out.logits.shape == (3, 5, V) and out.concepts.shape == (2, V)
    torch.testing.assert_close(out.logits, model(images, tgt, index))
    state = model.encode(images[index])
    for t in range(5):
        logits, state, _ = model.decode_step(tgt[:, t], state)
        torch.testing.assert_close(logits, out.logits[:, t], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        model.concepts.linear.bias.add_(3.0)
    changed = model.forward_train(images, tgt, index)
    assert not torch.allclose(changed.logits, out.logits, atol=1e-4)
    assert torch.all(changed.concepts > out.concepts)


@pytest.mark.parametrize("kind", KINDS)
def test_sampled_captions_follow_the_models_distribution(kind):
    """sample_search draws from the model's own distribution: over 3,000 rows of one picture the first tokens'
    frequencies are the softmax of the first step (and the second tokens' after a given first, by teacher
    forcing); rows stop at eos or at their max length; a seeded generator draws the same, another seed not."""
    model = make(kind).eval()
    with torch.no_grad():
        model.out.bias.copy_(torch.linspace(-3.0, 3.0, V))  # a peaked distribution, far from uniform (asserted)
    images, N = torch.randn(1, 3, 16, 16), 3000
    rows = torch.zeros(N, dtype=torch.long)
    lengths = torch.full((N,), 4)
    lengths[-1] = 1

    def draw(seed):
        state = model.reorder_state(model.encode(images), rows)
        return sample_search(model, state, BOS, EOS, lengths, torch.Generator().manual_seed(seed))

    tokens, steps = draw(0)
    assert tokens.shape == (N, 4) and steps[-1] == 1
    for n in range(N):
        k = int(steps[n])
        assert 1 <= k <= lengths[n] and (tokens[n, k:] == 0).all()
        assert (tokens[n, : k - 1] != EOS).all() and (k == lengths[n] or tokens[n, k - 1] == EOS)
    with torch.no_grad():
        first = model(images, torch.tensor([[BOS]]), torch.tensor([0]))[0, 0].softmax(-1)  # (V,)
    assert (first - 1 / V).abs().sum() / 2 > 0.2
    seen = torch.bincount(tokens[:, 0], minlength=V).float() / N
    assert (seen - first).abs().sum() / 2 < 0.04  # total variation; 3,000 draws: ~0.02 expected
    a = int(first[EOS + 1:].argmax()) + EOS + 1  # the likeliest first token that is not eos
    after = tokens[(tokens[:, 0] == a) & (lengths > 1), 1]
    with torch.no_grad():
        second = model(images, torch.tensor([[BOS, a]]), torch.tensor([0]))[0, 1].softmax(-1)
    assert (torch.bincount(after, minlength=V).float() / len(after) - second).abs().sum() / 2 < 0.12
    again, other = draw(0), [draw(s)[0] for s in range(1, 3)]
    assert torch.equal(again[0], tokens) and torch.equal(again[1], steps)
    assert all(not torch.equal(o, tokens) for o in other)
