"""The lecture's layers, written out: masks, attention, positional encodings, Transformer blocks,
RNN and CNN blocks. Imports only torch (and seqlab.errors); no data, no loss."""

from seqlab.nn.attention import (
    AdditiveAttention,
    AttentionPooling,
    DotProductAttention,
    KVCache,
    MultiHeadAttention,
    scaled_dot_product_attention,
)
from seqlab.nn.cnn import CharCNN, ConvBlock2d, NgramConv1d
from seqlab.nn.masks import causal_mask, masked_softmax, padding_mask
from seqlab.nn.positional import LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding
from seqlab.nn.rnn import RNNEncoder, RNNState, pool_sequence
from seqlab.nn.transformer import (
    DecoderLayerCache,
    FeedForward,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ = [
    "AdditiveAttention",
    "AttentionPooling",
    "CharCNN",
    "ConvBlock2d",
    "DecoderLayerCache",
    "DotProductAttention",
    "FeedForward",
    "KVCache",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "NgramConv1d",
    "RNNEncoder",
    "RNNState",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "causal_mask",
    "masked_softmax",
    "padding_mask",
    "pool_sequence",
    "scaled_dot_product_attention",
]
