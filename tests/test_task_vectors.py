"""Task `vectors`: fastText's character n-grams, the skip-gram/CBOW batches, the model (whole gradients to every
row of a bag, seeds), training that puts words of the same contexts together, vectors.vec read back by gensim
and by `task.pretrained`, unseen words, `seqlab nearest`, and bad input."""

import random

import numpy as np
import pytest
import torch

import seqlab
from seqlab.cli import main
from seqlab.config import make_config
from seqlab.data.vectors import read_vectors
from seqlab.errors import ConfigError
from seqlab.models.vectors import FastText, FastTextConfig
from seqlab.tasks.vectors import VectorsTask, char_ngrams
from tests.helpers import assert_seeded, tiny_classification

PETS, CARS = ["cat", "dog", "kitten", "puppy"], ["car", "bus", "truck", "van"]


def corpus(tmp_path, n=600):
    """Pets and vehicles in sentences of their own: each word shares its contexts with its kind."""
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        if rng.random() < 0.5:
            lines.append(f"the {rng.choice(PETS)} purrs and sleeps on the soft warm rug")
        else:
            lines.append(f"a {rng.choice(CARS)} drives fast down the long wet road")
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SMALL = {"task": "vectors", "task.min_count": 2, "model.dim": 16, "model.buckets": 5000, "train.epochs": 3,
         "train.batch_size": 64, "task.sample": 0.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vectors")
    return seqlab.train({**SMALL, "data.train": str(corpus(root))}, out=root / "run", quiet=True)


def make_task(tmp_path, **over) -> VectorsTask:
    task = VectorsTask(make_config({**SMALL, "data.train": str(corpus(tmp_path)), **over}), torch.device("cpu"),
                       log=None)
    task.prepare()
    return task


def test_char_ngrams_are_fasttexts():
    assert char_ngrams("where", 3, 3) == ["<wh", "whe", "her", "ere", "re>"]  # the paper's example
    assert char_ngrams("a", 3, 4) == ["<a>"]
    assert len(char_ngrams("where", 3, 6)) == 5 + 4 + 3 + 2


def test_skipgram_pairs_stay_within_the_window_and_draw_real_negatives(tmp_path):
    task = make_task(tmp_path, **{"task.window": 2})
    stream = task.splits["train"]
    batch = task.pairs(stream, 10, 8, np.random.default_rng(0))
    rows, offsets = batch.ids.numpy(), batch.offsets.numpy()
    assert rows[offsets].tolist() == stream[10:18].tolist()  # one bag per centre, led by the word's own row
    centres = rows[offsets][batch.bag_of.numpy()]  # each pair's centre
    assert batch.targets.shape == (len(centres), 1 + task.opt.negative)
    window = set(stream[8:20].tolist())
    assert set(centres.tolist()) <= set(stream[10:18].tolist()) and set(batch.targets[:, 0].tolist()) <= window
    assert 0 < int(batch.targets[:, 1:].min()) and int(batch.targets.max()) < len(task.vocab)  # never <unk>


def test_a_cbow_bag_holds_its_whole_window(tmp_path):
    task = make_task(tmp_path, **{"model.mode": "cbow", "task.window": 1, "model.buckets": 0})
    stream = task.splits["train"]
    batch = task.pairs(stream, 5, 3, np.random.default_rng(0))  # window 1: both neighbours of each centre
    assert batch.targets[:, 0].tolist() == stream[5:8].tolist()
    bags = np.split(batch.ids.numpy(), batch.offsets.numpy()[1:])
    assert [sorted(b.tolist()) for b in bags] == [sorted([stream[i - 1], stream[i + 1]]) for i in range(5, 8)]


def test_subsampling_is_seeded_per_epoch(tmp_path):
    task = make_task(tmp_path, **{"task.sample": 1e-2})
    a, b = task.subsampled(0).copy(), task.subsampled(1).copy()
    assert len(a) < len(task.splits["train"]) and not np.array_equal(a, b)
    task.kept = None
    assert np.array_equal(task.subsampled(0), a)


def test_every_row_of_a_bag_gets_the_whole_gradient():
    model = FastText(FastTextConfig(dim=4, buckets=10), vocab_size=6)
    ids, offsets, targets = torch.tensor([1, 7, 9, 2]), torch.tensor([0, 3]), torch.tensor([[3, 4], [5, 1]])
    h = model.hidden(ids, offsets)
    torch.testing.assert_close(h[0], model.input.weight[[1, 7, 9]].mean(0))  # the value is the mean
    model(ids, offsets, targets).sum().backward()
    grad = model.input.weight.grad.to_dense()
    torch.testing.assert_close(grad[1], grad[7])
    torch.testing.assert_close(grad[1], model.output.weight[[3, 4]].sum(0))  # d(sum of logits)/dh, whole


def test_a_shared_bag_is_one_bag_per_pair():
    """Skip-gram computes a centre's bag once for all its pairs: the loss and every gradient are those of one
    bag per pair."""
    model = FastText(FastTextConfig(dim=4, buckets=10), vocab_size=6)
    with torch.no_grad():
        model.output.weight.normal_()
    ids, offsets = torch.tensor([1, 7, 9, 2, 11]), torch.tensor([0, 3])
    targets, bag_of = torch.tensor([[3, 4], [5, 1], [2, 2]]), torch.tensor([0, 1, 0])
    model(ids, offsets, targets, bag_of).square().sum().backward()
    shared = model.input.weight.grad.to_dense(), model.output.weight.grad.to_dense()
    model.zero_grad()
    model(torch.tensor([1, 7, 9, 2, 11, 1, 7, 9]), torch.tensor([0, 3, 5]), targets).square().sum().backward()
    torch.testing.assert_close(shared[0], model.input.weight.grad.to_dense())
    torch.testing.assert_close(shared[1], model.output.weight.grad.to_dense())


def test_initialisation_is_seeded():
    def build(seed):
        torch.manual_seed(seed)
        return FastText(FastTextConfig(dim=4, buckets=10), vocab_size=6).input.weight.detach().clone()

    assert_seeded(build)


def test_training_puts_words_of_the_same_contexts_together(run):
    predictor = seqlab.load(run)
    for word, kind in [("cat", PETS), ("bus", CARS)]:
        neighbours = [w for w, _ in predictor.predict([word], top_k=3)[0]["neighbours"]]
        assert set(neighbours) <= set(kind) - {word}, neighbours
    analogy = [w for w, _ in predictor.predict(["cat - rug + road"], top_k=30)[0]["neighbours"]]
    assert not {"cat", "rug", "road"} & set(analogy) and set(analogy) <= set(seqlab.load(run).task.vocab.itos)
    unseen = predictor.predict(["kittens"], top_k=2)[0]  # a word never seen: from its character n-grams
    assert unseen["neighbours"][0][0] in PETS + CARS


def test_the_vectors_file_is_word2vec_text_read_by_gensim_and_by_a_classifier(run, tmp_path):
    path = run / "vectors.vec"
    header = path.read_text(encoding="utf-8").splitlines()[0]
    task = seqlab.load(run).task
    assert header == f"{len(task.vocab) - 1} 16"
    words = task.vocab.itos[1:]
    index, table = read_vectors(path, words, 16)
    assert len(index) == len(words)
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(path))
    np.testing.assert_allclose(kv["cat"], table[words.index("cat")], rtol=1e-4, atol=1e-5)
    clf = seqlab.train({**tiny_classification(tmp_path), "model": "cnn", "model.dim": 16, "task.pretrained": str(path),
                        "train.max_steps": 1}, out=tmp_path / "clf", quiet=True)
    assert (clf / "model.safetensors").is_file()


