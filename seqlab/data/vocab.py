"""Token and label vocabularies: string <-> index maps, built deterministically, saved as JSON."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from seqlab.data.io import atomic_write_text
from seqlab.errors import CheckpointError, DataError, LabelError

_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def _dump(path: str | os.PathLike, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def _load(path: str | os.PathLike, kind: str) -> dict:
    """The JSON object at `path`, checked to be a `kind` ("vocab" / "labels"); CheckpointError otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CheckpointError("file not found", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {kind} JSON: {e}", path) from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise CheckpointError(f"not a seqlab {kind} file (expected a JSON object with kind={kind!r})", path)
    return data


def _string_list(data: dict, key: str, path) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise CheckpointError(f"{key!r} must be a list of strings", path)
    if len(set(value)) != len(value):
        raise CheckpointError(f"{key!r} has duplicate entries", path)
    return value


class Vocab:
    """Tokens <-> indices. `itos[i]` is the token of index i, `stoi` the inverse; the specials come first.
    Tokens not in the vocabulary encode to the index of `unk_token` (when there is one)."""

    def __init__(
        self,
        itos: Sequence[str],
        specials: Sequence[str] = ("<unk>", "<pad>"),
        unk_token: str | None = "<unk>",
        pad_token: str | None = "<pad>",
    ):
        self.itos = list(itos)
        self.stoi = {token: i for i, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Vocab: duplicate tokens in itos")
        self.specials = list(specials)
        if self.itos[: len(self.specials)] != self.specials:
            raise ValueError("Vocab: itos must start with the specials")
        for token in (unk_token, pad_token):
            if token is not None and token not in self.specials:
                raise ValueError(f"Vocab: {token!r} is not one of the specials {self.specials}")
        self.unk_token = unk_token
        self.pad_token = pad_token
        self.unk_index = None if unk_token is None else self.stoi[unk_token]
        self.pad_index = None if pad_token is None else self.stoi[pad_token]
        self.bigrams = None  # seqlab.data.corpus's lookup of the word-bigram entries, made when first needed

    def led_by(self, words: Sequence[str]) -> Vocab:
        """A vocabulary of the same specials whose other tokens are `words` (in their order; specials among them
        are skipped) followed by this one's tokens they lack (`init_from`: a pretrained run's words first)."""
        head = [w for w in dict.fromkeys(words) if w not in self.specials]
        known = set(head)
        rest = [t for t in self.itos[len(self.specials):] if t not in known]
        return Vocab(self.specials + head + rest, self.specials, self.unk_token, self.pad_token)

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Iterable[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = ("<unk>", "<pad>"),
        unk_token: str | None = "<unk>",
        pad_token: str | None = "<pad>",
    ) -> Vocab:
        """Count the tokens (one pass; any iterable of token lists) and keep those seen `min_freq` times or
        more: specials first, then by frequency (descending), ties by first occurrence, so the same data
        always gives the same vocabulary. `max_size` bounds the total size, specials included."""
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for token in specials:
            counts.pop(token, None)
        # Counter keeps first-occurrence order and sorted() is stable: ties stay in that order.
        ranked = [t for t, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= min_freq]
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(specials))]
        return cls([*specials, *ranked], specials, unk_token, pad_token)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Indices of `tokens`; unknown tokens map to `unk_index` (DataError if there is no unk token)."""
        if self.unk_index is not None:
            get, unk = self.stoi.get, self.unk_index
            return [get(t, unk) for t in tokens]
        try:
            return [self.stoi[t] for t in tokens]
        except KeyError as e:
            raise DataError(f"token {e.args[0]!r} is not in the vocabulary, which has no unk token") from None

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of `ids`."""
        itos = self.itos
        return [itos[i] for i in ids]

    def to_dict(self) -> dict:
        return {"kind": "vocab", "itos": self.itos, "specials": self.specials,
                "unk_token": self.unk_token, "pad_token": self.pad_token}

    @classmethod
    def from_dict(cls, data: dict, path: str | os.PathLike | None = None) -> Vocab:
        """Inverse of `to_dict`; a malformed dict raises CheckpointError (naming `path` when given)."""
        if not isinstance(data, dict) or data.get("kind") != "vocab":
            raise CheckpointError("not a seqlab vocab (expected kind='vocab')", path)
        itos, specials = _string_list(data, "itos", path), _string_list(data, "specials", path)
        try:
            return cls(itos, specials, data.get("unk_token"), data.get("pad_token"))
        except ValueError as e:
            raise CheckpointError(str(e), path) from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        _dump(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        return cls.from_dict(_load(path, "vocab"), path)


def _label_key(label: str) -> tuple:
    """Sort key: numeric labels first, by value ("2" < "10"), then the others as strings."""
    if _NUMBER.fullmatch(label):
        return (0, float(label), label)
    return (1, 0.0, label)


class LabelVocab:
    """Labels <-> class indices. `build` sorts the labels (numeric ones by value) so the order never depends
    on the data's order; a loaded one keeps its saved order. `index(label)` raises LabelError for a label
    the model was not trained on."""

    def __init__(self, itos: Sequence[str]):
        self.itos = list(itos)
        self.stoi = {label: i for i, label in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("LabelVocab: duplicate labels in itos")

    @classmethod
    def build(cls, labels: Iterable[str]) -> LabelVocab:
        """The distinct `labels`, sorted: numeric ones by value ("2" before "10"), then the others."""
        return cls(sorted(set(labels), key=_label_key))

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, label: str) -> bool:
        return label in self.stoi

    def index(self, label: str) -> int:
        """The class index of `label`. The caller adds path:line to the LabelError."""
        try:
            return self.stoi[label]
        except KeyError:
            known = ", ".join(repr(x) for x in self.itos[:20]) + (", ..." if len(self.itos) > 20 else "")
            raise LabelError(f"unknown label {label!r}; known labels: {known}") from None

    def label(self, index: int) -> str:
        """The label of class `index`."""
        return self.itos[index]

    def to_dict(self) -> dict:
        return {"kind": "labels", "itos": self.itos}

    @classmethod
    def from_dict(cls, data: dict, path: str | os.PathLike | None = None) -> LabelVocab:
        if not isinstance(data, dict) or data.get("kind") != "labels":
            raise CheckpointError("not a seqlab label vocab (expected kind='labels')", path)
        return cls(_string_list(data, "itos", path))

    def save(self, path: str | os.PathLike) -> None:
        """Write the labels as JSON, atomically."""
        _dump(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelVocab:
        return cls.from_dict(_load(path, "labels"), path)
