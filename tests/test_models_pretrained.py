"""The word embedding of the padded classifiers: its initialisation, sparse gradients through the trainer, and
pretrained word vectors (word2vec / GloVe text format)."""

import gzip
import json

import pytest
import torch

import seqlab
from seqlab.data.vectors import read_vectors
from seqlab.errors import ConfigError, DataError
from seqlab.models.embedding import WordEmbedding, copy_vectors
from tests.helpers import tiny_classification

ITOS = ["<unk>", "<pad>", "the", "film", "great", "dull", "paris"]
GLOVE = "the 0.1 0.2 0.3\ngreat 1 2 3\nzebra 9 9 9\nParis -1 -2 -3\nfilm 0.5 0.5 0.5\n"


def embedding(dim=3):
    torch.manual_seed(0)
    return WordEmbedding(len(ITOS), dim, padding_idx=1)


def load(emb: WordEmbedding, path, freeze: bool = False) -> dict:
    """What the classify task does with task.pretrained: read the vocabulary's vectors, copy them in."""
    index, table = read_vectors(path, ITOS, emb.weight.size(1), skip=[1])
    with torch.no_grad():
        copy_vectors(emb.weight, torch.from_numpy(index), torch.from_numpy(table), padding_idx=1)
    emb.weight.requires_grad_(not freeze)
    return {"found": len(index), "vocab": len(ITOS) - 1}


@pytest.mark.parametrize("fmt", ["glove", "word2vec", "gz"])
def test_vectors_are_copied_and_coverage_is_reported(tmp_path, fmt):
    path = tmp_path / ("vectors.txt.gz" if fmt == "gz" else "vectors.txt")
    text = ("5 3\n" if fmt == "word2vec" else "") + GLOVE
    if fmt == "gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    emb = embedding()
    before = emb.weight.detach().clone()
    coverage = load(emb, path)
    assert coverage == {"found": 4, "vocab": 6}  # the, film, great, and paris through its lowercase
    w = emb.weight.detach()
    torch.testing.assert_close(w[ITOS.index("great")], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(w[ITOS.index("paris")], torch.tensor([-1.0, -2.0, -3.0]))
    assert w[1].eq(0).all()  # padding stays zero
    dull = ITOS.index("dull")  # not in the file: its random row, rescaled to the vectors' spread
    assert torch.allclose(w[dull] / before[dull], (w[dull] / before[dull])[0].expand(3))
    assert emb.weight.requires_grad


def test_exact_case_wins_over_lowercased_match(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("Great 7 7 7\ngreat 1 2 3\n", encoding="utf-8")
    emb = embedding()
    load(emb, path)
    torch.testing.assert_close(emb.weight[ITOS.index("great")].detach(), torch.tensor([1.0, 2.0, 3.0]))


def test_freeze_stops_the_table_from_training(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text(GLOVE, encoding="utf-8")
    emb = embedding()
    load(emb, path, freeze=True)
    assert not emb.weight.requires_grad


@pytest.mark.parametrize(
    "text, error, expect",
    [
        ("the 0.1 0.2\n", ConfigError, "have 2 dimensions but the model's embedding has 3"),
        ("the 0.1 0.2 0.3\ngreat 1 x 3\n", DataError, "v.txt:2: not a number in the vector of 'great'"),
    ],
)
def test_bad_files_are_user_errors(tmp_path, text, error, expect):
    path = tmp_path / "v.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(error, match=expect):
        load(embedding(), path)


def test_missing_or_binary_file_is_a_user_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(embedding(), tmp_path / "nope.txt")
    path = tmp_path / "vectors.bin"
    path.write_bytes(b"\xff\xfe\x00binary word2vec")
    with pytest.raises(DataError, match="cannot read pretrained vectors"):
        load(embedding(), path)


def test_training_with_pretrained_vectors_logs_the_coverage(tmp_path):
    files = tiny_classification(tmp_path, n_train=60, n_test=10)
    path = tmp_path / "glove.txt"
    path.write_text("the 0 1 0 1\ngreat 1 1 1 1\nboring -1 -1 -1 -1\nunrelated 2 2 2 2\n", encoding="utf-8")
    logs = []
    run = seqlab.train(None, {**files, "model": "rnn", "model.dim": 4, "model.hidden": 4,
                              "task.pretrained": str(path), "task.freeze_pretrained": True,
                              "train.epochs": 1, "train.optimizer": "adam", "train.lr": 0.01},
                       out=tmp_path / "run", log=logs.append)
    line = next(m for m in logs if m.startswith("pretrained vectors:"))
    assert line.startswith("pretrained vectors: 3/") and str(path) in line
    predictor = seqlab.load(run)  # the frozen rows are those of the file
    great = predictor.task.vocab.stoi["great"]
    torch.testing.assert_close(predictor.model.embedding.weight[great].detach(), torch.ones(4))


def test_embeddings_start_at_about_unit_length():
    norms = WordEmbedding(50, 300, padding_idx=1).weight.norm(dim=1)
    assert norms[1] == 0 and 0.8 < norms[2:].mean() < 1.2


@pytest.mark.parametrize("name", ["cnn", "rnn", "transformer"])
def test_sparse_embeddings_train_through_the_trainer(tmp_path, name):
    """model.sparse=true: the embedding gets sparse gradients, which the trainer's SparseAdam takes."""
    small = {"cnn": {"model.dim": 16, "model.filters": 8, "model.widths": [1, 2]},
             "rnn": {"model.dim": 16, "model.hidden": 16},
             "transformer": {"model.dim": 16, "model.ff_dim": 32}}[name]
    files = tiny_classification(tmp_path)
    run = seqlab.train(None, {**files, "model": name, **small, "model.sparse": True, "model.dropout": 0.0,
                              "train.epochs": 4, "train.optimizer": "adam", "train.lr": 0.02, "train.batch_size": 16,
                              "train.schedule": "constant", "train.warmup_steps": 0},
                       out=tmp_path / "run", quiet=True)
    test = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert test["split"] == "test" and test["accuracy"] >= 0.85
