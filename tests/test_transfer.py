"""init_from=RUN_DIR (pretraining -> fine-tuning): the words and layers taken from another run, what is reported,
the fine-tuning schedules (discriminative learning rates, gradual unfreezing, the slanted triangular schedule)
and bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

import seqlab
from seqlab.cli import main
from seqlab.config import make_config
from seqlab.errors import ConfigError
from seqlab.models.rnn import RNNClassifier, RNNConfig
from seqlab.report.runs import write_report
from seqlab.train.config import TrainConfig
from seqlab.train.optim import build_optimizer, layer_groups, lr_factor
from tests.helpers import sentiment_rows, tiny_classification

LM = {"task": "lm", "model": "rnn", "task.tokenizer": "basic_english", "model.hidden": 16, "model.layers": 1,
      "model.tie_embeddings": True, "task.bptt": 8, "train.batch_size": 4, "train.eval_batch_size": 4,
      "train.optimizer": "adam", "train.lr": 0.01, "train.schedule": "constant", "train.epochs": 1,
      "data.valid_fraction": 0.1}
CLASSIFIER = {"model": "rnn", "model.dim": 16, "model.hidden": 16, "model.bidirectional": False,
              "train.epochs": 1}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A word-level language model on review-like JSONL texts (labels ignored), with a word ("zestful") that the
    classification data below never holds."""
    root = tmp_path_factory.mktemp("pretrain")
    texts = [text + (" , zestful !" if i % 5 == 0 else " .") for i, (_, text) in enumerate(sentiment_rows(300, 7))]
    corpus = root / "reviews.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "stars": 3}) + "\n" for t in texts), encoding="utf-8")
    return seqlab.train({**LM, "data.train": str(corpus)}, out=root / "lm", quiet=True)


def test_a_classifier_starts_from_the_language_model(lm_run, tmp_path):
    data = tiny_classification(tmp_path)
    run = seqlab.train({**data, **CLASSIFIER, "init_from": str(lm_run), "task.tokenizer": "whitespace",
                        "train.max_steps": 1, "train.lr": 1e-9}, out=tmp_path / "clf", quiet=True)
    facts = json.loads((run / "summary.json").read_text())["counts"]["init_from"]
    assert facts["run"] == str(lm_run)
    assert set(facts["loaded"]) == {"embedding.embedding.weight", "encoder.rnn.weight_ih_l0",
                                    "encoder.rnn.weight_hh_l0", "encoder.rnn.bias_ih_l0", "encoder.rnn.bias_hh_l0"}
    assert facts["not_loaded"] == {"fc.weight": "new", "fc.bias": "new"}
    assert make_config(run / "config.yaml").task_options.tokenizer == "basic_english"  # the LM's, adopted
    lm_tokens = seqlab.load(lm_run).task.vocabulary()[0]
    vocab = json.loads((run / "vocab.json").read_text())["vocab"]["itos"]
    assert "zestful" in vocab  # the LM's words first, though the labelled texts never hold it
    assert facts["new_rows"] == len([w for w in vocab if w not in lm_tokens])
    mine, theirs = load_file(str(run / "model.safetensors")), load_file(str(lm_run / "model.safetensors"))
    for word in ("zestful", "great", "the"):  # lr 1e-9: the copied rows are as the LM left them
        torch.testing.assert_close(mine["embedding.embedding.weight"][vocab.index(word)],
                                   theirs["embedding.weight"][lm_tokens.index(word)], rtol=0, atol=1e-6)
    torch.testing.assert_close(mine["encoder.rnn.weight_hh_l0"], theirs["encoder.rnn.weight_hh_l0"], rtol=0, atol=1e-6)
    assert mine["embedding.embedding.weight"][vocab.index("<pad>")].abs().sum() == 0  # padding stays zero
    predictor = seqlab.load(run)  # the run loads and predicts as any other
    assert predictor.predict(["a zestful and great film"])[0]["label"] in {"pos", "neg"}
    write_report([run], tmp_path / "report", evaluate=False)
    card = next((tmp_path / "report").rglob("MODEL_CARD.md")).read_text()
    assert f"**Started from**: `{lm_run}` (5 tensors loaded, 2 fresh" in card


