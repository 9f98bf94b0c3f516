"""Convolutions: the lecture's worked example, Kim's n-gram CNN (padding changes nothing), CharCNN."""

import torch
import torch.nn.functional as F

from seqlab.nn import CharCNN, ConvBlock2d, NgramConv1d, padding_mask
from tests.helpers import assert_seeded

B, D = 3, 4


def test_conv_block_reproduces_the_lectures_worked_convolution():
    block = ConvBlock2d(1, 1, kernel=3, padding=0, pool=1)
    image = torch.tensor([[3, 3, 2, 1, 0],
                          [0, 0, 1, 3, 1],
                          [3, 1, 2, 2, 3],
                          [2, 0, 0, 2, 2],
                          [2, 0, 0, 0, 1]])
    kernel = torch.tensor([[0, 1, 2], [2, 2, 0], [0, 1, 2]])
    with torch.no_grad():
        block.conv.weight.copy_(kernel.view(1, 1, 3, 3))
        block.conv.bias.zero_()
    out = block(image.view(1, 1, 5, 5).float())
    expected = torch.tensor([[12.0, 12.0, 17.0], [10.0, 17.0, 19.0], [9.0, 6.0, 14.0]])
    assert torch.equal(out[0, 0], expected)


def test_conv_block_default_halves_the_image():
    torch.manual_seed(0)
    out = ConvBlock2d(3, 5)(torch.randn(2, 3, 8, 6))
    assert out.shape == (2, 5, 4, 3) and (out >= 0).all()


def _ngram(seed=0):
    torch.manual_seed(seed)
    return NgramConv1d(D, widths=(2, 3, 5), filters=6)


def test_ngram_conv_is_max_over_time_of_relu_convolutions():
    conv = _ngram()
    x = torch.randn(B, 7, D)
    out = conv(x)
    assert out.shape == (B, 3 * 6) and conv.output_dim == 18
    expected = torch.cat([F.relu(c(x.transpose(1, 2))).amax(dim=-1) for c in conv.convs], dim=1)
    torch.testing.assert_close(out, expected)


def test_ngram_conv_padding_changes_nothing():
    conv = _ngram()
    lengths = torch.tensor([7, 4, 2])  # 2 and 4 are shorter than the widest width (5)
    x = torch.randn(B, 7, D)
    out = conv(x, padding_mask(lengths, 7))
    longer = torch.randn(B, 11, D)  # garbage everywhere past each length
    for i, n in enumerate(lengths.tolist()):
        longer[i, :n] = x[i, :n]
    torch.testing.assert_close(conv(longer, padding_mask(lengths, 11)), out)
    for i, n in enumerate(lengths.tolist()):  # each sequence alone, unpadded
        torch.testing.assert_close(conv(x[i : i + 1, :n])[0], out[i])


def test_ngram_conv_short_sequence_counts_as_zero_padded_to_widest_width():
    conv = _ngram()
    x = torch.randn(1, 2, D)
    zero_padded = torch.cat([x, torch.zeros(1, 3, D)], dim=1)
    torch.testing.assert_close(conv(x), conv(zero_padded))
    garbage_padded = torch.cat([x, torch.randn(1, 3, D)], dim=1)
    assert not torch.allclose(conv(x), conv(garbage_padded))  # so the mask above matters


def test_char_cnn_word_features():
    torch.manual_seed(0)
    cnn = CharCNN(n_chars=10, char_dim=5, filters=7, width=3)
    chars = torch.tensor([[[3, 4, 5, 0], [2, 0, 0, 0], [0, 0, 0, 0]],
                          [[3, 4, 5, 6], [3, 4, 5, 0], [0, 0, 0, 0]]])  # (B=2, T=3 words, L=4 chars)
    out = cnn(chars)
    assert out.shape == (2, 3, 7)
    assert out[:, 2].eq(0).all()  # padded word positions
    torch.testing.assert_close(out[0, 0], out[1, 1])  # same word, same features wherever it is
    wider = torch.cat([chars, torch.zeros(2, 3, 5, dtype=torch.long)], dim=2)
    torch.testing.assert_close(cnn(wider), out)


def test_same_seed_same_outputs():
    g = torch.Generator().manual_seed(0)
    text, image = torch.randn(B, 6, D, generator=g), torch.randn(1, 1, 4, 4, generator=g)

    def run(seed):
        torch.manual_seed(seed)
        return NgramConv1d(D, filters=4)(text), ConvBlock2d(1, 2)(image)

    assert_seeded(run)