def test_nearest_on_the_command_line(run, capsys):
    assert main(["nearest", str(run), "cat", "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.split("\t")) == 2 and line.split()[0] in PETS


@pytest.mark.parametrize("case", ["unknown_without_ngrams", "other_task", "verb_of_another_task", "empty_query"])
def test_bad_queries_are_one_line(run, tmp_path, capsys, case):
    if case == "unknown_without_ngrams":
        words_only = seqlab.train({**SMALL, "model.buckets": 0, "train.epochs": 1,
                                   "data.train": str(corpus(tmp_path, 50))}, out=tmp_path / "w2v", quiet=True)
        args, expect = ["nearest", str(words_only), "zebra"], "'zebra' is not in the vocabulary"
    elif case == "other_task":
        clf = seqlab.train({**tiny_classification(tmp_path), "train.max_steps": 1}, out=tmp_path / "clf", quiet=True)
        args, expect = ["nearest", str(clf), "cat"], "use `seqlab predict`"
    elif case == "verb_of_another_task":
        args, expect = ["translate", str(run), "cat"], "use `seqlab nearest`"
    else:
        args, expect = ["nearest", str(run), '"'], "no word in the query"  # basic_english drops quotes
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err


def test_bad_corpora_and_options_are_one_line_and_leave_nothing(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("one two three\n", encoding="utf-8")
    assert main(["train", "task=vectors", f"data.train={empty}", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "occurs task.min_count=5 times" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="task.minn .* must not exceed task.maxn"):
        make_config({"task": "vectors", "task.minn": 5, "task.maxn": 3})
