"""Sequence taggers: one tag per word (the lecture's aligned "many to many"; POS tagging).

    word embedding ⊕ character features of each word -> encoder over the sentence -> Linear per word

Three encoders share everything else:
- `rnn`: a bidirectional LSTM (Plank et al., 2016; Lample et al., 2016): each word's output sees the
  whole sentence, left and right.
- `cnn`: stacked 1-D convolutions over the words (Collobert et al., 2011): each word sees a window of
  `layers * (kernel - 1) + 1` words.
- `transformer`: self-attention over the sentence with sinusoidal positions (Vaswani et al., 2017).

Character features let a word never seen in training be tagged from its spelling (suffixes, capitals,
digits, hyphens): a char CNN (Ma & Hovy, 2016) or a char BiLSTM (Lample et al., 2016) per word.

Every tagger: `forward(words (B, T), chars (B, T, L), lengths (B,)) -> logits (B, T, num_tags)`.
Padding (word positions >= lengths, character id `char_padding_idx`) changes nothing: the RNN packs, the
CNN reads padding as zeros, the Transformer masks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.nn import CharCNN, RNNEncoder, SinusoidalPositionalEncoding, TransformerEncoder, padding_mask
from seqlab.options import DENSE_SPACE, Dropout, Positive


@dataclass
class TaggerConfig:
    """Options shared by every tagger: the word and character features and the regularisation."""

    dim: Positive = 100  # word embedding size
    char: Literal["none", "cnn", "lstm"] = "cnn"  # character features of each word
    char_dim: Positive = 32  # character embedding size
    char_features: Positive = 64  # size of a word's character features (CNN filters; BiLSTM 2 x hidden)
    char_width: Positive = 3  # char CNN: characters per filter window
    dropout: Dropout = 0.33  # on the word features and on the encoder's outputs
    word_dropout: Dropout = 0.0  # training only: a word id becomes <unk> with this probability

    def validate(self) -> None:
        if self.char == "lstm" and self.char_features % 2:
            raise ConfigError(f"model.char_features must be even for char=lstm (two directions), "
                              f"got {self.char_features}")


class CharLSTM(nn.Module):
    """Word features from characters with a BiLSTM: the final forward and backward states of each word.
    (B, T, L) char ids -> (B, T, 2 * hidden); padded words (all characters padding) get zeros."""

    def __init__(self, n_chars: int, char_dim: int, hidden: int, padding_idx: int):
        super().__init__()
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(n_chars, char_dim, padding_idx=padding_idx)
        self.rnn = RNNEncoder(char_dim, hidden, cell="lstm", bidirectional=True)
        self.output_dim = self.rnn.output_dim

    def forward(self, chars: Tensor) -> Tensor:
        B, T, L = chars.shape
        flat = chars.reshape(B * T, L)
        lengths = (flat != self.padding_idx).sum(dim=1)  # (B * T,)
        real = (lengths > 0).nonzero().squeeze(1)  # only real words go through the LSTM
        _, final, _ = self.rnn(self.embedding(flat[real]), lengths[real])  # (n_real, 2 * hidden)
        out = final.new_zeros(B * T, self.output_dim)
        return out.index_copy(0, real, final).view(B, T, -1)


class Tagger(nn.Module):
    """Word features (embedding ⊕ char features, dropout) -> `Encoder` -> Linear per word.

    A registered tagger is this class with its `Config` and its `Encoder`: a module built as
    `Encoder(feature_dim, cfg)` with `forward(x (B, T, feature_dim), lengths (B,)) -> (B, T, output_dim)`,
    in which padded positions never affect real ones."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config: type = TaggerConfig
    Encoder: type

    def __init__(self, cfg: TaggerConfig, vocab_size: int, num_tags: int, n_chars: int, padding_idx: int,
                 unk_idx: int, char_padding_idx: int):
        super().__init__()
        self.cfg = cfg
        self.padding_idx, self.unk_idx = padding_idx, unk_idx
        self.embedding = nn.Embedding(vocab_size, cfg.dim, padding_idx=padding_idx)
        if cfg.char == "cnn":
            self.chars = CharCNN(n_chars, cfg.char_dim, cfg.char_features, cfg.char_width, char_padding_idx)
        elif cfg.char == "lstm":
            self.chars = CharLSTM(n_chars, cfg.char_dim, cfg.char_features // 2, char_padding_idx)
        else:
            self.chars = None
        feature_dim = cfg.dim + (cfg.char_features if self.chars is not None else 0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = self.Encoder(feature_dim, cfg)
        self.head = nn.Linear(self.encoder.output_dim, num_tags)

    def features(self, words: Tensor, chars: Tensor) -> Tensor:
        """words: (B, T), chars: (B, T, L) -> (B, T, feature_dim)."""
        if self.training and self.cfg.word_dropout > 0:
            drop = torch.rand(words.shape, device=words.device) < self.cfg.word_dropout
            words = words.masked_fill(drop & (words != self.padding_idx), self.unk_idx)
        x = self.embedding(words)  # (B, T, dim)
        if self.chars is not None:
            x = torch.cat([x, self.chars(chars)], dim=-1)  # (B, T, dim + char_features)
        return self.dropout(x)

    def forward(self, words: Tensor, chars: Tensor, lengths: Tensor) -> Tensor:
        """words: (B, T), chars: (B, T, L), lengths: (B,) -> logits (B, T, num_tags)."""
        h = self.encoder(self.features(words, chars), lengths)  # (B, T, output_dim)
        return self.head(self.dropout(h))


# ---------------------------------------------------------------------------------------------- rnn
@dataclass
class RNNTaggerConfig(TaggerConfig):
    hidden: Positive = 128  # per direction
    layers: Positive = 2  # stacked encoder layers
    cell: Literal["rnn", "lstm", "gru"] = "lstm"  # the recurrence


class BiRNNWords(nn.Module):
    """A bidirectional RNN over the words; packed, so padding is invisible."""

    def __init__(self, in_dim: int, cfg: RNNTaggerConfig):
        super().__init__()
        self.rnn = RNNEncoder(in_dim, cfg.hidden, cfg.layers, cfg.cell, bidirectional=True, dropout=cfg.dropout)
        self.output_dim = self.rnn.output_dim

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        outputs, _, _ = self.rnn(x, lengths)  # (B, T, 2 * hidden)
        return outputs


class RNNTagger(Tagger):
    """BiLSTM (or BiGRU/BiRNN) tagger."""

    Config = RNNTaggerConfig
    Encoder = BiRNNWords


# ---------------------------------------------------------------------------------------------- cnn
@dataclass
class CNNTaggerConfig(TaggerConfig):
    hidden: Positive = 256  # channels of every convolution
    kernel: Positive = 5  # words per window (odd, so the window is centred on its word)
    layers: Positive = 3  # stacked encoder layers

    def validate(self) -> None:
        super().validate()
        if self.kernel % 2 == 0:
            raise ConfigError(f"model.kernel must be odd (a window centred on its word), got {self.kernel}")


class ConvWords(nn.Module):
    """Stacked 'same' 1-D convolutions over the words, ReLU after each (dropout between layers)."""

    def __init__(self, in_dim: int, cfg: CNNTaggerConfig):
        super().__init__()
        dims = [in_dim] + [cfg.hidden] * cfg.layers
        self.convs = nn.ModuleList(
            nn.Conv1d(i, o, cfg.kernel, padding=cfg.kernel // 2) for i, o in zip(dims, dims[1:], strict=False)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_dim = cfg.hidden

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        pad = padding_mask(lengths, x.size(1)).unsqueeze(1)  # (B, 1, T)
        h = x.transpose(1, 2)  # (B, D, T)
        for i, conv in enumerate(self.convs):
            if i:
                h = self.dropout(h)
            # padding reads as zeros, exactly like the zero padding beyond the sentence's end
            h = F.relu(conv(h.masked_fill(pad, 0.0)))  # (B, hidden, T)
        return h.transpose(1, 2)  # (B, T, hidden)


class CNNTagger(Tagger):
    """Convolutional tagger: each word sees `layers * (kernel - 1) + 1` words around it."""

    Config = CNNTaggerConfig
    Encoder = ConvWords


# ---------------------------------------------------------------------------------------------- transformer
@dataclass
class TransformerTaggerConfig(TaggerConfig):
    hidden: Positive = 128  # width of the Transformer the word features are projected to
    heads: Positive = 4  # attention heads (hidden must divide by it)
    layers: Positive = 2  # stacked encoder layers
    ff_dim: Positive = 256  # inner width of each feed-forward sub-layer
    max_len: Positive = 1024  # longest sentence the positional encoding covers

    def validate(self) -> None:
        super().validate()
        if self.hidden % self.heads:
            raise ConfigError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")


class TransformerWords(nn.Module):
    """Word features projected to `hidden` wide, plus sinusoidal positions, through a pre-LN Transformer
    encoder that masks the padding."""

    def __init__(self, in_dim: int, cfg: TransformerTaggerConfig):
        super().__init__()
        self.project = nn.Linear(in_dim, cfg.hidden)
        self.positions = SinusoidalPositionalEncoding(cfg.hidden, cfg.max_len)
        self.encoder = TransformerEncoder(cfg.layers, cfg.hidden, cfg.heads, cfg.ff_dim, cfg.dropout, norm_first=True)
        self.output_dim = cfg.hidden

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        h = self.positions(self.project(x))  # (B, T, hidden)
        h, _ = self.encoder(h, key_padding_mask=padding_mask(lengths, x.size(1)))
        return h


class TransformerTagger(Tagger):
    """Self-attention tagger."""

    Config = TransformerTaggerConfig
    Encoder = TransformerWords
