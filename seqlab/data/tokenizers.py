"""Tokenizers by name: `basic_english` (torchtext's, token for token), `whitespace` and `char`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from seqlab.errors import ConfigError

# torchtext's `basic_english` lowercases, then applies 12 regex substitutions in order and splits on
# whitespace:  '  -> " '  "    "  -> ""     .  -> " . "    <br />  -> " "    ,  -> " , "    (  -> " ( "
#              )  -> " ) "    !  -> " ! "  ?  -> " ? "    ;  -> " "       :  -> " "      \s+ -> " "
# We get the same tokens in one findall: a token is a run of characters that are neither whitespace nor
# ; : nor one of the padded ' . , ( ) ! ?, or a single padded character. That is exact because the padding
# never creates or breaks a "<br />" (none of its characters is padded), while deleting '"' can create
# one: so quotes go first, then "<br />", as in torchtext. (`\s` and str.split() agree on whitespace.)
_TOKEN = re.compile(r"[^\s;:',.()!?]+|[',.()!?]")


def basic_english(text: str) -> list[str]:
    """torchtext's `get_tokenizer("basic_english")`: lowercase, split off ' . , ( ) ! ?, drop '"', treat
    ; : and `<br />` as spaces, split on whitespace."""
    return _TOKEN.findall(text.lower().replace('"', "").replace("<br />", " "))


def whitespace(text: str) -> list[str]:
    """Split on runs of whitespace (fastText's tokenization)."""
    return text.split()


def char(text: str) -> list[str]:
    """One token per character, spaces included."""
    return list(text)


class Tokenized(Sequence[list[str]]):
    """Texts' tokens, computed as they are read: a pass over a large corpus never holds every text's token
    strings at once (each pass tokenizes again)."""

    def __init__(self, texts: Sequence[str], tokenize: Callable[[str], list[str]]):
        self.texts, self.tokenize = texts, tokenize

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int | slice) -> list[str] | list[list[str]]:
        if isinstance(i, slice):
            return [self.tokenize(t) for t in self.texts[i]]
        return self.tokenize(self.texts[i])

    def __iter__(self) -> Iterator[list[str]]:
        return map(self.tokenize, self.texts)


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "basic_english": basic_english,
    "whitespace": whitespace,
    "char": char,
}


def get_tokenizer(name: str) -> Callable[[str], list[str]]:
    """The tokenizer called `name`; an unknown name raises `ConfigError` listing the choices."""
    if name not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {name!r}; choices: {sorted(TOKENIZERS)}")
    return TOKENIZERS[name]
