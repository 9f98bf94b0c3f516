"""Greedy and beam search (seqlab.tasks.decoding) on a decoder whose probabilities are known exactly (a
Markov chain per sentence), so that results can be checked against brute force; and on the real seq2seq
models: beam size 1 equals greedy, a batch equals its sentences one at a time."""

import itertools

import pytest
import torch

from seqlab.models.seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig, TransformerSeq2Seq, TransformerSeq2SeqConfig
from seqlab.tasks.decoding import beam_search, greedy_search

BOS, EOS = 0, 1


class MarkovDecoder:
    """The next token's log-probabilities are table[sentence, previous token]; the state is the sentence
    of each row. The attention of a step is one-hot at (previous token) % S, so it tells which token a
    row was extended from."""

    def __init__(self, table: torch.Tensor, S: int = 3):
        self.table, self.S = table, S  # (B, V, V) log-probabilities

    def decode_step(self, tokens, state, need_weights=False):
        w = torch.nn.functional.one_hot(tokens % self.S, self.S).float() if need_weights else None
        return self.table[state, tokens], state, w

    def reorder_state(self, state, index):
        return state[index]


def random_chain(B: int, V: int, seed: int) -> MarkovDecoder:
    g = torch.Generator().manual_seed(seed)
    return MarkovDecoder(torch.log_softmax(torch.randn(B, V, V, generator=g) * 2, dim=-1))


def brute_force(m: MarkovDecoder, b: int, max_len: int, alpha: float) -> tuple[list[int], float]:
    """Best (tokens, log-prob) over every sequence: ending in eos within max_len tokens, or max_len tokens
    without eos; ranked by log-prob / length ** alpha."""
    V = m.table.size(-1)
    best = None
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=n):
            if EOS in seq[:-1] or (n < max_len and seq[-1] != EOS):
                continue
            lp = sum(float(m.table[b, prev, tok]) for prev, tok in zip((BOS,) + seq[:-1], seq, strict=True))
            score = lp / n**alpha
            if best is None or score > best[0]:
                best = (score, [t for t in seq if t != EOS], lp)
    return best[1], best[2]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_beam_finds_the_best_sequence(alpha):
    V, L, B = 4, 4, 3
    m = random_chain(B, V, seed=1)
    lengths = torch.full((B,), L)
    hyps = beam_search(m, torch.arange(B), BOS, EOS, lengths, beam_size=V**L, length_penalty=alpha)
    for b in range(B):
        tokens, lp = brute_force(m, b, L, alpha)
        assert hyps[b].tokens == tokens
        assert hyps[b].log_prob == pytest.approx(lp, abs=1e-5)


def test_each_hypothesis_carries_the_log_prob_of_its_tokens():
    B, V = 6, 6
    m = random_chain(B, V, seed=2)
    lengths = torch.full((B,), 6)
    for hyps in (greedy_search(m, torch.arange(B), BOS, EOS, lengths),
                 beam_search(m, torch.arange(B), BOS, EOS, lengths, beam_size=4, length_penalty=0.5)):
        for b, h in enumerate(hyps):
            seq = h.tokens + ([EOS] if len(h.tokens) < 6 else [])
            lp = sum(float(m.table[b, prev, tok]) for prev, tok in zip([BOS] + seq[:-1], seq, strict=True))
            assert h.log_prob == pytest.approx(lp, abs=1e-5)


