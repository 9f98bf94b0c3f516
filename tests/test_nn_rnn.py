"""RNN encoder over padded batches: padding changes nothing, packed == unpacked, final states; pooling."""

import pytest
import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.nn import RNNEncoder, padding_mask, pool_sequence
from tests.helpers import assert_seeded

B, T, D, HID = 3, 5, 4, 6
LENGTHS = torch.tensor([5, 2, 3])


def _encoder(cell, bidirectional, num_layers=2):
    torch.manual_seed(0)
    return RNNEncoder(D, HID, num_layers=num_layers, cell=cell, bidirectional=bidirectional)


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padding_changes_nothing(cell, bidirectional):
    encoder = _encoder(cell, bidirectional)
    torch.manual_seed(1)
    x = torch.randn(B, T, D)
    outputs, final, state = encoder(x, LENGTHS)
    dirs = 2 if bidirectional else 1
    assert outputs.shape == (B, T, HID * dirs) and final.shape == (B, HID * dirs)
    assert outputs.masked_select(padding_mask(LENGTHS, T).unsqueeze(-1)).eq(0).all()
    # garbage in the padding and three more padded steps: same results
    noisy = torch.cat([x, torch.randn(B, 3, D)], dim=1)
    noisy[padding_mask(LENGTHS, T + 3)] = torch.randn(int(padding_mask(LENGTHS, T + 3).sum()), D)
    outputs2, final2, state2 = encoder(noisy, LENGTHS)
    torch.testing.assert_close(outputs2[:, :T], outputs)
    assert outputs2[:, T:].eq(0).all()
    torch.testing.assert_close(final2, final)
    for a, b in zip(_states(state2), _states(state), strict=True):
        torch.testing.assert_close(a, b)
    # each row alone, unpadded, gives the same too
    for i, n in enumerate(LENGTHS.tolist()):
        alone, final_alone, _ = encoder(x[i : i + 1, :n], LENGTHS[i : i + 1])
        torch.testing.assert_close(alone[0], outputs[i, :n], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(final_alone[0], final[i], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_final_is_last_layers_state_of_each_direction(cell):
    encoder = _encoder(cell, bidirectional=True)
    outputs, final, state = encoder(torch.randn(B, T, D), LENGTHS)
    h = _states(state)[0]
    assert h.shape == (2 * 2, B, HID)  # num_layers * dirs
    for i, n in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(final[i, :HID], outputs[i, n - 1, :HID])  # forward: at the last real token
        torch.testing.assert_close(final[i, HID:], outputs[i, 0, HID:])  # backward: at the first token
    torch.testing.assert_close(final, torch.cat([h[-2], h[-1]], dim=1))


def test_packed_equals_unpacked_lstm_on_unpadded_data():
    encoder = _encoder("lstm", bidirectional=True)
    torch.manual_seed(2)
    ref = nn.LSTM(D, HID, num_layers=2, bidirectional=True, batch_first=True)
    encoder.rnn.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, D)
    outputs, _, (h, c) = encoder(x, torch.full((B,), T))
    ref_outputs, (ref_h, ref_c) = ref(x)
    torch.testing.assert_close(outputs, ref_outputs, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h, ref_h, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(c, ref_c, atol=1e-6, rtol=1e-5)


def test_empty_sequence_gives_zeros():
    encoder = _encoder("lstm", bidirectional=True)
    x = torch.randn(2, 3, D)
    outputs, final, (h, c) = encoder(x, torch.tensor([3, 0]))
    assert outputs[1].eq(0).all() and final[1].eq(0).all() and h[:, 1].eq(0).all() and c[:, 1].eq(0).all()
    alone, final_alone, _ = encoder(x[:1], torch.tensor([3]))
    torch.testing.assert_close(final[0], final_alone[0])


def test_unknown_cell_raises_config_error():
    with pytest.raises(ConfigError, match="cell"):
        RNNEncoder(D, HID, cell="transformer")


def test_pool_sequence_mean_and_max_ignore_padding():
    x = torch.tensor([[[1.0, -5.0], [3.0, -1.0], [100.0, 100.0]], [[-2.0, 4.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = padding_mask(torch.tensor([2, 1]), 3)
    torch.testing.assert_close(pool_sequence(x, mask, "mean"), torch.tensor([[2.0, -3.0], [-2.0, 4.0]]))
    torch.testing.assert_close(pool_sequence(x, mask, "max"), torch.tensor([[3.0, -1.0], [-2.0, 4.0]]))
    torch.testing.assert_close(pool_sequence(x, kind="max"), torch.tensor([[100.0, 100.0], [0.0, 4.0]]))
    empty = padding_mask(torch.tensor([2, 0]), 3)
    for kind in ("mean", "max"):
        assert pool_sequence(x, empty, kind)[1].eq(0).all()
    with pytest.raises(ConfigError, match="pooling"):
        pool_sequence(x, mask, "sum")


def test_same_seed_same_outputs():
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(0))

    def run(seed):
        torch.manual_seed(seed)
        encoder = RNNEncoder(D, HID, num_layers=2, cell="gru", bidirectional=True, dropout=0.5)
        return encoder(x, LENGTHS)[0]

    assert_seeded(run)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_one_direction_without_state_runs_unpacked_to_the_same_outputs(cell):
    torch.manual_seed(0)
    encoder = _encoder(cell, bidirectional=False)
    x = torch.randn(B, T, D, requires_grad=True)
    outputs, final, state = encoder(x, LENGTHS)
    fast, fast_final, none = encoder(x, LENGTHS, need_state=False)
    assert none is None and state is not None
    torch.testing.assert_close(fast, outputs)
    torch.testing.assert_close(fast_final, final)
    (g1,) = torch.autograd.grad(outputs.sum(), x)
    (g2,) = torch.autograd.grad(fast.sum(), x)
    torch.testing.assert_close(g1, g2)
