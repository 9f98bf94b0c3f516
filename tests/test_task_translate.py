"""Task `translate` end to end on a tiny made-up language pair: training through the CLI, translating
(`seqlab translate`, --file, --beam, --plot-attention), evaluation, and bad input."""

import gzip
import json
import random

import pytest

import seqlab
from seqlab.cli import main
from seqlab.report.runs import run_facts

WORDS = {"ein": "a", "mann": "man", "hund": "dog", "frau": "woman", "sieht": "sees", "hat": "has",
         "rot": "red", "blau": "blue", "gross": "big", "klein": "small", "ball": "ball", "haus": "house"}
NOUNS = ["mann", "hund", "frau", "ball", "haus"]
ADJS, VERBS = ["rot", "blau", "gross", "klein"], ["sieht", "hat"]


def pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """`ein N V ein ADJ N .` -> the words translated, adjective and noun kept in the English order."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        de = ["ein", rng.choice(NOUNS), rng.choice(VERBS), "ein", rng.choice(ADJS), rng.choice(NOUNS)]
        out.append((" ".join(de).capitalize() + ".", " ".join(WORDS[w] for w in de).capitalize() + "."))
    return out


def write_prefix(prefix, rows, gz_target=False):
    """`prefix.de` and `prefix.en` (gzipped with gz_target)."""
    (prefix.parent / f"{prefix.name}.de").write_text("".join(f"{de}\n" for de, _ in rows), encoding="utf-8")
    en = "".join(f"{en}\n" for _, en in rows).encode()
    if gz_target:
        (prefix.parent / f"{prefix.name}.en.gz").write_bytes(gzip.compress(en))
    else:
        (prefix.parent / f"{prefix.name}.en").write_bytes(en)
    return str(prefix)


TINY = ["task=translate", "model=transformer", "task.tokenizer=word", "task.vocab_size=null",
        "model.dim=32", "model.heads=2", "model.layers=1", "model.decoder_layers=1", "model.ff_dim=64",
        "model.dropout=0.0", "train.optimizer=adam", "train.lr=0.005", "train.schedule=constant",
        "train.batch_size=16", "train.epochs=6", "task.beam=3", "seed=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("translate")
    train = write_prefix(d / "train", pairs(240, 1), gz_target=True)
    valid = write_prefix(d / "valid", pairs(30, 2))
    test = d / "test.tsv"
    test.write_text("".join(f"{de}\t{en}\n" for de, en in pairs(30, 3)), encoding="utf-8")
    out = d / "run"
    assert main(["train", *TINY, f"data.train={train}", f"data.valid={valid}", f"data.test={test}",
                 "--out", str(out), "--quiet"]) == 0
    return out


def test_training_learns_the_pair_and_logs_bleu(run):
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [x for x in lines if x["split"] == "valid"]
    assert len(valid) == 6 and {"bleu", "chrf", "loss", "perplexity"} <= set(valid[-1])
    test = lines[-1]
    assert test["split"] == "test" and test["bleu"] > 90 and test["greedy_bleu"] > 90
    assert (run / "tokenizer.json").is_file() and (run / "model.safetensors").is_file()


def test_translate_cli_texts_file_beam_json_and_attention_plot(run, tmp_path, capsys):
    assert main(["translate", str(run), "Ein hund sieht ein rot ball.", "Ein frau hat ein klein haus."]) == 0
    assert capsys.readouterr().out.splitlines() == ["A dog sees a red ball.", "A woman has a small house."]
    f = tmp_path / "in.txt"
    f.write_text("Ein mann hat ein blau hund.\n", encoding="utf-8")
    png = tmp_path / "attention.png"
    args = ["translate", str(run), "--file", str(f), "--beam", "1", "--json", "--plot-attention", str(png)]
    assert main(args) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert r["translation"] == "A man has a blue dog." and r["log_prob"] < 0 and "attention" not in r
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in captured.err


def test_the_predictor_returns_attention_over_the_source(run):
    translator = seqlab.load(run)
    (r,) = translator.predict(["Ein hund hat ein gross haus."], beam=2, attention=True)
    assert r["translation"] == "A dog has a big house."
    assert len(r["attention"]) == len(r["tgt_tokens"]) and len(r["attention"][0]) == len(r["src_tokens"]) == 6
    assert all(abs(sum(row) - 1) < 1e-4 for row in r["attention"])


def test_evaluate_reports_beam_and_greedy_scores(run, capsys):
    assert main(["evaluate", str(run), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert {"bleu", "chrf", "greedy_bleu", "greedy_chrf", "loss", "perplexity"} <= set(rep)
    assert rep["examples"] == 30


def test_line_count_mismatch_is_one_error_line_naming_both_files(tmp_path, capsys):
    prefix = write_prefix(tmp_path / "train", pairs(20, 1))
    (tmp_path / "train.en").write_text("".join(f"{en}\n" for _, en in pairs(18, 1)), encoding="utf-8")
    assert main(["train", *TINY, f"data.train={prefix}", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.en:19:" in err and "train.de" in err
    assert "align" in err


@pytest.mark.parametrize("bad, message", [
    (["model.share_embeddings=true", "task.joint_vocab=false"], "joint vocabulary"),
    (["task.src=en"], "must differ"),
    (["task.src=fr"], "train.fr"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, bad, message):
    prefix = write_prefix(tmp_path / "train", pairs(20, 1))
    out = tmp_path / "run"
    assert main(["train", *TINY, f"data.train={prefix}", *bad, "--out", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_separate_vocabularies_and_the_rnn_model(tmp_path):
    prefix = write_prefix(tmp_path / "train", pairs(60, 4))
    out = seqlab.train({"task": "translate", "model": "rnn"},
                       {"data.train": prefix, "task.tokenizer": "bpe", "task.vocab_size": 300,
                        "task.joint_vocab": False, "model.dim": 16, "model.hidden": 8,
                        "train.epochs": 1, "train.optimizer": "adam", "train.lr": 0.01,
                        "data.valid_fraction": 0.1},
                       out=tmp_path / "run", quiet=True)
    assert (out / "tokenizer.src.json").is_file() and (out / "tokenizer.tgt.json").is_file()
    assert not (out / "tokenizer.json").exists()
    (r,) = seqlab.load(out).predict("Ein mann sieht ein rot haus.", beam=2)
    assert isinstance(r["translation"], str)


def test_decoding_chosen_on_valid_with_averaged_weights(tmp_path, capsys):
    """task.beam_choices x task.length_penalty_choices decode valid after training (beam 1 once); the best BLEU
    becomes the run's beam and length penalty (decoding.json, read back by `seqlab.load`); train.average_last
    evaluates the mean of the last epochs. A corrupt decoding.json is one error line."""
    train = write_prefix(tmp_path / "train", pairs(240, 1))
    valid = write_prefix(tmp_path / "valid", pairs(30, 2))
    out = tmp_path / "run"
    assert main(["train", *TINY, f"data.train={train}", f"data.valid={valid}", "task.beam_choices=[1,2]",
                 "task.length_penalty_choices=[0.5,1.5]", "train.average_last=3", "train.epochs=4",
                 "--out", str(out), "--quiet"]) == 0
    chosen = json.loads((out / "decoding.json").read_text())
    tried = [(t["beam"], t["length_penalty"]) for t in chosen["valid"]]
    assert tried == [(1, 0.5), (2, 0.5), (2, 1.5)] and chosen["metric"] == "bleu"
    best = max(chosen["valid"], key=lambda t: t["bleu"])
    assert (chosen["beam"], chosen["length_penalty"]) == (best["beam"], best["length_penalty"])
    task = seqlab.load(out).task
    assert (task.opt.beam, task.opt.length_penalty) == (best["beam"], best["length_penalty"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    averaged = [x for x in lines if x["split"] == "valid_average"]
    assert [x["epochs"] for x in averaged] == [[2, 4]]
    summary = json.loads((out / "summary.json").read_text())  # the report shows the kept weights' valid scores
    summary["results"]["valid"] = {"bleu": averaged[0]["bleu"], "epoch": 4, "averaged_epochs": 3}
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    assert run_facts(out, "run").split_metrics["valid"]["loss"] == pytest.approx(averaged[0]["loss"])
    (out / "decoding.json").write_text('{"beam": 0, "length_penalty": 1.0}', encoding="utf-8")
    capsys.readouterr()
    assert main(["translate", str(out), "Ein hund sieht ein rot ball."]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "decoding.json is corrupt" in err
