"""ConvNet: the lecture's worked convolution, shapes, tiny overfit, determinism, bad configurations."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.config import make_config
from seqlab.errors import ConfigError
from seqlab.models.convnet import ConvNet, ConvNetConfig
from tests.helpers import assert_seeded

LECTURE_INPUT = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]
LECTURE_KERNEL = [[0, 1, 2], [2, 2, 0], [0, 1, 2]]
LECTURE_OUTPUT = [[12, 12, 17], [10, 17, 19], [9, 6, 14]]


def test_the_lectures_worked_convolution_through_the_first_block():
    """5x5 input, 3x3 kernel, stride 1, no padding -> the lecture's 3x3 feature map; then ReLU and a 2x2
    max-pool keep the largest value of its top-left window."""
    model = ConvNet(ConvNetConfig(channels=[1], kernel=[3], padding=[0], hidden=[]), in_channels=1,
                    image_size=(5, 5), num_classes=2)
    block = model.blocks[0]
    with torch.no_grad():
        block.conv.weight.copy_(torch.tensor(LECTURE_KERNEL, dtype=torch.float32).view(1, 1, 3, 3))
        block.conv.bias.zero_()
    x = torch.tensor(LECTURE_INPUT, dtype=torch.float32).view(1, 1, 5, 5)
    assert torch.equal(block.conv(x), torch.tensor(LECTURE_OUTPUT, dtype=torch.float32).view(1, 1, 3, 3))
    assert torch.equal(block(x), torch.tensor([[[[17.0]]]]))


@pytest.mark.parametrize("size,channels", [((8, 8), 1), ((28, 28), 1), ((12, 10), 3)])
def test_shapes(size, channels):
    torch.manual_seed(0)
    model = ConvNet(ConvNetConfig(channels=[4, 6], hidden=[16, 8]), in_channels=channels, image_size=size,
                    num_classes=7)
    assert model(torch.randn(5, channels, *size)).shape == (5, 7)


def test_per_block_kernels_and_paddings():
    model = ConvNet(ConvNetConfig(channels=[4, 6], kernel=[5, 3], padding=[2, 0], hidden=[]), in_channels=1,
                    image_size=(12, 12), num_classes=3)
    # 12 -(k5 p2)-> 12 -pool-> 6 -(k3 p0)-> 4 -pool-> 2: 6 channels x 2 x 2 into the output layer
    assert [b.conv.kernel_size for b in model.blocks] == [(5, 5), (3, 3)]
    assert model.head.in_features == 6 * 2 * 2


def test_tiny_overfit():
    torch.manual_seed(0)
    model = ConvNet(ConvNetConfig(channels=[8], hidden=[16], dropout=0.0), in_channels=1, image_size=(8, 8),
                    num_classes=4)
    x, y = torch.randn(12, 1, 8, 8), torch.arange(12) % 4
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.01


def test_determinism():
    def run(seed):
        torch.manual_seed(seed)
        model = ConvNet(ConvNetConfig(), in_channels=1, image_size=(8, 8), num_classes=10)
        return model(torch.ones(2, 1, 8, 8))  # training mode: dropout from the seeded RNG

    assert_seeded(run)


def test_bad_configurations():
    with pytest.raises(ConfigError, match="8x8 images are too small for conv block 2"):
        ConvNet(ConvNetConfig(channels=[4, 4], padding=[0]), in_channels=1, image_size=(8, 8), num_classes=2)
    with pytest.raises(ConfigError, match="one value or one per block"):
        make_config(None, {"task": "image", "model.channels": [4, 8, 16], "model.kernel": [3, 5]})
    with pytest.raises(ConfigError, match="at least 1"):
        make_config(None, {"task": "image", "model.channels": [0]})
    cfg = make_config(None, {"task": "image", "model.kernel": 5})  # one value on the command line: a list
    assert cfg.model_options.per_block("kernel") == [5, 5]
