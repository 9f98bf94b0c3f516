"""Task models: embedding + encoder (+ decoder) + head. An explicit registry, task -> name -> class.
Every class carries its options dataclass as `Config`; every model of a task has the same `forward`."""

from seqlab.models.bag import BagClassifier
from seqlab.models.captioner import CaptionRNN, CaptionTransformer
from seqlab.models.cnn import CNNClassifier
from seqlab.models.convnet import ConvNet
from seqlab.models.lm import RNNLM, TransformerLM
from seqlab.models.rnn import RNNClassifier
from seqlab.models.seq2seq import RNNSeq2Seq, TransformerSeq2Seq
from seqlab.models.tagger import CNNTagger, RNNTagger, TransformerTagger
from seqlab.models.transformer import TransformerClassifier
from seqlab.models.vectors import FastText

MODELS: dict[str, dict[str, type]] = {
    "classify": {"bag": BagClassifier, "cnn": CNNClassifier, "rnn": RNNClassifier,
                 "transformer": TransformerClassifier},
    "tag": {"rnn": RNNTagger, "cnn": CNNTagger, "transformer": TransformerTagger},
    "image": {"convnet": ConvNet},
    "lm": {"rnn": RNNLM, "transformer": TransformerLM},
    "translate": {"rnn": RNNSeq2Seq, "transformer": TransformerSeq2Seq},
    "caption": {"rnn": CaptionRNN, "transformer": CaptionTransformer},
    "vectors": {"fasttext": FastText},
}
