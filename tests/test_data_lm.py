"""Language-model data: corpus -> one token stream -> BPTT windows or random blocks."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
import torch

from seqlab.data.lm import (
    batchify,
    bptt_windows,
    encode_corpus,
    random_windows,
    read_corpus_lines,
    split_corpus,
)
from seqlab.data.subword import TextTokenizer
from seqlab.errors import ConfigError, DataError

SHAKESPEARE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
PTB = " the cat sat \n the <unk> sat on the mat \n\n a cat \n"


@pytest.fixture
def ptb_file(tmp_path):
    path = tmp_path / "ptb.train.txt"
    path.write_text(PTB)
    return path


def test_read_corpus_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("ab\n\ncd")  # the last line lacks its newline
    assert list(read_corpus_lines(path, keep_newlines=True)) == ["ab\n", "\n", "cd\n"]
    assert list(read_corpus_lines(path, keep_newlines=False)) == ["ab", "", "cd"]


def test_read_corpus_lines_bad_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"fine\nalso fine\ncaf\xe9\n")
    with pytest.raises(DataError) as e:
        list(read_corpus_lines(path, keep_newlines=True))
    assert str(e.value).startswith(f"{path}:3:") and "not valid utf-8" in str(e.value)
    assert list(read_corpus_lines(path, keep_newlines=False, encoding="latin-1"))[2] == "café"


def test_encode_corpus_word_level_adds_eos_per_line(ptb_file):
    tok = TextTokenizer.train("word", read_corpus_lines(ptb_file, keep_newlines=False))
    ids = encode_corpus(ptb_file, tok)
    assert ids.dtype == np.int64 and ids.ndim == 1
    words = [w for line in PTB.splitlines() for w in [*line.split(), "<eos>"]]
    assert [tok.id_to_token(i) for i in ids] == words  # the empty line is one <eos>; <unk> is kept
    assert np.count_nonzero(ids == tok.eos_id) == 4


def test_encode_corpus_char_level_keeps_newlines_and_round_trips(tmp_path):
    path = tmp_path / "input.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write(SHAKESPEARE)
    tok = TextTokenizer.train("char", read_corpus_lines(path, keep_newlines=True))
    ids = encode_corpus(path, tok, add_eos_per_line=False)
    assert len(ids) == len(SHAKESPEARE)
    assert tok.decode(ids) == SHAKESPEARE


def test_encode_corpus_chunking_does_not_change_the_stream(ptb_file):
    tok = TextTokenizer.train("bpe", read_corpus_lines(ptb_file, keep_newlines=False), vocab_size=270)
    whole = encode_corpus(ptb_file, tok)
    assert np.array_equal(encode_corpus(ptb_file, tok, lines_per_batch=1), whole)


def test_encode_corpus_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    tok = TextTokenizer.train("char", ["abc"])
    with pytest.raises(DataError) as e:
        encode_corpus(path, tok, add_eos_per_line=False)
    assert str(e.value).startswith(f"{path}: no tokens")


def test_split_corpus_is_nanogpt_90_10():
    ids = np.arange(1_115_394)
    train, valid = split_corpus(ids)
    assert (len(train), len(valid)) == (1_003_854, 111_540)  # nanoGPT's Tiny Shakespeare numbers
    assert train[-1] + 1 == valid[0] and valid[-1] == ids[-1]
    train, valid = split_corpus(np.arange(10), valid_fraction=0.3)
    assert train.tolist() == list(range(7)) and valid.tolist() == [7, 8, 9]
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError):
            split_corpus(ids, bad)


def test_batchify_cuts_contiguous_streams_and_drops_the_tail():
    streams = batchify(np.arange(23), 4)
    assert streams.shape == (4, 5) and streams.dtype == torch.long
    assert streams[1].tolist() == [5, 6, 7, 8, 9]
    assert streams.flatten().tolist() == list(range(20))
    assert batchify(torch.arange(8), 1).shape == (1, 8)


def test_batchify_errors():
    with pytest.raises(DataError, match="too short for batch_size=4"):
        batchify(np.arange(7), 4)
    with pytest.raises(ConfigError):
        batchify(np.arange(7), 0)


@pytest.mark.parametrize(
    "n, bptt, lengths", [(11, 3, [3, 3, 3, 1]), (10, 3, [3, 3, 3]), (5, 35, [4]), (2, 1, [1])]
)
def test_bptt_windows_cover_every_token_once_and_y_is_x_shifted(n, bptt, lengths):
    streams = batchify(torch.arange(3 * n), 3)  # (3, n)
    windows = list(bptt_windows(streams, bptt))
    assert [x.shape[1] for x, _ in windows] == lengths
    xs = torch.cat([x for x, _ in windows], dim=1)
    ys = torch.cat([y for _, y in windows], dim=1)
    assert torch.equal(xs, streams[:, :-1])  # every token is an input exactly once (the last can't be)
    assert torch.equal(ys, streams[:, 1:])  # and a target exactly once (the first can't be)
    for x, y in windows:
        assert x.shape == y.shape
        assert torch.equal(y, x + 1)  # ids are positions here, so "next token" is +1


def test_bptt_windows_bad_bptt():
    with pytest.raises(ConfigError):
        next(bptt_windows(batchify(torch.arange(10), 2), 0))


def test_random_windows_are_blocks_of_the_stream_and_deterministic():
    ids = np.arange(100)
    batches = random_windows(ids, block_size=8, batch_size=5, generator=torch.Generator().manual_seed(0))
    x, y = next(batches)
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.long
    assert torch.equal(y, x + 1)
    assert torch.equal(x, x[:, :1] + torch.arange(8))  # contiguous blocks
    assert int(y.max()) <= 99

    def take(seed, k):
        gen = torch.Generator().manual_seed(seed)
        return [x for x, _ in itertools.islice(random_windows(ids, 8, 5, gen), k)]

    first, again = take(1, 3), take(1, 3)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], take(2, 1)[0])


def test_random_windows_resume_from_a_saved_generator_state():
    ids = np.arange(1000)
    gen = torch.Generator().manual_seed(3)
    batches = random_windows(ids, 16, 4, gen)
    next(batches), next(batches)
    state = gen.get_state()
    expected = next(batches)[0]
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(next(random_windows(ids, 16, 4, resumed))[0], expected)


def test_random_windows_every_start_is_reachable():
    ids = np.arange(6)
    starts = {
        int(x[0, 0])
        for x, _ in itertools.islice(random_windows(ids, 3, 8, torch.Generator().manual_seed(0)), 50)
    }
    assert starts == {0, 1, 2}  # L - T = 3 starts: the last block's target is the last token


def test_random_windows_errors():
    with pytest.raises(DataError, match="too short for block_size=8"):
        next(random_windows(np.arange(8), 8, 2, torch.Generator()))
    with pytest.raises(ConfigError):
        next(random_windows(np.arange(80), 0, 2, torch.Generator()))


def test_ptb_token_counts(shared_data):
    """SOURCE.md: one <eos> per line gives 929,589 / 73,760 / 82,430 tokens; 10,000 types with <eos>."""
    ptb = shared_data / "ptb"
    tok = TextTokenizer.train("word", read_corpus_lines(ptb / "ptb.train.txt", keep_newlines=False))
    assert tok.vocab_size == 10_000 + 2  # + <pad> and <bos>
    for split, count in (("train", 929_589), ("valid", 73_760), ("test", 82_430)):
        ids = encode_corpus(ptb / f"ptb.{split}.txt", tok)
        assert len(ids) == count
        # no word of valid/test is outside the train vocabulary: every unk is a literal <unk> of the text
        text = (ptb / f"ptb.{split}.txt").read_text()
        assert np.count_nonzero(ids == tok.unk_id) == text.split().count("<unk>")


def test_tiny_shakespeare_chars(shared_data):
    path = shared_data / "tiny_shakespeare" / "input.txt"
    tok = TextTokenizer.train("char", read_corpus_lines(path, keep_newlines=True))
    assert tok.vocab_size == 65 + 4  # nanoGPT's 65 characters + the specials
    ids = encode_corpus(path, tok, add_eos_per_line=False)
    assert len(ids) == 1_115_394
    assert tok.decode(ids) == path.read_text()
    train, valid = split_corpus(ids)
    assert (len(train), len(valid)) == (1_003_854, 111_540)
