"""Tokenizers: `basic_english` must give torchtext's tokens exactly."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data import get_tokenizer
from seqlab.errors import ConfigError

# torchtext/data/utils.py (0.6 .. 0.18), verbatim rules: lowercase, these substitutions in order, split().
_PATTERNS = [r"\'", r"\"", r"\.", r"<br \/>", r",", r"\(", r"\)", r"\!", r"\?", r"\;", r"\:", r"\s+"]
_REPLACEMENTS = [" '  ", "", " . ", " ", " , ", " ( ", " ) ", " ! ", " ? ", " ", " ", " "]
_RULES = [(re.compile(p), r) for p, r in zip(_PATTERNS, _REPLACEMENTS, strict=True)]


def torchtext_basic_english(line: str) -> list[str]:
    line = line.lower()
    for pattern, replacement in _RULES:
        line = pattern.sub(replacement, line)
    return line.split()


# Expected tokens worked out from the rules above (and checked against them below).
CASES = [
    ("Hello, World!", ["hello", ",", "world", "!"]),
    ("You can now install TorchText using pip!",
     ["you", "can", "now", "install", "torchtext", "using", "pip", "!"]),
    ("Don't stop—it's 3.14 (approx.)!",
     ["don", "'", "t", "stop—it", "'", "s", "3", ".", "14", "(", "approx", ".", ")", "!"]),
    ('He said "hi" ; then: left...', ["he", "said", "hi", "then", "left", ".", ".", "."]),
    ("Great film<br /><br />Loved it", ["great", "film", "loved", "it"]),
    ('a<"br />b', ["a", "b"]),  # removing the quote creates a <br /> that is then removed
    ("A<BR />B", ["a", "b"]),  # lowercasing comes first
    ("<br/>x <br >y", ["<br/>x", "<br", ">y"]),  # only the exact "<br />"
    ("e-mail me @ x_y.com?!", ["e-mail", "me", "@", "x_y", ".", "com", "?", "!"]),
    ("tab\there\nnew  line\u00a0nbsp", ["tab", "here", "new", "line", "nbsp"]),
    ("\u2028line\u3000sep", ["line", "sep"]),
    ("ÉCOLE Straße İstanbul", ["école", "straße", "i\u0307stanbul"]),
    ("$5,000 & 50% off #1", ["$5", ",", "000", "&", "50%", "off", "#1"]),
    ("can't won't", ["can", "'", "t", "won", "'", "t"]),
    ("(a)(b)", ["(", "a", ")", "(", "b", ")"]),
    ("'''", ["'", "'", "'"]),
    ("  ;:  ", []),
    ("", []),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_basic_english_tricky_strings(text, expected):
    assert torchtext_basic_english(text) == expected  # the expectations follow torchtext's rules
    assert get_tokenizer("basic_english")(text) == expected


_ALPHABET = st.sampled_from(list("aZ0 \t\n\u00a0\u2028'\".,()!?;:<>/br-É") + ["<br />", '<"br />', "<BR />"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map("".join) | st.text(max_size=40))
def test_basic_english_equals_torchtext_rules(text):
    assert get_tokenizer("basic_english")(text) == torchtext_basic_english(text)


def test_every_code_point_tokenizes_as_torchtext():
    tokenize = get_tokenizer("basic_english")
    for start in range(0, 0x110000, 0x1000):
        chunk = "".join(chr(c) for c in range(start, start + 0x1000) if not 0xD800 <= c < 0xE000)
        text = " x".join(chunk)
        assert tokenize(text) == torchtext_basic_english(text), hex(start)


def test_whitespace_and_char():
    assert get_tokenizer("whitespace")(" a\tb  c\n") == ["a", "b", "c"]
    assert get_tokenizer("char")("ab c") == ["a", "b", " ", "c"]


def test_unknown_tokenizer_lists_choices():
    with pytest.raises(ConfigError, match="basic_english.*char.*whitespace|choices"):
        get_tokenizer("spacy")
    with pytest.raises(ConfigError) as err:
        get_tokenizer("basic-english")
    assert "basic_english" in str(err.value) and "whitespace" in str(err.value) and "char" in str(err.value)