def test_a_bidirectional_classifier_gets_the_forward_direction(lm_run, tmp_path):
    run = seqlab.train({**tiny_classification(tmp_path), **CLASSIFIER, "model.bidirectional": True,
                        "init_from": str(lm_run), "train.max_steps": 1}, out=tmp_path / "clf", quiet=True)
    facts = json.loads((run / "summary.json").read_text())["counts"]["init_from"]
    assert "encoder.rnn.weight_hh_l0" in facts["loaded"]
    assert facts["not_loaded"]["encoder.rnn.weight_hh_l0_reverse"] == "new"


def test_a_language_model_goes_on_training_on_new_text(lm_run, tmp_path):
    more = tmp_path / "more.txt"
    more.write_text("".join(f"{t} .\n" for _, t in sentiment_rows(80, 9)), encoding="utf-8")
    run = seqlab.train({**LM, "task.tokenizer": "char", "data.train": str(more), "init_from": str(lm_run)},
                       out=tmp_path / "lm2", quiet=True)
    facts = json.loads((run / "summary.json").read_text())["counts"]["init_from"]
    assert facts["not_loaded"] == {} and facts["new_rows"] == 0
    assert make_config(run / "config.yaml").task_options.tokenizer == "basic_english"
    assert (run / "tokenizer.json").read_text() == (lm_run / "tokenizer.json").read_text()


