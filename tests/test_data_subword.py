"""TextTokenizer: char / word / byte-level BPE round-trips, vocabulary layout, save/load, bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlab.data.subword import TextTokenizer
from seqlab.errors import CheckpointError, ConfigError, DataError

REPO = Path(__file__).resolve().parent.parent

TEXTS = [
    "First Citizen:\n",
    "Before we proceed any further, hear me speak.\n",
    "\n",
    "All:\tSpeak,  speak.\n",
    "Ünïcödé ✓ and 😀 too\n",
    "You are all resolved rather to die than to famish?\n",
]
PTB_LINES = [
    " pierre <unk> N years old will join the board as a nonexecutive director nov. N ",
    " mr. <unk> is chairman of <unk> n.v. the dutch publishing group ",
    " the board is the group ",
]


def test_char_round_trip_is_exact():
    tok = TextTokenizer.train("char", TEXTS)
    for text in [*TEXTS, "".join(TEXTS), "  speak\n\n\tall  "]:
        ids = tok.encode(text)
        assert len(ids) == len(text)
        assert tok.decode(ids) == text
    assert tok.vocab_size == 4 + len(set("".join(TEXTS)))


def test_char_unknown_character_decodes_as_unk():
    tok = TextTokenizer.train("char", ["abc"])
    ids = tok.encode("abz")
    assert ids[2] == tok.unk_id
    assert tok.decode(ids) == "ab<unk>"


def test_word_round_trip_and_ptb_unk_is_the_unk_token():
    tok = TextTokenizer.train("word", PTB_LINES)
    for line in PTB_LINES:
        ids = tok.encode(line)
        assert tok.decode(ids) == " ".join(line.split())
        assert ids.count(tok.unk_id) == line.split().count("<unk>")
    # an unseen word maps to unk too and is shown, not dropped
    assert tok.decode(tok.encode("the zebra board")) == "the <unk> board"


def test_word_vocabulary_layout_specials_first_then_frequency_then_alphabet():
    tok = TextTokenizer.train("word", ["b a c c <unk>", "c b <unk> d"])
    tokens = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    # <unk> occurs in the text but keeps its special id 1; no id is missing
    assert tokens == ["<pad>", "<unk>", "<bos>", "<eos>", "c", "b", "a", "d"]
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert all(tok.token_to_id(t) == i for i, t in enumerate(tokens))
    assert tok.token_to_id("zebra") is None
    assert tok.id_to_token(tok.vocab_size) is None


def test_word_vocab_size_and_min_freq():
    texts = ["a a a b b c"]
    assert [TextTokenizer.train("word", texts, vocab_size=6).id_to_token(i) for i in (4, 5)] == ["a", "b"]
    assert TextTokenizer.train("word", texts, vocab_size=6).vocab_size == 6
    assert TextTokenizer.train("word", texts, min_freq=2).vocab_size == 6  # c (once) is left out
    assert TextTokenizer.train("word", texts).vocab_size == 7


def test_bpe_round_trip_is_exact_even_for_unseen_characters():
    tok = TextTokenizer.train("bpe", TEXTS * 3, vocab_size=300)
    assert tok.vocab_size == 300
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    for text in [*TEXTS, "  never seen: 日本語 ∑ \r\n end", ""]:
        ids = tok.encode(text)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == text
    assert len(tok.encode("you are all resolved")) < len("you are all resolved")  # merges were learned


def test_specials_framing_and_decode_skipping():
    tok = TextTokenizer.train("word", PTB_LINES)
    body = tok.encode("the board")
    framed = tok.encode("the board", add_bos=True, add_eos=True)
    assert framed == [tok.bos_id, *body, tok.eos_id]
    padded = [*framed, tok.pad_id, tok.pad_id]
    assert tok.decode(padded) == "the board"
    assert tok.decode(padded, skip_specials=False) == "<bos> the board <eos> <pad> <pad>"
    assert tok.decode(torch.tensor(padded)) == "the board"
    # a special written in the text is matched whole
    assert tok.encode("the <eos> board") == [body[0], tok.eos_id, body[1]]


def test_encode_batch_matches_encode():
    tok = TextTokenizer.train("bpe", TEXTS, vocab_size=280)
    assert tok.encode_batch(TEXTS, add_eos=True) == [tok.encode(t, add_eos=True) for t in TEXTS]


def test_lowercase():
    tok = TextTokenizer.train("word", ["The the THE cat"], lowercase=True)
    assert tok.vocab_size == 6
    assert tok.decode(tok.encode("THE Cat")) == "the cat"


def test_extra_specials_follow_the_four_roles():
    tok = TextTokenizer.train("char", ["ab"], specials=("<pad>", "<unk>", "<s>", "</s>", "<mask>"))
    assert tok.token_to_id("<mask>") == 4
    assert tok.bos_id == 2 and tok.eos_id == 3
    assert tok.decode([tok.token_to_id("<mask>"), *tok.encode("ab")]) == "ab"


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_load_equality(tmp_path, kind):
    tok = TextTokenizer.train(
        kind, TEXTS, vocab_size=290 if kind == "bpe" else None, lowercase=kind == "word"
    )
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = TextTokenizer.load(path)
    assert loaded == tok
    assert (loaded.kind, loaded.specials, loaded.lowercase) == (kind, tok.specials, kind == "word")
    assert loaded.vocab_size == tok.vocab_size
    assert [loaded.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    assert os.listdir(tmp_path) == ["tokenizer.json"]  # atomic write left no temp file
    assert loaded != TextTokenizer.train(kind, TEXTS[:2], vocab_size=290 if kind == "bpe" else None)


def test_training_is_deterministic_across_processes(tmp_path):
    """Ties in frequency must not depend on hash seeds: two fresh processes write identical files."""
    script = (
        "import sys\n"
        "from seqlab.data.subword import TextTokenizer\n"
        "texts = ['b a c a d e f g', 'g f e d c b a h i j k', 'x y z x y z q q r r s s']\n"
        "for kind in ('char', 'word', 'bpe'):\n"
        "    TextTokenizer.train(kind, texts * 4, vocab_size=290 if kind == 'bpe' else None)"
        ".save(f'{sys.argv[1]}/{kind}.json')\n"
    )
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env, cwd=REPO)
        outputs.append({kind: (out / f"{kind}.json").read_text() for kind in ("char", "word", "bpe")})
    assert outputs[0] == outputs[1]


def _saved(tmp_path) -> Path:
    path = tmp_path / "tokenizer.json"
    TextTokenizer.train("word", PTB_LINES).save(path)
    return path


def test_load_truncated_json_names_the_file(tmp_path):
    path = _saved(tmp_path)
    path.write_text(path.read_text()[:200])
    with pytest.raises(CheckpointError) as e:
        TextTokenizer.load(path)
    assert str(e.value).startswith(f"{path}:1:") and "not valid JSON" in str(e.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(format="something else"),
        lambda d: d.update(format_version=99),
        lambda d: d.pop("kind"),
        lambda d: d.update(kind="sentencepiece"),
        lambda d: d.update(tokenizer={"model": "garbage"}),
        lambda d: d["tokenizer"]["model"]["vocab"].pop("<bos>"),
    ],
)
def test_load_foreign_or_damaged_file(tmp_path, change):
    path = _saved(tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as e:
        TextTokenizer.load(path)
    assert str(e.value).startswith(f"{path}: ")


def test_load_missing_or_binary_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        TextTokenizer.load(tmp_path / "absent.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError, match="bin.json"):
        TextTokenizer.load(tmp_path / "bin.json")


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("sentencepiece", {}, "unknown tokenizer kind"),
        ("bpe", {}, "bpe needs vocab_size >= 260"),
        ("bpe", {"vocab_size": 100}, "bpe needs vocab_size >= 260"),
        ("word", {"vocab_size": 4}, "must exceed the 4 specials"),
        ("word", {"min_freq": 0}, "min_freq"),
        ("word", {"specials": ("<pad>", "<unk>", "<bos>")}, "specials"),
        ("word", {"specials": ("<pad>", "<unk>", "<pad>", "<eos>")}, "specials"),
    ],
)
def test_bad_options(kind, options, message):
    with pytest.raises(ConfigError, match=message):
        TextTokenizer.train(kind, TEXTS, **options)


def test_no_training_text():
    with pytest.raises(DataError, match="no text"):
        TextTokenizer.train("word", ["   ", ""])


def test_basic_english_kind_cuts_as_torchtext_basic_english():
    from seqlab.data.tokenizers import basic_english

    texts = ['He said "hi";:no<br />x', '"<br"<br />/>', "a  b\tc\n d", "it's (ok)!?", "Don't, STOP. (now)",
             "x<br /><br />y", "3.5/10 -- meh...", "''quoted'' \"twice\""]
    tk = TextTokenizer.train("basic_english", texts)
    for text in texts:
        assert [tk.id_to_token(i) for i in tk.encode(text)] == basic_english(text), text
    assert tk.decode(tk.encode('He  said "HI"!')) == "he said hi !"
