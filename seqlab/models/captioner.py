"""Image captioning models: a ConvNet encoder turns the picture into a grid of feature vectors, a decoder
writes the caption one word at a time (the lecture's "one to many").

Encoders (`encoder`): `convnet`, the conv -> ReLU -> max-pool blocks of the image task trained from scratch
(64x64 pixels through 4 blocks give a 4x4 grid); or a torchvision ResNet (`resnet18|34|50`) cut before its
pooling, when torchvision is installed, with its weights from a local file (`encoder_weights=PATH`, read with
`torch.load(weights_only=True)`; nothing is downloaded).

Decoders:
- `CaptionRNN` (`model=rnn`): an LSTM whose initial state comes from the mean image feature ("Show and
  Tell", Vinyals et al. 2015); with `attention: true` every step also attends (additive attention) over the
  grid and reads the gated context ("Show, Attend and Tell", Xu et al. 2015; its doubly-stochastic
  regulariser is the task's `task.attention_reg`).
- `CaptionTransformer` (`model=transformer`): the decoder stack of `seqlab.nn` with cross-attention to the
  grid (projected to dim, plus a learned embedding of each grid position).

Every captioner has the same tensors in and out (teacher forcing: `tgt_in` is `<bos> y_1 .. y_{T-1}`)::

    forward(images (B, C, H, W), tgt_in (N, T), image_index (N,)) -> logits (N, T, V)
    forward_with_attention(...) -> (logits (N, T, V), attention (N, T, G) over the G grid cells, or None)
    forward_train(..., need_weights) -> CaptionOutput(logits, attention or None, concepts (B, V) or None)

`image_index[n]` is the image caption n describes, so the encoder runs once for an image with five captions.
Decoding goes through `seqlab.tasks.decoding` (the search translation uses): `encode(images)` -> state,
`decode_step(tokens (N,), state, need_weights)` -> (logits (N, V), state, attention (N, G)),
`reorder_state(state, index)`.

Visual concepts (`concepts: true`, after Fang et al. 2015, "From captions to visual concepts and back"; fed
to the decoder as in Yao et al. 2017, "Boosting image captioning with attributes"): a linear head on the mean
grid feature gives a logit per vocabulary word, "do this picture's captions use the word?", which the task
trains with a multi-label loss on the training captions (`task.concept_loss`). That gives the encoder a
direct signal from 6,000 pictures rather than only the one through the decoder; the words' probabilities
(with dropout) join the decoder's start: the RNN's initial state reads them beside the mean feature, the
Transformer adds their projection to every memory cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from seqlab.errors import CheckpointError, ConfigError
from seqlab.nn import (
    AdditiveAttention,
    ConvBlock2d,
    DecoderLayerCache,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
)
from seqlab.options import DENSE_SPACE, Dropout, Positive, PositiveInts


@dataclass
class EncoderOptions:
    """The image encoder's options, shared by every captioner's config."""

    encoder: Literal["convnet", "resnet18", "resnet34", "resnet50"] = "convnet"  # resnet: needs torchvision
    channels: PositiveInts = field(default_factory=lambda: [32, 64, 128, 256])  # convnet: channels of each block
    encoder_weights: str | None = None  # resnet: a local state-dict file (never downloaded)
    freeze_encoder: bool = False  # resnet: keep the loaded weights fixed
    image_blind: bool = False  # the grid is one learned constant, whatever the picture: the same decoder as a
    # caption language model, the baseline that shows how much a captioner uses the image
    concepts: bool = False  # a visual-concept head (a logit per word) trained by task.concept_loss, read by the
    # decoder (see the module docstring)

    def validate(self) -> None:
        if not self.channels:
            raise ConfigError("model.channels must list at least one conv block")


class GridEncoder(nn.Module):
    """images (B, C, H, W) -> a grid of feature vectors (B, G, D) with G = H' * W' cells, read row by row."""

    def __init__(self, opt: EncoderOptions, in_channels: int, image_size: int):
        super().__init__()
        if opt.encoder == "convnet":
            blocks, c, size = [], in_channels, image_size
            for i, width in enumerate(opt.channels):
                size //= 2
                if size < 1:
                    raise ConfigError(f"{image_size}x{image_size} images are too small for {len(opt.channels)} "
                                      f"conv blocks (block {i + 1} would have no pixels left)")
                blocks.append(ConvBlock2d(c, width, 3, 1, 2))
                c = width
            self.net: nn.Module | None = nn.Sequential(*blocks)
            self.dim, self.grid = c, size * size
        else:
            self.net, self.dim = _torchvision_backbone(opt)
            with torch.no_grad():
                h = self.net(torch.zeros(1, in_channels, image_size, image_size))
            self.grid = h.size(2) * h.size(3)
        if opt.image_blind:  # the same grid's shape, learned once and never looking at the picture
            self.net = None
            self.constant = nn.Parameter(torch.zeros(self.grid, self.dim))

    def forward(self, images: Tensor) -> Tensor:
        if self.net is None:
            return self.constant.expand(images.size(0), -1, -1)  # (B, G, D)
        x = self.net(images)  # (B, D, H', W')
        return x.flatten(2).transpose(1, 2)  # (B, H' * W', D)


class ConceptHead(nn.Module):
    """grid (B, G, D) -> concept logits (B, V): one linear layer on the mean feature of the grid."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.linear = nn.Linear(dim, vocab_size)

    def forward(self, grid: Tensor) -> Tensor:
        return self.linear(grid.mean(dim=1))


