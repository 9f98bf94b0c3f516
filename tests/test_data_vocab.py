"""Vocab and LabelVocab: deterministic order, encode/decode, JSON round trip, errors."""

from __future__ import annotations

import json

import pytest

from seqlab.data import LabelVocab, Vocab
from seqlab.errors import CheckpointError, DataError, LabelError

SENTENCES = [["b", "a", "c"], ["a", "d", "b"], ["e", "a"], ["c", "f"]]


def test_build_orders_specials_then_frequency_then_first_occurrence():
    # counts: a 3, b 2, c 2, d 1, e 1, f 1; b comes before c, d before e before f
    vocab = Vocab.build(SENTENCES)
    assert vocab.itos == ["<unk>", "<pad>", "a", "b", "c", "d", "e", "f"]
    assert vocab.stoi["a"] == 2 and vocab.unk_index == 0 and vocab.pad_index == 1 and len(vocab) == 8
    assert Vocab.build(iter(SENTENCES)).itos == vocab.itos  # any iterable, one pass


def test_build_min_freq_max_size_and_specials():
    assert Vocab.build(SENTENCES, min_freq=2).itos == ["<unk>", "<pad>", "a", "b", "c"]
    assert Vocab.build(SENTENCES, max_size=4).itos == ["<unk>", "<pad>", "a", "b"]
    custom = Vocab.build([["<bos>", "x", "x"]], specials=["<unk>", "<pad>", "<bos>", "<eos>"])
    assert custom.itos == ["<unk>", "<pad>", "<bos>", "<eos>", "x"]  # a special is never counted twice


def test_encode_maps_unknown_tokens_to_unk_and_decode_inverts():
    vocab = Vocab.build(SENTENCES)
    ids = vocab.encode(["a", "zzz", "f"])
    assert ids == [2, 0, 7]
    assert vocab.decode(ids) == ["a", "<unk>", "f"]
    assert "a" in vocab and "zzz" not in vocab


def test_without_unk_an_unknown_token_is_a_data_error():
    vocab = Vocab.build(SENTENCES, specials=["<pad>"], unk_token=None)
    assert vocab.unk_index is None and vocab.encode(["a"]) == [1]
    with pytest.raises(DataError, match="'zzz'"):
        vocab.encode(["a", "zzz"])


def test_save_load_round_trip(tmp_path):
    vocab = Vocab.build([["héllo", "wörld", "héllo"]])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded.itos == vocab.itos and loaded.stoi == vocab.stoi
    assert (loaded.unk_index, loaded.pad_index) == (vocab.unk_index, vocab.pad_index)
    assert Vocab.from_dict(json.loads(json.dumps(vocab.to_dict()))).itos == vocab.itos
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temp file left behind


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "cannot read vocab JSON"),
        ('["a"]', "not a seqlab vocab"),
        ('{"kind": "labels", "itos": []}', "not a seqlab vocab"),
        ('{"kind": "vocab", "itos": "ab", "specials": []}', "'itos' must be a list"),
        ('{"kind": "vocab", "itos": ["a", "a"], "specials": []}', "duplicate"),
        ('{"kind": "vocab", "itos": ["a"], "specials": ["<unk>"]}', "start with the specials"),
    ],
)
def test_load_bad_file_is_a_checkpoint_error_with_path(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CheckpointError, match=message) as err:
        Vocab.load(path)
    assert str(err.value).startswith(f"{path}: ")


def test_load_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Vocab.load(tmp_path / "nope.json")
    with pytest.raises(CheckpointError, match="not found"):
        LabelVocab.load(tmp_path / "nope.json")


def test_label_vocab_sorts_numeric_labels_by_value():
    labels = LabelVocab.build(["10", "2", "1", "2", "3"])
    assert labels.itos == ["1", "2", "3", "10"]
    assert labels.index("10") == 3 and labels.label(3) == "10" and len(labels) == 4
    assert LabelVocab.build(["pos", "neg", "neg"]).itos == ["neg", "pos"]
    assert LabelVocab.build(["b", "10", "a", "9"]).itos == ["9", "10", "a", "b"]
    assert LabelVocab.build(reversed(["x", "y", "z"])).itos == LabelVocab.build(["y", "z", "x"]).itos


def test_label_vocab_unknown_label_names_label_and_known_ones():
    labels = LabelVocab.build(["neg", "pos"])
    with pytest.raises(LabelError) as err:
        labels.index("neutral")
    assert "'neutral'" in str(err.value) and "'neg'" in str(err.value) and "'pos'" in str(err.value)


def test_label_vocab_round_trip_keeps_saved_order(tmp_path):
    path = tmp_path / "labels.json"
    LabelVocab.build(["très bien", "2", "10"]).save(path)
    assert LabelVocab.load(path).itos == ["2", "10", "très bien"]
    path.write_text('{"kind": "labels", "itos": ["b", "a"]}', encoding="utf-8")
    assert LabelVocab.load(path).itos == ["b", "a"]  # a model's class order is never re-sorted
    path.write_text('{"kind": "vocab", "itos": []}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a seqlab labels file"):
        LabelVocab.load(path)
