"""Trainable text tokenizers for language modelling and translation, saved with the run as one tokenizer.json.

`TextTokenizer` wraps a HuggingFace `tokenizers.Tokenizer` in one of three kinds:

- ``char``: every character is a token (a `Split` pre-tokenizer on each character, a `WordLevel` model over
  characters, a `Fuse` decoder), so `decode(encode(text)) == text` exactly for characters seen in training.
- ``word``: whitespace split, for corpora that are already tokenized (PTB, Multi30k `tok/`). PTB's `<unk>` in
  the text is the tokenizer's own unk token (same id), kept and decoded as ``<unk>``. Decoding joins with
  spaces.
- ``basic_english``: words as `seqlab.data.get_tokenizer("basic_english")` (torchtext's) cuts them, token for
  token (lowercased, ' . , ( ) ! ? split off, '"' dropped, ; : and `<br />` read as spaces), as normalizers and
  pre-tokenizers of the library, so the file holds them: a language model pretrained on raw reviews with it
  shares its words with a classifier that tokenizes `basic_english` (`init_from`). Decoding joins with spaces.
- ``bpe``: byte-level BPE (GPT-2 style; `models.BPE` trained with `trainers.BpeTrainer`). Every byte is in the
  alphabet, so nothing is ever unknown and `decode(encode(text)) == text` for any text.

The specials come first, with ids 0, 1, 2, 3 in the roles pad, unk, bos, eos (more specials may follow).
Special tokens written in the text (``<unk>``, ``<eos>``) are matched whole and map to their ids.

Vocabularies for translation: a joint vocabulary is one tokenizer trained on the text of both sides; separate
vocabularies are one tokenizer per side::

    pairs = list(read_parallel("train.de.gz", "train.en.gz"))
    joint = TextTokenizer.train("bpe", [p.src for p in pairs] + [p.tgt for p in pairs], vocab_size=10_000)
    src_tok = TextTokenizer.train("bpe", (p.src for p in pairs), vocab_size=8_000)
    tgt_tok = TextTokenizer.train("bpe", (p.tgt for p in pairs), vocab_size=8_000)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from seqlab.data.io import atomic_write_text
from seqlab.errors import CheckpointError, ConfigError, DataError

KINDS = ("char", "word", "basic_english", "bpe")
WORD_KINDS = ("word", "basic_english")  # the kinds that cut text into words (a corpus line ends with <eos>)
DEFAULT_SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
FORMAT = "seqlab-tokenizer"
FORMAT_VERSION = 1
_NO_LIMIT = 2**31 - 1  # the trainers' vocab_size when the caller sets none
_BYTE_ALPHABET = 256


class TextTokenizer:
    """Text <-> token ids. Build one with `TextTokenizer.train(...)` or `TextTokenizer.load(path)`."""

    def __init__(self, tokenizer: Tokenizer, kind: str, specials: Sequence[str], lowercase: bool):
        self._tk = tokenizer
        self.kind = kind
        self.specials = tuple(specials)
        self.lowercase = lowercase
        ids = [tokenizer.token_to_id(s) for s in self.specials]
        if None in ids:
            missing = [s for s, i in zip(self.specials, ids, strict=True) if i is None]
            raise ValueError(f"special tokens {missing} are not in the vocabulary")
        if sorted(tokenizer.get_vocab(with_added_tokens=True).values()) != list(range(self.vocab_size)):
            raise ValueError("token ids are not 0 .. vocab_size - 1")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = ids[:4]
        # decode(skip_specials=True) drops pad/bos/eos (and extra specials) but keeps unk: an unknown token
        # shows as <unk> instead of vanishing.
        self._skip_ids = frozenset(ids) - {self.unk_id}

    @classmethod
    def train(
        cls,
        kind: str,
        texts: Iterable[str],
        vocab_size: int | None = None,
        min_freq: int = 1,
        specials: Sequence[str] = DEFAULT_SPECIALS,
        lowercase: bool = False,
    ) -> TextTokenizer:
        """Learn a tokenizer of `kind` (one of KINDS) from `texts` (any iterable; consumed once).

        `vocab_size` counts the specials; None keeps every token seen `min_freq` times (char, word) and is
        not allowed for bpe, whose merges stop at `vocab_size`. `specials` are (pad, unk, bos, eos, *extra).
        For char and word, ties in frequency are broken alphabetically, so training is deterministic."""
        specials = tuple(specials)
        _check_options(kind, vocab_size, min_freq, specials)
        unk = specials[1]
        if kind == "bpe":
            tk = Tokenizer(models.BPE(unk_token=unk))
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tk.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_freq,
                special_tokens=list(specials),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        else:
            tk = Tokenizer(models.WordLevel(unk_token=unk))
            if kind == "char":
                tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
                tk.decoder = decoders.Fuse()
            elif kind == "basic_english":
                tk.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace('"', ""),
                                                      normalizers.Replace("<br />", " ")])
                tk.pre_tokenizer = pre_tokenizers.Sequence([
                    pre_tokenizers.Split(Regex(r"[\s;:]+"), behavior="removed"),
                    pre_tokenizers.Split(Regex(r"[',.()!?]"), behavior="isolated")])
            else:
                tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # no decoder: decode joins with " "
            # The specials are placed by hand below: WordLevelTrainer given special_tokens lets a special that
            # also occurs in the text (PTB's <unk>) take a second id and leaves a hole in the vocabulary.
            trainer = trainers.WordLevelTrainer(
                vocab_size=vocab_size or _NO_LIMIT, min_frequency=min_freq, show_progress=False
            )
        if lowercase and kind != "basic_english":  # which lowercases already
            tk.normalizer = normalizers.Lowercase()
        tk.train_from_iterator(texts, trainer)
        if kind != "bpe":
            learned = sorted(tk.get_vocab().items(), key=lambda item: item[1])  # frequency order
            if not learned:
                raise DataError(f"no text to train the {kind} tokenizer on")
            tokens = list(specials) + [token for token, _ in learned if token not in specials]
            tokens = tokens[:vocab_size]
            tk.model = models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token=unk)
            tk.add_special_tokens(list(specials))
        return cls(tk, kind, specials, lowercase)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, specials included (ids are 0 .. vocab_size - 1)."""
        return self._tk.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of `text`, optionally framed by bos/eos."""
        return self._frame(self._tk.encode(text, add_special_tokens=False).ids, add_bos, add_eos)

    def encode_batch(
        self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        """`encode` for many texts at once (the library runs them in parallel)."""
        encodings = self._tk.encode_batch(list(texts), add_special_tokens=False)
        return [self._frame(e.ids, add_bos, add_eos) for e in encodings]

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        """Text of `ids` (a list, numpy array or 1-D tensor). With `skip_specials`, pad/bos/eos are dropped;
        unk is kept and reads as its token (``<unk>``)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if skip_specials:
            ids = [i for i in ids if i not in self._skip_ids]
        return self._tk.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        """Id of `token`, or None if it is not in the vocabulary."""
        return self._tk.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Token of `token_id`, or None if the id is out of range."""
        return self._tk.id_to_token(token_id)

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer (kind, specials, options and the library's own JSON) to `path`, atomically."""
        atomic_write_text(path, json.dumps(self._to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextTokenizer:
        """Read a tokenizer written by `save`. A missing, corrupt or foreign file raises CheckpointError."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise CheckpointError("tokenizer file not found", path) from None
        except OSError as e:
            raise CheckpointError(f"cannot read tokenizer file: {e.strerror or e}", path) from None
        except UnicodeDecodeError:
            raise CheckpointError("tokenizer file is not UTF-8 text (corrupt?)", path) from None
        except json.JSONDecodeError as e:
            raise CheckpointError(f"tokenizer file is not valid JSON: {e.msg}", path, e.lineno) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f'not a seqlab tokenizer file (no "format": "{FORMAT}")', path)
        if data.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"tokenizer format_version {data.get('format_version')!r} is not supported "
                f"(this seqlab reads version {FORMAT_VERSION})",
                path,
            )
        try:
            kind, specials, lowercase = data["kind"], data["specials"], data["lowercase"]
            tk = Tokenizer.from_str(json.dumps(data["tokenizer"]))
            if kind not in KINDS or not isinstance(specials, list) or len(specials) < 4:
                raise ValueError(f"kind {kind!r} or specials {specials!r} not valid")
            return cls(tk, kind, specials, bool(lowercase))
        except KeyError as e:
            raise CheckpointError(f"tokenizer file lacks the key {e}", path) from None
        except Exception as e:  # the library raises plain Exception for a malformed tokenizer
            raise CheckpointError(f"tokenizer file is corrupt: {e}", path) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextTokenizer) and self._to_dict() == other._to_dict()

    __hash__ = None  # equal by content, so not hashable

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    def _to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "specials": list(self.specials),
            "lowercase": self.lowercase,
            "tokenizer": json.loads(self._tk.to_str()),
        }

    def _frame(self, ids: list[int], add_bos: bool, add_eos: bool) -> list[int]:
        if add_bos:
            ids = [self.bos_id, *ids]
        if add_eos:
            ids = [*ids, self.eos_id]
        return ids


def _check_options(kind: str, vocab_size: int | None, min_freq: int, specials: tuple[str, ...]) -> None:
    """Raise ConfigError for options `train` cannot honour."""
    if kind not in KINDS:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    if len(specials) < 4 or len(set(specials)) != len(specials) or not all(specials):
        raise ConfigError(
            f"specials must be distinct non-empty tokens (pad, unk, bos, eos, ...), got {specials}"
        )
    if min_freq < 1:
        raise ConfigError(f"min_freq must be at least 1, got {min_freq}")
    if kind == "bpe":
        smallest = _BYTE_ALPHABET + len(specials)
        if vocab_size is None or vocab_size < smallest:
            raise ConfigError(
                f"bpe needs vocab_size >= {smallest} (256 byte symbols + {len(specials)} specials), "
                f"got {vocab_size}"
            )
    elif vocab_size is not None and vocab_size <= len(specials):
        raise ConfigError(f"vocab_size must exceed the {len(specials)} specials, got {vocab_size}")
