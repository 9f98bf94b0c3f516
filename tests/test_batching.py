import numpy as np
import torch

from seqlab.data.batching import Packed, bag_batch, bucketed_batches, pad_batch, shuffled_batches


def lecture_generate_batch(batch):
    """The lecture's generate_batch, verbatim apart from names."""
    label = torch.tensor([entry[0] for entry in batch])
    text = [entry[1] for entry in batch]
    offsets = [0] + [len(entry) for entry in text]
    offsets = torch.tensor(offsets[:-1]).cumsum(dim=0)
    text = torch.cat(text)
    return text, offsets, label


def test_bag_batch_equals_the_lecture_generate_batch():
    seqs = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
    data = Packed.from_lists(seqs)
    index = [2, 0, 3]
    text, offsets = bag_batch(data, index)
    ref_text, ref_offsets, _ = lecture_generate_batch([(0, torch.tensor(seqs[i])) for i in index])
    assert torch.equal(text, ref_text) and torch.equal(offsets, ref_offsets)


def test_pad_batch_pads_truncates_and_keeps_lengths():
    data = Packed.from_lists([[1, 2, 3, 4], [5], []])
    tokens, lengths = pad_batch(data, [0, 1, 2], pad_id=0, max_len=3)
    assert tokens.tolist() == [[1, 2, 3], [5, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 1]
    tokens, _ = pad_batch(data, [1], pad_id=0, min_len=5)
    assert tokens.shape == (1, 5)


def test_batch_plans_cover_every_example_once_and_are_seeded():
    lengths = np.random.default_rng(0).integers(1, 50, size=1003)
    for plan in (shuffled_batches(1003, 32, seed=5), bucketed_batches(lengths, 32, seed=5)):
        flat = np.concatenate(plan)
        assert sorted(flat.tolist()) == list(range(1003))
    a = [b.tolist() for b in bucketed_batches(lengths, 32, seed=5)]
    b = [b.tolist() for b in bucketed_batches(lengths, 32, seed=5)]
    c = [b.tolist() for b in bucketed_batches(lengths, 32, seed=6)]
    assert a == b and a != c


def test_bucketing_reduces_padding():
    lengths = np.random.default_rng(1).integers(1, 100, size=2000)

    def padding(plan):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in plan)

    assert padding(bucketed_batches(lengths, 32, seed=0)) < 0.3 * padding(shuffled_batches(2000, 32, seed=0))