@dataclass
class CaptionOutput:
    """What a captioner computes in training (teacher forcing)."""

    logits: Tensor  # (N, T, V) per caption and position
    attention: Tensor | None  # (N, T, G) over the grid cells (need_weights and a model that attends), or None
    concepts: Tensor | None  # (B, V) concept logits per image (model.concepts), or None


def _torchvision_backbone(opt: EncoderOptions) -> tuple[nn.Module, int]:
    """A torchvision ResNet without its pooling and classifier, weights from `opt.encoder_weights`."""
    try:
        import torchvision
    except ImportError:
        raise ConfigError(f"model.encoder={opt.encoder} needs torchvision, which is not installed "
                          "(pip install torchvision), or use model.encoder=convnet") from None
    if not opt.encoder_weights:
        raise ConfigError(f"model.encoder={opt.encoder} needs model.encoder_weights=PATH (a local state dict; "
                          "nothing is downloaded)")
    net = getattr(torchvision.models, opt.encoder)(weights=None)
    try:
        state = torch.load(opt.encoder_weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except FileNotFoundError:
        raise CheckpointError("encoder weights file not found", path=opt.encoder_weights) from None
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"not {opt.encoder} weights ({str(e).splitlines()[0][:120]})",
                              path=opt.encoder_weights) from None
    dim = net.fc.in_features
    body = nn.Sequential(*list(net.children())[:-2])  # up to layer4: (B, dim, H/32, W/32)
    if opt.freeze_encoder:
        body.requires_grad_(False)
    return body, dim


# ---------------------------------------------------------------------------------------------- RNN


@dataclass
class CaptionRNNConfig(EncoderOptions):
    """Show and Tell (attention: false) or Show, Attend and Tell (attention: true)."""

    dim: Positive = 256  # word embedding size
    hidden: Positive = 512  # the LSTM's state
    attention: bool = True  # attend over the image grid at every word (Show, Attend and Tell)
    attention_dim: Positive = 256  # width of the additive attention's scoring layer
    dropout: Dropout = 0.3  # on the words' features before the output


@dataclass
class RNNCaptionState:
    """What the LSTM carries from one word to the next (N rows)."""

    grid: Tensor  # (N, G, D) image features
    h: Tensor  # (N, H)
    c: Tensor  # (N, H)
    concepts: Tensor | None = None  # (N, V) concept logits (model.concepts; not carried by decoding)


