"""Data for seqlab: readers, tokenizers, vocabularies, n-grams and named datasets. Knows nothing of
models, tasks or training (and imports no torch)."""

from seqlab.data.datasets import DatasetSpec, get_dataset
from seqlab.data.io import open_text
from seqlab.data.readers import ReadStats, TextExample, read
from seqlab.data.tokenizers import get_tokenizer
from seqlab.data.vocab import LabelVocab, Vocab

__all__ = [
    "DatasetSpec",
    "LabelVocab",
    "ReadStats",
    "TextExample",
    "Vocab",
    "get_dataset",
    "get_tokenizer",
    "open_text",
    "read",
]
