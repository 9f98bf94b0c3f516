"""Convolutions: n-gram detectors over text (Kim, 2014), characters into word features, and the
conv -> ReLU -> max-pool block of image ConvNets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NgramConv1d(nn.Module):
    """Parallel 1-D convolutions of several widths over (B, T, D) embeddings, each filter an n-gram
    detector; ReLU, then max over time. Output: (B, len(widths) * filters).

    Only windows inside the sequence count, so padding changes nothing; a sequence shorter than the
    widest width is treated as padded with zero vectors up to that width.
    """

    def __init__(self, in_dim: int, widths: Sequence[int] = (3, 4, 5), filters: int = 100):
        super().__init__()
        self.widths = tuple(widths)
        self.output_dim = len(self.widths) * filters
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, filters, w) for w in self.widths)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """x: (B, T, D), key_padding_mask: (B, T), True at padding -> (B, len(widths) * filters)."""
        B, T, _ = x.shape
        min_len = max(self.widths)
        if key_padding_mask is None:
            lengths = torch.full((B,), T, device=x.device)
        else:
            x = x.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)  # padding reads as zero vectors
            lengths = (~key_padding_mask).sum(dim=1)
        x = F.pad(x, (0, 0, 0, max(min_len - T, 0))).transpose(1, 2)  # (B, D, max(T, min_len))
        span = lengths.clamp(min=min_len)  # (B,) positions a window may cover
        pooled = []
        for width, conv in zip(self.widths, self.convs, strict=True):
            h = F.relu(conv(x))  # (B, filters, n_windows); window i covers positions i .. i + width - 1
            starts = torch.arange(h.size(-1), device=x.device)
            outside = starts[None, :] + width > span[:, None]  # (B, n_windows)
            # ReLU outputs are >= 0, so a window set to 0 never beats the real maximum
            pooled.append(h.masked_fill(outside.unsqueeze(1), 0.0).amax(dim=-1))  # (B, filters)
        return torch.cat(pooled, dim=1)


class ConvBlock2d(nn.Module):
    """Image ConvNet block: Conv2d (stride 1) -> ReLU -> max-pool. (B, in_ch, H, W) -> (B, out_ch, H', W')."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, padding: int = 1, pool: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=padding)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.conv(x)))


class CharCNN(nn.Module):
    """Word features from characters: embed each word's characters, convolve with `filters` filters of
    one width, max over the word. (B, T, L) char ids -> (B, T, filters); padded words get zeros."""

    def __init__(self, n_chars: int, char_dim: int, filters: int, width: int, padding_idx: int = 0):
        super().__init__()
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(n_chars, char_dim, padding_idx=padding_idx)
        self.conv = NgramConv1d(char_dim, widths=(width,), filters=filters)

    def forward(self, chars: Tensor) -> Tensor:
        """chars: (B, T, L) character ids, `padding_idx` after each word's end -> (B, T, filters)."""
        B, T, L = chars.shape
        chars = chars.reshape(B * T, L)
        padding = chars == self.padding_idx  # (B * T, L)
        features = self.conv(self.embedding(chars), padding)  # (B * T, filters)
        features = features.masked_fill(padding.all(dim=1, keepdim=True), 0.0)  # padded word positions
        return features.view(B, T, -1)