class CaptionRNN(nn.Module):
    """See `CaptionRNNConfig`. Step t: attention of h_{t-1} over the grid gives the context z_t, gated by
    sigmoid(W_b h_{t-1}); the LSTM cell reads [embed(y_{t-1}); z_t] and the word is predicted from h_t."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = CaptionRNNConfig

    def __init__(self, cfg: CaptionRNNConfig, vocab_size: int, padding_idx: int, in_channels: int = 3,
                 image_size: int = 64):
        super().__init__()
        self.cfg = cfg
        self.encoder = GridEncoder(cfg, in_channels, image_size)
        D, H = self.encoder.dim, cfg.hidden
        self.embed = nn.Embedding(vocab_size, cfg.dim, padding_idx=padding_idx)
        self.concepts = ConceptHead(D, vocab_size) if cfg.concepts else None
        start = D + (vocab_size if cfg.concepts else 0)  # the initial state reads the mean feature (and concepts)
        self.init_h, self.init_c = nn.Linear(start, H), nn.Linear(start, H)
        if cfg.attention:
            self.attention = AdditiveAttention(H, D, cfg.attention_dim)
            self.gate = nn.Linear(H, D)
        self.cell = nn.LSTMCell(cfg.dim + (D if cfg.attention else 0), H)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(H, vocab_size)

    def encode(self, images: Tensor) -> RNNCaptionState:
        """images: (B, C, H, W) -> the initial state, from the mean feature of the grid (and the concepts'
        probabilities)."""
        grid = self.encoder(images)  # (B, G, D)
        start, concepts = grid.mean(dim=1), None
        if self.concepts is not None:
            concepts = self.concepts(grid)  # (B, V)
            start = torch.cat([start, torch.sigmoid(concepts)], dim=-1)
        start = self.dropout(start)
        return RNNCaptionState(grid, torch.tanh(self.init_h(start)), torch.tanh(self.init_c(start)), concepts)

    def _step(self, tokens: Tensor, state: RNNCaptionState) -> tuple[Tensor, RNNCaptionState, Tensor | None]:
        """tokens: (N,) -> (h_t (N, H), new state, attention (N, G) or None)."""
        x = self.dropout(self.embed(tokens))  # (N, E)
        weights = None
        if self.cfg.attention:
            context, weights = self.attention(state.h, state.grid)  # (N, D), (N, G)
            x = torch.cat([x, torch.sigmoid(self.gate(state.h)) * context], dim=-1)
        h, c = self.cell(x, (state.h, state.c))
        return h, RNNCaptionState(state.grid, h, c), weights

    def forward_train(self, images: Tensor, tgt_in: Tensor, image_index: Tensor, need_weights: bool = True
                      ) -> CaptionOutput:
        """images: (B, C, H, W), tgt_in: (N, T), image_index: (N,) -> logits (N, T, V), attention (N, T, G)
        (with attention), concept logits (B, V) (with concepts)."""
        s = self.encode(images)
        state = RNNCaptionState(s.grid.index_select(0, image_index), s.h.index_select(0, image_index),
                                s.c.index_select(0, image_index))
        outputs, weights = [], []
        for t in range(tgt_in.size(1)):
            h, state, w = self._step(tgt_in[:, t], state)
            outputs.append(h)
            weights.append(w)
        logits = self.out(self.dropout(torch.stack(outputs, dim=1)))
        attention = torch.stack(weights, dim=1) if self.cfg.attention and need_weights else None
        return CaptionOutput(logits, attention, s.concepts)

    def forward_with_attention(self, images: Tensor, tgt_in: Tensor, image_index: Tensor
                               ) -> tuple[Tensor, Tensor | None]:
        """-> (logits (N, T, V), attention (N, T, G) or None without attention)."""
        out = self.forward_train(images, tgt_in, image_index)
        return out.logits, out.attention

    def forward(self, images: Tensor, tgt_in: Tensor, image_index: Tensor) -> Tensor:
        """images: (B, C, H, W), tgt_in: (N, T), image_index: (N,) -> logits (N, T, V)."""
        return self.forward_train(images, tgt_in, image_index, need_weights=False).logits

    def decode_step(self, tokens: Tensor, state: RNNCaptionState, need_weights: bool = False
                    ) -> tuple[Tensor, RNNCaptionState, Tensor | None]:
        """tokens: (N,) the previous word of each row -> (logits (N, V), state, attention (N, G) or None)."""
        h, state, weights = self._step(tokens, state)
        return self.out(h), state, weights if need_weights else None

    def reorder_state(self, state: RNNCaptionState, index: Tensor) -> RNNCaptionState:
        return RNNCaptionState(*(t.index_select(0, index) for t in (state.grid, state.h, state.c)))


# ---------------------------------------------------------------------------------------------- Transformer


@dataclass
class CaptionTransformerConfig(EncoderOptions):
    """A Transformer decoder (masked self-attention over the words, cross-attention to the grid)."""

    dim: Positive = 256  # width of the embeddings and of every layer
    heads: Positive = 4  # attention heads (dim must divide by it)
    layers: Positive = 3  # decoder layers
    ff_dim: Positive = 1024  # inner width of each feed-forward sub-layer
    dropout: Dropout = 0.1  # on the words' features before the output
    activation: Literal["relu", "gelu"] = "relu"  # of the feed-forward sub-layers
    norm_first: bool = True  # pre-LN; false: the paper's post-LN
    max_len: Positive = 64  # longest caption the positional encoding covers
    tie_embeddings: bool = True  # output projection = word embedding

    def validate(self) -> None:
        super().validate()
        if self.dim % self.heads:
            raise ConfigError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")


@dataclass
class TransformerCaptionState:
    """The projected grid and the decoder's key/value caches (N rows)."""

    memory: Tensor  # (N, G, dim)
    cache: list[DecoderLayerCache]
    concepts: Tensor | None = None  # (N, V) concept logits (model.concepts; not carried by decoding)


