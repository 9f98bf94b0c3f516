import torch
import torch.nn.functional as F

from seqlab.data.batching import Packed, bag_batch
from seqlab.models.bag import BagClassifier, BagConfig
from tests.helpers import assert_seeded


def batch():
    data = Packed.from_lists([[2, 3, 4], [5, 6], [7], [8, 9, 10, 11]])
    return bag_batch(data, [0, 1, 2, 3]), torch.tensor([0, 1, 2, 1])


def test_shape_and_lecture_init():
    torch.manual_seed(0)
    m = BagClassifier(BagConfig(dim=8), vocab_size=12, num_classes=3)
    (text, offsets), _ = batch()
    assert m(text, offsets).shape == (4, 3)
    assert m.embedding.weight.abs().max() <= 0.5 and torch.all(m.fc.bias == 0)
    assert m.embedding.sparse


def test_mean_bag_equals_embedding_then_mean():
    m = BagClassifier(BagConfig(dim=5), vocab_size=12, num_classes=2)
    (text, offsets), _ = batch()
    ref = torch.stack([m.embedding.weight[torch.tensor(s)].mean(0) for s in ([2, 3, 4], [5, 6], [7], [8, 9, 10, 11])])
    assert torch.allclose(m.embedding(text, offsets), ref, atol=1e-6)


def test_tiny_overfit():
    torch.manual_seed(0)
    m = BagClassifier(BagConfig(dim=16), vocab_size=12, num_classes=3)
    opt = torch.optim.SGD(m.parameters(), lr=4.0)
    (text, offsets), y = batch()
    for _ in range(200):
        opt.zero_grad()
        loss = F.cross_entropy(m(text, offsets), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.01


def test_determinism():
    (text, offsets), _ = batch()

    def run(seed):
        torch.manual_seed(seed)
        return BagClassifier(BagConfig(dim=8), vocab_size=12, num_classes=3)(text, offsets)

    assert_seeded(run)