def test_a_tagger_takes_the_word_vectors(lm_run, tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("".join(f"{w}\t{'ADJ' if w in ('great', 'dull') else 'X'}\n" + ("\n" if i % 5 == 4 else "")
                             for i, w in enumerate(["the", "film", "was", "great", "zestful"] * 30)),
                     encoding="utf-8")
    run = seqlab.train({"task": "tag", "model": "rnn", "data.train": str(train), "data.format": "tagged",
                        "model.dim": 16, "init_from": str(lm_run), "train.max_steps": 1}, out=tmp_path / "tag",
                       quiet=True)
    facts = json.loads((run / "summary.json").read_text())["counts"]["init_from"]
    assert facts["loaded"] == ["embedding.weight"]
    assert any("shape" in why for why in facts["not_loaded"].values())  # the LSTM also reads character features


@pytest.mark.parametrize("case", ["missing", "not_a_run", "corrupt_weights", "unfinished", "no_vocabulary",
                                  "nothing_fits", "bag", "lm_from_classifier"])
def test_bad_init_from_is_one_line_and_leaves_nothing(lm_run, tmp_path, capsys, case):
    data = tiny_classification(tmp_path)
    source, extra, expect = str(lm_run), {**CLASSIFIER}, ""
    if case == "missing":
        source, expect = str(tmp_path / "nope"), "run directory not found"
    elif case == "not_a_run":
        (tmp_path / "empty").mkdir()
        source, expect = str(tmp_path / "empty"), "not a run directory"
    elif case in ("corrupt_weights", "unfinished"):
        copy = tmp_path / "copy"
        copy.mkdir()
        for f in lm_run.iterdir():
            if f.is_file():
                (copy / f.name).write_bytes(f.read_bytes())
        if case == "corrupt_weights":
            (copy / "model.safetensors").write_bytes(b"\x00" * 40)
            expect = "cannot read the run's weights"
        else:
            (copy / "model.safetensors").unlink()
            expect = "no finished weights"
        source = str(copy)
    elif case == "no_vocabulary":
        img = tmp_path / "img"
        (img / "config.yaml").parent.mkdir()
        (img / "config.yaml").write_text("task: image\nmodel: convnet\n")
        source, expect = str(img), "no token embedding"
    elif case == "nothing_fits":
        extra, expect = {**CLASSIFIER, "model.dim": 8, "model.hidden": 8}, "no layer of"
    elif case == "bag":
        extra, expect = {"model": "bag"}, "the bag of n-grams does not start from a run"
    elif case == "lm_from_classifier":
        clf = seqlab.train({**data, **CLASSIFIER, "train.max_steps": 1}, out=tmp_path / "clf", quiet=True)
        data, source, extra = {"data.train": data["data.train"]}, str(clf), LM  # an LM on the same texts
        expect = "a language model starts from a language model run"
    args = ["train", *[f"{k}={v}" for k, v in {**data, **extra}.items()], f"init_from={source}",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
    assert not (tmp_path / "out").exists()


def test_init_from_is_not_read_again_on_resume(lm_run, tmp_path):
    run = seqlab.train({**tiny_classification(tmp_path), **CLASSIFIER, "init_from": str(lm_run),
                        "train.epochs": 2, "train.max_steps": 3}, out=tmp_path / "clf", quiet=True)
    before = load_file(str(run / "model.safetensors"))
    seqlab.train(resume=run, overrides=["train.max_steps=5"], quiet=True)  # the words and weights are the run's
    assert load_file(str(run / "model.safetensors")).keys() == before.keys()


# ---------------------------------------------------------------------------------------------- schedules
def classifier(layers: int = 2) -> RNNClassifier:
    return RNNClassifier(RNNConfig(dim=8, hidden=8, layers=layers), vocab_size=30, num_classes=2)


def test_layer_groups_go_from_the_embedding_up_to_the_head():
    model = classifier(layers=2)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[names[id(p)] for p in g] for g in layer_groups(model)]
    assert groups[0] == ["embedding.embedding.weight"]
    assert all("_l0" in n for n in groups[1]) and all("_l1" in n for n in groups[2])
    assert groups[3] == ["fc.weight", "fc.bias"]


def test_discriminative_learning_rates_shrink_down_the_layers():
    cfg = TrainConfig(optimizer="adam", lr=0.01, layer_lr_decay=0.5)
    lrs = [g["lr"] for g in build_optimizer(classifier(), cfg).param_groups]
    assert lrs == pytest.approx([0.01 * 0.5**3, 0.01 * 0.5**2, 0.01 * 0.5, 0.01])
    with pytest.raises(ConfigError, match="layer_lr_decay takes train.optimizer=adam"):
        make_config({"train.optimizer": "sgd", "train.layer_lr_decay": 0.5})


def test_gradual_unfreezing_trains_one_more_group_each_epoch(tmp_path):
    data = tiny_classification(tmp_path)
    base = {**data, "model": "rnn", "model.dim": 8, "model.hidden": 8, "model.layers": 2, "train.optimizer": "adam",
            "train.lr": 0.01, "train.gradual_unfreezing": True, "train.bucket": False,
            "data.valid_fraction": 0}  # no valid split: the last weights are kept
    first = seqlab.train({**base, "train.epochs": 1}, out=tmp_path / "one", quiet=True)
    second = seqlab.train({**base, "train.epochs": 2}, out=tmp_path / "two", quiet=True)
    still = seqlab.train({**base, "train.epochs": 1, "train.lr": 1e-30, "train.gradual_unfreezing": False},
                         out=tmp_path / "still", quiet=True)
    start = load_file(str(still / "model.safetensors"))  # Adam's steps of 1e-30 leave the initialisation as it was

    def moved(run) -> set[str]:
        w = load_file(str(run / "model.safetensors"))
        return {k.split(".")[0] + ("_l1" if "_l1" in k else "_l0" if "_l0" in k else "") for k in w
                if not torch.equal(w[k], start[k])}

    assert moved(first) == {"fc"}
    assert moved(second) == {"fc", "encoder_l1"}


def test_the_slanted_triangular_schedule_is_warmup_then_linear_decay():
    """ULMFiT's STLR (cut_frac 0.1, ratio 32) as train.warmup_steps + schedule=linear + min_lr_ratio."""
    cfg = TrainConfig(schedule="linear", warmup_steps=10, min_lr_ratio=1 / 32)
    f = lr_factor(cfg, steps_per_epoch=100, total_steps=100)
    rising, falling = [f(s) for s in range(10)], [f(s) for s in range(10, 100)]
    assert rising == sorted(rising) and rising[-1] == 1.0 and rising[0] == pytest.approx(0.1)
    assert falling == sorted(falling, reverse=True) and falling[-1] == pytest.approx(1 / 32 + (1 - 1 / 32) / 90)

