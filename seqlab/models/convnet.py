"""The lecture's ConvNet for image classification:

    [conv -> ReLU -> max-pool] x len(channels) -> flatten -> [Linear -> ReLU -> dropout] x len(hidden) -> Linear

Each block is `seqlab.nn.ConvBlock2d` (stride 1). A block maps H to (H + 2 * padding - kernel + 1) // pool,
so an 8x8 digit through two 3x3 blocks with padding 1 and 2x2 pooling is 2x2 before the linear layers.

`forward(images (B, C, H, W) float) -> logits (B, num_classes)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.nn import ConvBlock2d
from seqlab.options import DENSE_SPACE, Dropout, NonNegativeInts, Positive, PositiveInts


@dataclass
class ConvNetConfig:
    channels: PositiveInts = field(default_factory=lambda: [32, 64])  # output channels of each conv block
    kernel: PositiveInts = field(default_factory=lambda: [3])  # kernel size per block (one value: all blocks)
    padding: NonNegativeInts = field(default_factory=lambda: [1])  # zero padding per block (one value: all)
    pool: Positive = 2  # max-pool window (and stride) of every block
    hidden: PositiveInts = field(default_factory=lambda: [128])  # sizes of the linear layers before the output
    dropout: Dropout = 0.25  # after each hidden linear layer

    def per_block(self, name: str) -> list[int]:
        """`kernel` / `padding` as one value per block."""
        values = getattr(self, name)
        return values * len(self.channels) if len(values) == 1 else list(values)

    def validate(self) -> None:
        if not self.channels:
            raise ConfigError("model.channels must list at least one conv block")
        for name in ("kernel", "padding"):
            if len(getattr(self, name)) not in (1, len(self.channels)):
                raise ConfigError(f"model.{name} must hold one value or one per block "
                                  f"({len(self.channels)}), got {getattr(self, name)!r}")


class ConvNet(nn.Module):
    """Conv blocks, then a multi-layer perceptron on the flattened feature maps."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = ConvNetConfig

    def __init__(self, cfg: ConvNetConfig, in_channels: int, image_size: tuple[int, int], num_classes: int):
        super().__init__()
        self.cfg = cfg
        h, w = image_size
        blocks, c_in = [], in_channels
        for i, (c_out, k, p) in enumerate(zip(cfg.channels, cfg.per_block("kernel"), cfg.per_block("padding"),
                                              strict=True)):
            h, w = (h + 2 * p - k + 1) // cfg.pool, (w + 2 * p - k + 1) // cfg.pool
            if h < 1 or w < 1:
                raise ConfigError(f"{image_size[0]}x{image_size[1]} images are too small for conv block {i + 1} "
                                  f"(kernel {k}, padding {p}, pool {cfg.pool}): use fewer blocks, a smaller "
                                  "kernel or more padding")
            blocks.append(ConvBlock2d(c_in, c_out, k, p, cfg.pool))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        layers: list[nn.Module] = []
        d = c_in * h * w
        for size in cfg.hidden:
            layers += [nn.Linear(d, size), nn.ReLU(), nn.Dropout(cfg.dropout)]
            d = size
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) -> logits (B, num_classes)."""
        x = self.blocks(images)  # (B, channels[-1], H', W')
        return self.head(self.mlp(x.flatten(1)))