class CaptionTransformer(nn.Module):
    """See `CaptionTransformerConfig`. Word embeddings are scaled by sqrt(dim) and summed with
    sinusoidal positions, as in the translation Transformer."""

    space: ClassVar[dict] = DENSE_SPACE  # `seqlab tune` searches these (and TrainConfig.space)

    Config = CaptionTransformerConfig

    def __init__(self, cfg: CaptionTransformerConfig, vocab_size: int, padding_idx: int, in_channels: int = 3,
                 image_size: int = 64):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.encoder = GridEncoder(cfg, in_channels, image_size)
        self.project = nn.Sequential(nn.Linear(self.encoder.dim, d), nn.LayerNorm(d))
        self.grid_pos = nn.Parameter(torch.zeros(self.encoder.grid, d))  # one learned vector per grid cell
        self.concepts = ConceptHead(self.encoder.dim, vocab_size) if cfg.concepts else None
        self.project_concepts = nn.Linear(vocab_size, d) if cfg.concepts else None
        self.concept_dropout = nn.Dropout(cfg.dropout) if cfg.concepts else None
        nn.init.normal_(self.grid_pos, std=0.02)
        self.embed = nn.Embedding(vocab_size, d, padding_idx=padding_idx)
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        with torch.no_grad():
            self.embed.weight[padding_idx].zero_()
        self.scale = d**0.5
        self.pos = SinusoidalPositionalEncoding(d, cfg.max_len, cfg.dropout)
        self.decoder = TransformerDecoder(cfg.layers, d, cfg.heads, cfg.ff_dim, cfg.dropout, cfg.activation,
                                          cfg.norm_first)
        self.out = nn.Linear(d, vocab_size)
        if cfg.tie_embeddings:
            self.out.weight = self.embed.weight

    def encode(self, images: Tensor) -> TransformerCaptionState:
        """images: (B, C, H, W) -> the grid as memory (B, G, dim) (plus the concepts' projection) and empty
        caches."""
        grid = self.encoder(images)  # (B, G, D)
        memory, concepts = self.project(grid) + self.grid_pos, None
        if self.concepts is not None:
            concepts = self.concepts(grid)  # (B, V)
            memory = memory + self.project_concepts(self.concept_dropout(torch.sigmoid(concepts)))[:, None]
        return TransformerCaptionState(memory, self.decoder.new_cache(), concepts)

    def _decode(self, tokens: Tensor, memory: Tensor, need_weights: bool, cache: list[DecoderLayerCache] | None
                ) -> tuple[Tensor, Tensor | None]:
        """tokens: (N, T) after the cached ones -> (logits (N, T, V), last layer's cross-attention averaged
        over heads (N, T, G) or None)."""
        offset = len(cache[0].self_attn) if cache else 0
        y = self.pos(self.embed(tokens) * self.scale, offset)
        h, weights = self.decoder(y, memory, None, None, need_weights, cache)
        return self.out(h), weights[-1].mean(dim=1) if need_weights else None

    def forward_train(self, images: Tensor, tgt_in: Tensor, image_index: Tensor, need_weights: bool = True
                      ) -> CaptionOutput:
        """images: (B, C, H, W), tgt_in: (N, T), image_index: (N,) -> logits (N, T, V), attention (N, T, G)
        (need_weights), concept logits (B, V) (with concepts)."""
        state = self.encode(images)
        logits, weights = self._decode(tgt_in, state.memory.index_select(0, image_index), need_weights, None)
        return CaptionOutput(logits, weights, state.concepts)

    def forward_with_attention(self, images: Tensor, tgt_in: Tensor, image_index: Tensor
                               ) -> tuple[Tensor, Tensor | None]:
        """-> (logits (N, T, V), attention (N, T, G))."""
        out = self.forward_train(images, tgt_in, image_index)
        return out.logits, out.attention

    def forward(self, images: Tensor, tgt_in: Tensor, image_index: Tensor) -> Tensor:
        """images: (B, C, H, W), tgt_in: (N, T), image_index: (N,) -> logits (N, T, V)."""
        return self.forward_train(images, tgt_in, image_index, need_weights=False).logits

    def decode_step(self, tokens: Tensor, state: TransformerCaptionState, need_weights: bool = False
                    ) -> tuple[Tensor, TransformerCaptionState, Tensor | None]:
        """tokens: (N,) the previous word of each row -> (logits (N, V), state, attention (N, G) or None)."""
        logits, weights = self._decode(tokens[:, None], state.memory, need_weights, state.cache)
        return logits[:, 0], state, None if weights is None else weights[:, 0]

    def reorder_state(self, state: TransformerCaptionState, index: Tensor) -> TransformerCaptionState:
        for layer_cache in state.cache:
            layer_cache.reorder(index)
        return TransformerCaptionState(state.memory.index_select(0, index), state.cache)
