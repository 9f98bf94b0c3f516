"""Task `tag` end to end: train, predict, evaluate through seqlab.api and seqlab.cli.main on a tiny
synthetic CoNLL-U treebank with multiword tokens; alignment, the unseen-word metric, unknown tags."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

import seqlab
from seqlab.cli import main
from seqlab.config import make_config
from seqlab.errors import ConfigError, DataError
from seqlab.tasks.tag import TagTask

LEXICON = {
    "DET": ["the", "a", "this", "every"],
    "ADJ": ["big", "small", "red", "happy", "old"],
    "NOUN": ["cat", "dog", "bird", "fox", "horse", "mouse"],
    "VERB": ["sees", "chases", "likes", "finds"],
    "PRON": ["I", "you", "we", "they"],
}
TINY = {"task": "tag", "model.dim": 16, "model.hidden": 16, "model.layers": 1, "model.char_features": 8,
        "model.char_dim": 8, "model.dropout": 0.0, "train.epochs": 6, "train.optimizer": "adam", "train.lr": 0.02,
        "train.schedule": "constant", "train.batch_size": 8}


def sentence(rng):
    """(ID, FORM, UPOS) rows: `DET (ADJ) NOUN VERB DET NOUN .` or `PRON don't VERB DET NOUN .` where
    "don't" is the multiword token 2-3 over the words "do" (AUX) and "n't" (PART)."""
    if rng.random() < 0.3:
        words = [(rng.choice(LEXICON["PRON"]), "PRON"), ("do", "AUX"), ("n't", "PART"),
                 (rng.choice(LEXICON["VERB"]), "VERB")]
        mwt = True
    else:
        words = [(rng.choice(LEXICON["DET"]), "DET")]
        if rng.random() < 0.5:
            words.append((rng.choice(LEXICON["ADJ"]), "ADJ"))
        words += [(rng.choice(LEXICON["NOUN"]), "NOUN"), (rng.choice(LEXICON["VERB"]), "VERB")]
        mwt = False
    words += [(rng.choice(LEXICON["DET"]), "DET"), (rng.choice(LEXICON["NOUN"]), "NOUN"), (".", "PUNCT")]
    rows = []
    for i, (form, tag) in enumerate(words, 1):
        if mwt and i == 2:
            rows.append("2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_")
        rows.append(f"{i}\t{form}\t{form.lower()}\t{tag}\t{tag[:2]}\t_\t0\tdep\t_\t_")
    return rows


def write_conllu(path, n, seed):
    rng = random.Random(seed)
    blocks = [f"# sent_id = s{k}\n" + "\n".join(sentence(rng)) + "\n" for k in range(n)]
    path.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("ud")
    return {"data.train": str(write_conllu(d / "train.conllu", 120, 1)),
            "data.valid": str(write_conllu(d / "dev.conllu", 20, 2)),
            "data.test": str(write_conllu(d / "test.conllu", 30, 3))}


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    return seqlab.train(None, {**TINY, **corpus}, out=tmp_path_factory.mktemp("runs") / "tag", quiet=True)


def test_train_writes_a_run_whose_test_metrics_are_the_headline_and_unseen(run):
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "test"
    assert last["upos_accuracy"] > 0.95 and {"unseen_accuracy", "macro_f1", "loss"} <= set(last)
    assert (run / "vocab.json").is_file() and (run / "model.safetensors").is_file()


def test_predictions_align_one_to_one_with_the_words_of_a_conllu_with_multiword_tokens(run, corpus):
    from seqlab.data.conllu import read_conllu

    sentences = list(read_conllu(corpus["data.test"]))
    assert any("n't" in s.tokens for s in sentences) and not any("don't" in s.tokens for s in sentences)
    out = seqlab.load(run).predict([s.tokens for s in sentences])
    assert [r["tokens"] for r in out] == [s.tokens for s in sentences]
    assert all(len(r["tags"]) == len(r["probabilities"]) == len(r["tokens"]) for r in out)
    mwt = next(r for r in out if "n't" in r["tokens"])
    assert mwt["tags"][1:3] == ["AUX", "PART"]
    rep = seqlab.evaluate(run)
    assert rep["tokens"] == sum(len(s.tokens) for s in sentences) and rep["sentences"] == len(sentences)


def test_predict_splits_strings_at_whitespace_and_gives_top_k(run):
    model = seqlab.load(run)
    a = model.predict("the big dog chases a cat .")[0]
    b = model.predict([["the", "big", "dog", "chases", "a", "cat", "."]], top_k=3)[0]
    assert a["tags"] == b["tags"] == ["DET", "ADJ", "NOUN", "VERB", "DET", "NOUN", "PUNCT"]
    assert len(b["top_k"]) == 7 and all(len(t) == 3 for t in b["top_k"])
    assert b["top_k"][0][0] == ("DET", b["probabilities"][0])
    assert model.format_text(a) == "the/DET big/ADJ dog/NOUN chases/VERB a/DET cat/NOUN ./PUNCT"
    with pytest.raises(DataError, match="no tokens"):
        model.predict(["   "])


def test_cli_predict_prints_word_slash_tag_and_json(run, capsys):
    assert main(["predict", str(run), "they do n't like the fox ."]) == 0
    assert capsys.readouterr().out.strip() == "they/PRON do/AUX n't/PART like/VERB the/DET fox/NOUN ./PUNCT"
    assert main(["predict", str(run), "a cat sees the dog .", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["text"] == "a cat sees the dog ." and r["tags"] == ["DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT"]


def test_cli_evaluate_shows_per_tag_table_and_json(run, corpus, capsys):
    assert main(["evaluate", str(run), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["upos_accuracy"] > 0.95 and "accuracy" not in rep
    assert set(rep["per_class"]) == {"ADJ", "AUX", "DET", "NOUN", "PART", "PRON", "PUNCT", "VERB"}
    assert main(["evaluate", str(run), "--data", corpus["data.valid"]]) == 0
    text = capsys.readouterr().out
    assert "upos_accuracy" in text and "PUNCT" in text and "confusion matrix" in text


class Always(nn.Module):
    """A stand-in tagger that gives every word the same tag."""

    def __init__(self, tag: int, n_tags: int):
        super().__init__()
        self.tag, self.n_tags = tag, n_tags

    def forward(self, words, chars, lengths):
        return nn.functional.one_hot(torch.full(words.shape, self.tag), self.n_tags).float()


def test_unseen_accuracy_counts_only_words_absent_from_training(tmp_path):
    (tmp_path / "train.tsv").write_text("the\tDET\ncat\tNOUN\nsleeps\tVERB\n\na\tDET\ndog\tNOUN\n")
    # test: 5 words, unseen: "A" (case matters), "bird", "sleeps." ; gold NOUN among them: "bird"
    (tmp_path / "test.tsv").write_text("A\tDET\nbird\tNOUN\nsleeps.\tVERB\n\nthe\tDET\ncat\tNOUN\n")
    cfg = make_config(None, {"task": "tag", "data.train": str(tmp_path / "train.tsv"),
                             "data.test": str(tmp_path / "test.tsv"), "data.valid_fraction": 0.0})
    task = TagTask(cfg, torch.device("cpu"), log=None)
    task.prepare()
    assert task.headline == "accuracy"
    noun = task.tags.index("NOUN")
    rep = task.report(Always(noun, len(task.tags)), "test")
    assert rep["unseen_tokens"] == 3 and rep["unseen_accuracy"] == pytest.approx(1 / 3)
    assert rep["accuracy"] == pytest.approx(2 / 5)
    assert rep["per_class"]["NOUN"]["precision"] == pytest.approx(2 / 5)


def test_a_gold_tag_unseen_in_training_is_an_error_with_its_own_row(tmp_path):
    (tmp_path / "train.tsv").write_text("the\tDET\ncat\tNOUN\n")
    (tmp_path / "test.tsv").write_text("the\tDET\nwow\tINTJ\n")
    cfg = make_config(None, {"task": "tag", "data.train": str(tmp_path / "train.tsv"),
                             "data.test": str(tmp_path / "test.tsv"), "data.valid_fraction": 0.0})
    msgs = []
    task = TagTask(cfg, torch.device("cpu"), log=msgs.append)
    task.prepare()
    assert any("'INTJ'" in m for m in msgs)
    rep = task.report(Always(task.tags.index("DET"), len(task.tags)), "test")
    assert rep["accuracy"] == 0.5 and rep["per_class"]["INTJ"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                                   "support": 1}
    assert np.isfinite(rep["loss"])


def test_char_sequence_keeps_the_first_and_last_characters_of_long_words():
    cfg = make_config(None, {"task": "tag", "task.max_word_len": 6})
    task = TagTask(cfg, torch.device("cpu"), log=None)
    assert task.char_sequence("cat") == "cat"
    assert task.char_sequence("internationalization") == "intion"


def test_bad_data_and_options_are_user_errors(tmp_path, corpus):
    with pytest.raises(ConfigError, match="data.format must be one of"):
        seqlab.train(None, {**corpus, "task": "tag", "data.format": "csv"}, out=tmp_path / "a", quiet=True)
    with pytest.raises(ConfigError, match="task.column must be one of"):
        seqlab.train(None, {**corpus, "task": "tag", "task.column": "lemma"}, out=tmp_path / "b", quiet=True)
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tthe\tthe\tDET\n")
    with pytest.raises(DataError, match=f"{bad}:1: expected 10 TAB-separated fields"):
        seqlab.train(None, {**corpus, "task": "tag", "data.train": str(bad)}, out=tmp_path / "c", quiet=True)
    assert not (tmp_path / "c").exists()


def test_named_ud_datasets_resolve_to_the_shared_copies_and_ewt_evaluates_a_run(run, shared_data, tmp_path):
    from seqlab.data import get_dataset

    lines = get_dataset("ud_english", download=False)
    assert lines.train == shared_data / "ud_english/lines/en_lines-ud-train.conllu" and lines.format == "conllu"
    ewt = get_dataset("ud_english_ewt", download=False)
    assert ewt.train is None and ewt.test == shared_data / "ud_english/ewt/en_ewt-ud-test.conllu"
    rep = seqlab.evaluate(run, data="ud_english_ewt")
    assert (rep["sentences"], rep["tokens"]) == (2077, 25094)
    assert 0 < rep["unseen_tokens"] < rep["tokens"] and "SYM" in rep["per_class"]
    with pytest.raises(ConfigError, match="'ud_english_ewt' has no training split"):
        seqlab.train(None, {"task": "tag", "dataset": "ud_english_ewt"}, out=tmp_path / "r", quiet=True)