def test_beam_size_one_is_greedy_and_a_batch_is_its_sentences():
    B, V = 8, 7
    m = random_chain(B, V, seed=3)
    lengths = torch.tensor([1, 2, 3, 5, 8, 8, 4, 6])
    greedy = greedy_search(m, torch.arange(B), BOS, EOS, lengths, need_weights=True)
    beam1 = beam_search(m, torch.arange(B), BOS, EOS, lengths, beam_size=1, need_weights=True)
    for g, b in zip(greedy, beam1, strict=True):
        assert g.tokens == b.tokens and g.log_prob == pytest.approx(b.log_prob)
        assert torch.equal(g.attention, b.attention)
    beam3 = beam_search(m, torch.arange(B), BOS, EOS, lengths, beam_size=3)
    for b in range(B):
        one = lengths[b : b + 1]
        assert greedy_search(m, torch.tensor([b]), BOS, EOS, one)[0].tokens == greedy[b].tokens
        assert beam_search(m, torch.tensor([b]), BOS, EOS, one, beam_size=3)[0].tokens == beam3[b].tokens


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_max_lengths_and_the_attention_of_each_token(search):
    B, V, S = 5, 6, 3
    m = random_chain(B, V, seed=4)
    m.table[:, :, EOS] = -30.0  # eos is (almost) never chosen: every hypothesis runs to its max length
    lengths = torch.tensor([1, 2, 4, 3, 6])
    if search == "greedy":
        hyps = greedy_search(m, torch.arange(B), BOS, EOS, lengths, need_weights=True)
    else:
        hyps = beam_search(m, torch.arange(B), BOS, EOS, lengths, beam_size=3, need_weights=True)
    for h, n in zip(hyps, lengths.tolist(), strict=True):
        assert len(h.tokens) == n and EOS not in h.tokens
        # step t attended where the token it extended points: bos for the first, then the previous token
        prev = torch.tensor([BOS] + h.tokens[:-1])
        assert torch.equal(h.attention, torch.nn.functional.one_hot(prev % S, S).float())


def test_length_penalty_trades_a_short_probable_ending_for_a_longer_one():
    V = 4  # bos, eos, a, b
    p = torch.full((1, V, V), 1e-4)
    p[0, BOS, EOS], p[0, BOS, 2], p[0, BOS, 3] = 0.4, 0.35, 0.25  # greedy ends at once
    p[0, 2, EOS] = 0.99  # "a" then eos: less probable in total (0.3465) but more per token
    p[0, 3, EOS] = 0.5
    m = MarkovDecoder(p.log())
    lengths = torch.tensor([5])
    assert greedy_search(m, torch.tensor([0]), BOS, EOS, lengths)[0].tokens == []
    assert beam_search(m, torch.tensor([0]), BOS, EOS, lengths, 3, length_penalty=0.0)[0].tokens == []
    assert beam_search(m, torch.tensor([0]), BOS, EOS, lengths, 3, length_penalty=1.0)[0].tokens == [2]


def _models():
    torch.manual_seed(0)
    rnn_cfg = RNNSeq2SeqConfig(dim=16, hidden=12, dropout=0.0, attention="additive")
    tf_cfg = TransformerSeq2SeqConfig(dim=16, heads=2, layers=1, decoder_layers=2, ff_dim=32, dropout=0.0,
                                      max_len=64)
    rnn, tf = RNNSeq2Seq(rnn_cfg, 15, 13, 0), TransformerSeq2Seq(tf_cfg, 15, 13, 0)
    return {"rnn": rnn.eval(), "transformer": tf.eval()}


@pytest.mark.parametrize("name", ["rnn", "transformer"])
def test_real_models_beam_one_is_greedy_and_batching_changes_nothing(name):
    model = _models()[name]
    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor([5, 2, 7, 4])
    src = torch.randint(4, 15, (4, 7), generator=g).masked_fill(torch.arange(7) >= lengths[:, None], 0)
    max_lengths = torch.tensor([9, 4, 12, 7])
    with torch.no_grad():
        greedy = greedy_search(model, model.encode(src, lengths), 2, 3, max_lengths, need_weights=True)
        beam1 = beam_search(model, model.encode(src, lengths), 2, 3, max_lengths, 1, need_weights=True)
        beam4 = beam_search(model, model.encode(src, lengths), 2, 3, max_lengths, 4, need_weights=True)
        for b in range(4):
            assert beam1[b].tokens == greedy[b].tokens
            n = int(lengths[b])
            one_src, one_len, one_max = src[b : b + 1, :n], lengths[b : b + 1], max_lengths[b : b + 1]
            alone = greedy_search(model, model.encode(one_src, one_len), 2, 3, one_max, need_weights=True)[0]
            assert alone.tokens == greedy[b].tokens
            torch.testing.assert_close(alone.attention, greedy[b].attention[:, :n], atol=1e-5, rtol=0)
            assert greedy[b].attention[:, n:].abs().sum() == 0  # padding gets no attention
            alone4 = beam_search(model, model.encode(one_src, one_len), 2, 3, one_max, 4)[0]
            assert alone4.tokens == beam4[b].tokens
            assert alone4.log_prob == pytest.approx(beam4[b].log_prob, abs=1e-4)
