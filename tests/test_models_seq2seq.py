"""The translation models (seqlab.models.seq2seq): shapes, no peeking at future target tokens, padding
invisible, attention distributions, incremental decoding == teacher forcing, tiny overfit, determinism."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.errors import ConfigError
from seqlab.models.seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig, TransformerSeq2Seq, TransformerSeq2SeqConfig
from seqlab.tasks.decoding import greedy_search

SRC_V, TGT_V, PAD, BOS, EOS = 17, 13, 0, 2, 3
KINDS = ["gru-additive", "lstm-general", "gru-dot-nofeed", "transformer-preln", "transformer-postln"]


def build(kind: str, seed: int = 0, dropout: float = 0.0):
    torch.manual_seed(seed)
    if kind.startswith("transformer"):
        cfg = TransformerSeq2SeqConfig(dim=16, heads=2, layers=2, decoder_layers=2, ff_dim=32,
                                       dropout=dropout, max_len=64, norm_first=kind.endswith("preln"))
        return TransformerSeq2Seq(cfg, SRC_V, TGT_V, PAD)
    cell, attention = kind.split("-")[:2]
    cfg = RNNSeq2SeqConfig(cell=cell, dim=12, hidden=8, attention=attention, decoder_layers=2,
                           input_feeding=not kind.endswith("nofeed"), dropout=dropout)
    return RNNSeq2Seq(cfg, SRC_V, TGT_V, PAD)


def batch(B=3, S=6, T=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([S, 2, 4][:B])
    src = torch.randint(4, SRC_V, (B, S), generator=g).masked_fill(torch.arange(S) >= lengths[:, None], PAD)
    tgt_in = torch.randint(4, TGT_V, (B, T), generator=g)
    tgt_in[:, 0] = BOS
    return src, lengths, tgt_in


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_attention_distributions(kind):
    model = build(kind).eval()
    src, lengths, tgt_in = batch()
    logits = model(src, lengths, tgt_in)
    assert logits.shape == (3, 5, TGT_V)
    logits2, attn = model.forward_with_attention(src, lengths, tgt_in)
    torch.testing.assert_close(logits, logits2)
    assert attn.shape == (3, 5, 6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5))  # a distribution over the source...
    padded = torch.arange(6) >= lengths[:, None]  # (B, S)
    assert attn.masked_select(padded[:, None, :].expand_as(attn)).abs().sum() == 0  # ...that skips padding


@pytest.mark.parametrize("kind", KINDS)
def test_the_decoder_never_sees_future_target_tokens(kind):
    model = build(kind).eval()
    src, lengths, tgt_in = batch(T=7)
    logits = model(src, lengths, tgt_in)
    for j in range(1, 7):
        changed = tgt_in.clone()
        changed[:, j:] = (changed[:, j:] + 5) % TGT_V  # every token from position j on is different
        out = model(src, lengths, changed)
        torch.testing.assert_close(out[:, :j], logits[:, :j], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, j:], logits[:, j:])


@pytest.mark.parametrize("kind", KINDS)
def test_source_padding_changes_nothing(kind):
    model = build(kind).eval()
    src, lengths, tgt_in = batch()
    logits, attn = model.forward_with_attention(src, lengths, tgt_in)
    for b in range(3):
        n = int(lengths[b])
        one = slice(b, b + 1)
        alone, alone_attn = model.forward_with_attention(src[one, :n], lengths[one], tgt_in[one])
        torch.testing.assert_close(alone[0], logits[b], atol=1e-5, rtol=0)
        torch.testing.assert_close(alone_attn[0], attn[b, :, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_step_by_step_decoding_equals_teacher_forcing(kind):
    model = build(kind).eval()
    src, lengths, tgt_in = batch(T=6)
    logits, attn = model.forward_with_attention(src, lengths, tgt_in)
    state = model.encode(src, lengths)
    for t in range(6):
        step, state, w = model.decode_step(tgt_in[:, t], state, need_weights=True)
        torch.testing.assert_close(step, logits[:, t], atol=1e-5, rtol=0)
        torch.testing.assert_close(w, attn[:, t], atol=1e-5, rtol=0)
    # reordering the state reorders the rows and nothing else
    state = model.reorder_state(model.encode(src, lengths), torch.tensor([2, 0, 0]))
    step, _, _ = model.decode_step(tgt_in[[2, 0, 0], 0], state)
    torch.testing.assert_close(step, logits[[2, 0, 0], 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gru-additive", "lstm-general", "transformer-preln"])
def test_a_few_pairs_overfit_to_exact_reproduction(kind):
    """Four pairs whose targets reorder and relabel the source: after training, greedy decoding writes
    every target exactly."""
    model = build(kind, dropout=0.0)
    sources = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16], [6, 9]]
    targets = [[8, 7, 6, 5, 4], [4, 11, 10], [12, 11, 10, 9, 8], [5, 6, 7, 8, 9, 10]]
    S, T = max(map(len, sources)), max(map(len, targets)) + 1
    src = torch.tensor([s + [PAD] * (S - len(s)) for s in sources])
    lengths = torch.tensor([len(s) for s in sources])
    tgt_in = torch.tensor([[BOS] + t + [PAD] * (T - 1 - len(t)) for t in targets])
    tgt_out = torch.tensor([t + [EOS] + [PAD] * (T - 1 - len(t)) for t in targets])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def decoded() -> list[list[int]]:
        model.eval()
        with torch.no_grad():
            hyps = greedy_search(model, model.encode(src, lengths), BOS, EOS, torch.full((4,), T + 3))
        model.train()
        return [h.tokens for h in hyps]

    for step in range(1, 201):
        loss = F.cross_entropy(model(src, lengths, tgt_in).transpose(1, 2), tgt_out, ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 and decoded() == targets:
            break
    assert decoded() == targets


@pytest.mark.parametrize("kind", ["gru-additive", "transformer-preln"])
def test_same_seed_same_model_and_output(kind):
    src, lengths, tgt_in = batch()
    a, b = build(kind, seed=3, dropout=0.1), build(kind, seed=3, dropout=0.1)
    torch.manual_seed(7)
    out_a = a(src, lengths, tgt_in)  # training mode: dropout draws from the seeded generator
    torch.manual_seed(7)
    assert torch.equal(out_a, b(src, lengths, tgt_in))
    assert not torch.equal(out_a, build(kind, seed=4, dropout=0.1)(src, lengths, tgt_in))


def test_shared_and_tied_embeddings():
    cfg = TransformerSeq2SeqConfig(dim=16, heads=2, layers=1, decoder_layers=1, ff_dim=32,
                                   share_embeddings=True, tie_embeddings=True)
    model = TransformerSeq2Seq(cfg, 20, 20, PAD, shared_vocab=True)
    assert model.src_embed is model.tgt_embed and model.out.weight is model.tgt_embed.weight
    n_shared = sum(p.numel() for p in model.parameters())
    cfg.share_embeddings = cfg.tie_embeddings = False
    assert sum(p.numel() for p in TransformerSeq2Seq(cfg, 20, 20, PAD).parameters()) == n_shared + 2 * 20 * 16
    cfg.share_embeddings = True
    with pytest.raises(ConfigError, match="joint vocabulary"):
        TransformerSeq2Seq(cfg, 20, 20, PAD, shared_vocab=False)
    rnn = RNNSeq2Seq(RNNSeq2SeqConfig(dim=12, hidden=8, tie_embeddings=True), 20, 20, PAD)
    assert rnn.out.weight is rnn.tgt_embed.weight
