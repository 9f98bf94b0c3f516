"""Task `lm`: windows, truncated BPTT, evaluation on the whole stream, exact resume, generation (sampling,
seeds, KV cache == recompute), the generate CLI and bad input."""

import json
import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import seqlab
from seqlab.cli import main
from seqlab.config import make_config
from seqlab.data.subword import TextTokenizer
from seqlab.errors import CheckpointError, ConfigError, DataError
from seqlab.models.lm import RNNLM, RNNLMConfig, TransformerLM, TransformerLMConfig
from seqlab.tasks.generate import generate_ids, sample_next
from seqlab.tasks.lm import IGNORE, LMTask, eval_rows
from seqlab.train.checkpoint import checkpoint_dirs
from tests.helpers import tiny_classification

VERSE = [
    "the cat sat on the mat and the dog sat on the log",
    "a bird sang in the tree and the sun rose over the hill",
    "the rain fell on the roof and the wind blew through the door",
]


def corpus(tmp_path, lines=60, name="text.txt"):
    path = tmp_path / name
    path.write_text("\n".join(VERSE[i % 3] for i in range(lines)) + "\n", encoding="utf-8")
    return path


MODEL_OPTIONS = {"rnn": {"model.hidden": 24, "model.layers": 1},
                 "transformer": {"model.dim": 16, "model.heads": 2, "model.layers": 1}}


def small_rnn(path, model="rnn", **over):
    """A small, fast `lm` config on `path` (the RNN unless `model=transformer`)."""
    return {"task": "lm", "model": model, "data.train": str(path), "data.valid_fraction": 0.1,
            **MODEL_OPTIONS[model], "task.bptt": 16, "train.batch_size": 4, "train.eval_batch_size": 4,
            "train.optimizer": "adam", "train.lr": 0.01, "train.schedule": "constant", "train.epochs": 1,
            **over}


def make_task(path, **over):
    cfg = make_config(small_rnn(path, **over))
    task = LMTask(cfg, torch.device("cpu"), log=None)
    task.prepare()
    return task


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    out = root / "run"
    seqlab.train(small_rnn(corpus(root), **{"train.epochs": 3}), out=out, quiet=True)
    return out


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_tf")
    out = root / "run"
    over = {"task.steps_per_epoch": 30, "train.epochs": 2}
    seqlab.train(small_rnn(corpus(root), model="transformer", **over), out=out, quiet=True)
    return out


# ---------------------------------------------------------------- windows and truncated BPTT
def test_sequential_windows_cover_every_token_once_per_epoch(tmp_path):
    task = make_task(corpus(tmp_path), **{"task.bptt": 7, "train.batch_size": 3})
    streams = task.streams  # (B, N)
    seen_x = torch.zeros_like(streams)
    seen_y = torch.zeros_like(streams)
    starts = []
    for x, y in task.epoch_plan(0):
        batch = task.make_batch((x, y))
        assert batch.carry and batch.x.shape == batch.y.shape and batch.x.shape[1] <= 7
        start = x.storage_offset() - streams.storage_offset()  # the window is a view of the streams
        assert torch.equal(streams[:, start : start + x.size(1)], x)
        starts.append(start)
        seen_x[:, start : start + x.size(1)] += 1
        seen_y[:, start + 1 : start + 1 + x.size(1)] += 1
    assert starts == sorted(starts)  # left to right, so the state of one window leads into the next
    assert (seen_x[:, :-1] == 1).all() and (seen_y[:, 1:] == 1).all()
    assert streams.numel() >= len(task.splits["train"]) - 2  # the B streams hold the training stream
    assert len(task.epoch_plan(1)) == len(task.epoch_plan(0))


def test_random_windows_depend_on_seed_epoch_and_step_only(tmp_path):
    path = corpus(tmp_path)
    task = make_task(path, **{"task.steps_per_epoch": 5})
    plan = task.epoch_plan(0)
    assert len(plan) == 5 and plan == make_task(path, **{"task.steps_per_epoch": 5}).epoch_plan(0)
    a, b = task.make_batch(plan[2]), task.make_batch(plan[2])
    assert not a.carry and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == (4, 16) and torch.equal(a.x[:, 1:], a.y[:, :-1])
    assert not torch.equal(task.make_batch(task.epoch_plan(1)[2]).x, a.x)
    assert task.epoch_plan(0) != make_task(path, seed=1, **{"task.steps_per_epoch": 5}).epoch_plan(0)


@pytest.mark.parametrize("length,rows", [(2, 4), (11, 3), (12, 3), (100, 7), (50, 1)])
def test_eval_rows_predict_every_token_but_the_first_once(length, rows):
    ids = torch.arange(length) + 5
    x, y = eval_rows(ids, rows)
    real = y != IGNORE
    assert sorted(y[real].tolist()) == ids[1:].tolist()
    assert torch.equal(x[real] + 1, y[real])  # each target follows its input in the stream
    assert x.shape == y.shape and x.size(0) == min(rows, length - 1)


def test_hidden_state_is_carried_detached_and_reset_at_epoch_start(tmp_path):
    task = make_task(corpus(tmp_path))
    model = task.build_model()
    plan = task.epoch_plan(0)
    task.start_epoch(0, 2)
    assert task.state is None
    loss, sums = task.training_loss(model, task.make_batch(plan[0]))
    h, c = task.state
    assert h.shape == (1, 4, 24) and not h.requires_grad and h.grad_fn is None
    assert sums["n"] == plan[0][1].numel()
    assert math.isclose(sums["loss"] / sums["n"], loss.item(), rel_tol=1e-6)
    # the next window starts where the first left off
    carried_logits, _ = model(plan[1][0], task.state)
    fresh_logits, _ = model(plan[1][0])
    assert not torch.allclose(carried_logits, fresh_logits)
    task.start_epoch(0, 2)  # the same epoch (a resumed run): the state stays
    assert task.state is not None
    task.start_epoch(1, 2)
    assert task.state is None


def test_gradients_stop_at_the_window_edge(tmp_path):
    """Window 2's loss reaches no embedding row that only window 1 used (its graph was cut); without the
    detach it would."""
    task = make_task(corpus(tmp_path))
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(hidden=8, layers=1), vocab_size=10)
    first = task.make_batch((torch.tensor([[1, 2, 1, 2]]), torch.tensor([[2, 1, 2, 3]])))
    second = task.make_batch((torch.tensor([[3, 4, 3, 4]]), torch.tensor([[4, 3, 4, 3]])))
    task.start_epoch(0, 2)
    task.training_loss(model, first)
    loss, _ = task.training_loss(model, second)
    loss.backward()
    grad = model.embedding.weight.grad
    assert grad[[1, 2]].abs().sum() == 0 and grad[[3, 4]].abs().sum() > 0
    model.zero_grad()
    logits1, state = model(first.x)  # the same two windows, state not detached
    logits2, _ = model(second.x, state)
    torch.nn.functional.cross_entropy(logits2.flatten(0, 1), second.y.flatten()).backward()
    assert model.embedding.weight.grad[[1, 2]].abs().sum() > 0


def test_evaluation_is_the_loss_of_the_whole_stream(tmp_path):
    """With one row the carried state reads the split as one sequence: the task's loss equals the model run
    over the whole stream at once."""
    task = make_task(corpus(tmp_path), **{"train.eval_batch_size": 1, "task.bptt": 9})
    torch.manual_seed(0)
    model = task.build_model().eval()
    ids = task.splits["valid"]
    logits, _ = model(ids[None, :-1])
    expected = torch.nn.functional.cross_entropy(logits[0], ids[1:]).item()
    got = task.evaluate(model, "valid")
    assert math.isclose(got["loss"], expected, rel_tol=1e-5)
    assert math.isclose(got["bits_per_char"], expected / math.log(2), rel_tol=1e-5)
    many_rows = make_task(corpus(tmp_path), **{"train.eval_batch_size": 5}).evaluate(model, "valid")["loss"]
    assert abs(many_rows - expected) < 0.05 * expected  # a few rows start without context: close, not equal


# ---------------------------------------------------------------- end to end
def test_train_evaluate_info_char_rnn(char_run, capsys):
    lines = [json.loads(x) for x in (char_run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in lines if r["split"] == "valid"]
    assert len(valid) == 3 and valid[-1]["loss"] < valid[0]["loss"]
    assert {"loss", "bits_per_char"} <= set(valid[-1])
    assert (char_run / "tokenizer.json").is_file()
    rep = seqlab.evaluate(char_run, split="valid")
    assert rep["tokens"] > 0 and math.isclose(rep["bits_per_char"], rep["loss"] / math.log(2))
    assert rep["loss"] < 2.0  # the corpus is three lines: a small model learns most of it
    assert main(["evaluate", str(char_run), "--split", "valid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(rep["loss"])


def test_word_level_perplexity_and_eos_lines(tmp_path):
    run = tmp_path / "run"
    seqlab.train(small_rnn(corpus(tmp_path), **{"task.tokenizer": "word", "task.bptt": 5, "train.epochs": 4}),
                 out=run, quiet=True)
    rep = seqlab.evaluate(run, split="valid")
    assert rep["perplexity"] == pytest.approx(math.exp(rep["loss"]))
    assert rep["perplexity"] < 6  # 20-odd word types, very regular text
    model = seqlab.load(run)
    text = model.predict(["the cat"], max_new_tokens=40, temperature=0)[0]["text"]
    assert text.startswith(" sat on the ") and "\n" in text  # <eos> ends a line
    assert set(text.split()) <= set(" ".join(VERSE).split())
    with pytest.warns(UserWarning, match="zebra"):
        model.predict(["the zebra"], max_new_tokens=3, seed=0)  # an unknown word reads as <unk>


def test_transformer_run_and_kv_cache_generation_equals_recompute(transformer_run):
    model = seqlab.load(transformer_run)
    assert isinstance(model.model, TransformerLM) and model.model.max_len == 16
    # 60 new tokens overflow the 16-token context several times: both modes cut the context alike
    for options in ({"temperature": 0}, {"temperature": 1.0, "top_k": 5, "seed": 3}):
        cached = list(model.stream("the cat", max_new_tokens=60, **options))
        recomputed = list(model.stream("the cat", max_new_tokens=60, use_cache=False, **options))
        assert cached == recomputed and len("".join(cached)) == 60


AWD_EMA = {"model.layers": 2, "model.weight_drop": 0.3, "model.dropout_words": 0.1, "model.dropout_input": 0.2,
           "model.dropout_hidden": 0.2, "model.dropout_output": 0.2, "train.ema": True, "train.ema_decay": 0.9,
           "train.ema_start": 3}


@pytest.mark.parametrize("extra", [{}, AWD_EMA], ids=["plain", "awd_ema"])
def test_exact_resume_mid_epoch_carries_the_hidden_state(tmp_path, monkeypatch, extra):
    """A run stopped by SIGTERM in the middle of an epoch and resumed ends with the same weights as one
    that ran through: the carried hidden state is part of the checkpoint (and, with AWD-LSTM's masks and the
    averaged weights, the RNG streams and the average: the kept, averaged, weights are the same too)."""
    path = corpus(tmp_path)
    over = small_rnn(path, **{"train.epochs": 2, **extra})
    seqlab.train(over, out=tmp_path / "through", quiet=True)

    original = LMTask.training_loss
    calls = {"n": 0}

    def stop_at_step_5(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer finishes the step, checkpoints and stops
        return original(self, model, batch)

    monkeypatch.setattr(LMTask, "training_loss", stop_at_step_5)
    with pytest.raises(seqlab.errors.Interrupted):
        seqlab.train(over, out=tmp_path / "stopped", quiet=True)
    state = torch.load(checkpoint_dirs(tmp_path / "stopped")[-1] / "train_state.pt", weights_only=True)
    assert state["step_in_epoch"] == 5 and len(state["task"]["hidden"]) == 2  # LSTM (h, c) mid-epoch
    monkeypatch.setattr(LMTask, "training_loss", original)
    seqlab.train(resume=tmp_path / "stopped", quiet=True)

    def weights(run):
        return torch.load(checkpoint_dirs(run)[-1] / "train_state.pt", weights_only=True)["optimizer"]

    a, b = weights(tmp_path / "through"), weights(tmp_path / "stopped")
    for sa, sb in zip(a[0]["state"].values(), b[0]["state"].values(), strict=True):
        torch.testing.assert_close(sa["exp_avg"], sb["exp_avg"], rtol=0, atol=0)
    last = [json.loads(x) for x in (tmp_path / "through" / "metrics.jsonl").read_text().splitlines()][-1]
    again = [json.loads(x) for x in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["loss"] == again["loss"]
    if extra:
        ema_a, ema_b = (torch.load(checkpoint_dirs(run)[-1] / "train_state.pt", weights_only=True)["ema"]
                        for run in (tmp_path / "through", tmp_path / "stopped"))
        assert ema_a is not None and ema_a.keys() == ema_b.keys()
        assert all(torch.equal(ema_a[n], ema_b[n]) for n in ema_a)
        kept_a, kept_b = (load_file(str(run / "model.safetensors")) for run in (tmp_path / "through",
                                                                                tmp_path / "stopped"))
        assert all(torch.equal(kept_a[n], kept_b[n]) for n in kept_a)


# ---------------------------------------------------------------- sampling
def test_sample_next_options():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, temperature=0).item() == 1
    assert sample_next(logits, top_k=1, generator=g).item() == 1
    assert sample_next(logits, top_p=0.01, generator=g).item() == 1
    draws = {sample_next(logits, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 3}
    probs = torch.softmax(logits[0], 0)  # 1: .64, 3: .24, 2: .09, 0: .03
    assert probs[1] < 0.7 < probs[1] + probs[3]
    draws = {sample_next(logits, top_p=0.7, generator=g).item() for _ in range(200)}
    assert draws == {1, 3}  # the smallest set reaching 0.7
    draws = {sample_next(logits, temperature=5.0, generator=g).item() for _ in range(200)}
    assert draws == {0, 1, 2, 3}


def test_sample_next_draws_what_torch_multinomial_draws():
    """The exponential race of `sample_next` is torch.multinomial's own draw of one sample: from the same generator
    state the same tokens, with the full distribution and with top-k's zeroed probabilities."""
    logits = torch.randn(1, 65, generator=torch.Generator().manual_seed(3)) * 3
    for top_k in (None, 5):
        ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        kept = logits if top_k is None else logits.masked_fill(logits < logits.topk(top_k).values[:, -1:],
                                                               float("-inf"))
        drawn = [sample_next(logits, top_k=top_k, generator=ours).item() for _ in range(2000)]
        assert drawn == [torch.multinomial(kept.softmax(-1), 1, generator=theirs).item() for _ in range(2000)]
        assert len(set(drawn)) == 5 if top_k else len(set(drawn)) > 5


@pytest.mark.parametrize("options,match", [
    ({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"max_new_tokens": -1}, "max_new_tokens"),
])
def test_bad_sampling_options(options, match):
    model = RNNLM(RNNLMConfig(hidden=8), vocab_size=10)
    with pytest.raises(ConfigError, match=match):
        list(generate_ids(model, [1, 2], **{"max_new_tokens": 3, **options}))


@pytest.mark.parametrize("make", [
    lambda: RNNLM(RNNLMConfig(hidden=8), vocab_size=10),
    lambda: TransformerLM(TransformerLMConfig(dim=8, heads=2, layers=1), vocab_size=10, max_len=8),
])
def test_generation_is_reproducible_with_a_seed_and_the_cache_changes_nothing(make):
    torch.manual_seed(0)
    model = make().eval()

    def run(seed, cache=True):
        tokens = generate_ids(model, [1, 2, 3], 30, temperature=1.5, seed=seed, banned=[0], use_cache=cache)
        return list(tokens)

    a = run(7)
    assert a == run(7) == run(7, cache=False)
    assert a != run(8)
    assert len(a) == 30 and 0 not in a


# ---------------------------------------------------------------- the generate CLI and bad input
def test_generate_cli_streams_a_reproducible_continuation(char_run, capsys):
    args = ["generate", str(char_run), "--prompt", "the cat", "--max-new-tokens", "40", "--seed", "5",
            "--temperature", "0.8", "--top-k", "10", "--top-p", "0.95"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("the cat") and len(out) == len("the cat") + 40 + 1
    assert main(args) == 0
    assert capsys.readouterr().out == out
    assert main(args[:-6] + ["--seed", "6"]) == 0
    assert capsys.readouterr().out != out


@pytest.mark.parametrize("prompt,match", [("", "empty prompt"), ("the 🐈 sat", "never saw: '🐈'")])
def test_generate_cli_bad_prompts(char_run, capsys, prompt, match):
    assert main(["generate", str(char_run), "--prompt", prompt]) == 2
    captured = capsys.readouterr()
    assert match in captured.err and captured.out == ""


def test_generate_cli_bad_options_and_runs(char_run, tmp_path, capsys):
    assert main(["generate", str(char_run), "--prompt", "the", "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "the"]) == 2
    assert "run directory not found" in capsys.readouterr().err
    seqlab.train(None, {**tiny_classification(tmp_path), "train.epochs": 1, "model.dim": 8},
                 out=tmp_path / "cls", quiet=True)
    assert main(["generate", str(tmp_path / "cls"), "--prompt", "the"]) == 2
    assert "which `seqlab generate` does not take; use `seqlab predict`" in capsys.readouterr().err


def test_mismatched_checkpoint_is_a_clear_error(char_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg.replace("hidden: 24", "hidden: 32"))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        seqlab.load(run)
    (run / "config.yaml").write_text(cfg.replace("tokenizer: char", "tokenizer: word"))
    with pytest.raises(CheckpointError, match="tokenizer"):
        seqlab.load(run)
    (run / "config.yaml").write_text(cfg)
    (run / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a seqlab tokenizer"):
        seqlab.load(run)


def test_bpe_streaming_never_splits_a_character(tmp_path, monkeypatch):
    """Byte-level BPE may draw a UTF-8 character one byte at a time: the stream waits for its last byte."""
    text = "café crème brûlée à la carte, señor\nnaïve façade déjà vu\n" * 30
    path = tmp_path / "fr.txt"
    path.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    seqlab.train(small_rnn(path, **{"task.tokenizer": "bpe", "task.vocab_size": 300}), out=run, quiet=True)
    model = seqlab.load(run)
    pieces = list(model.stream("caf", max_new_tokens=50, seed=1))
    assert "".join(pieces) == model.predict(["caf"], max_new_tokens=50, seed=1)[0]["text"]
    tk = TextTokenizer.load(run / "tokenizer.json")
    e_acute = [tk.token_to_id("Ã"), tk.token_to_id("©")]  # the bytes C3 A9 of "é", in GPT-2's byte alphabet
    assert tk.decode(e_acute) == "é"
    monkeypatch.setattr("seqlab.tasks.lm.generate_ids", lambda *a, **k: iter([*e_acute, tk.token_to_id("x")]))
    assert list(model.stream("caf")) == ["é", "x"]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="vocab_size"):
        make_config({"task": "lm", "task.tokenizer": "bpe"})
    with pytest.raises(ConfigError, match="task.tokenizer"):
        make_config({"task": "lm", "task.tokenizer": "sentencepiece"})
    with pytest.raises(ConfigError, match="bptt"):
        make_config({"task": "lm", "task.bptt": 0})
    with pytest.raises(DataError, match="too short"):
        make_task(corpus(tmp_path, lines=1), **{"train.batch_size": 4000})


# ---------------------------------------------------------------------------------------------- corpora
def test_a_corpus_is_the_texts_of_any_classify_format_labels_ignored(tmp_path):
    rows = tiny_classification(tmp_path)  # "label","text" CSV files
    train = tmp_path / "more.jsonl"
    train.write_text('{"text": "a zesty film", "id": 1}\n{"text": "<br />wow!", "id": 2}\n', encoding="utf-8")
    task = make_task(rows["data.train"], **{"task.tokenizer": "basic_english"})
    csv_words = set(task.tokenizer.decode(task.splits["train"].tolist()).split())
    assert "film" in csv_words and "pos" not in csv_words and "neg" not in csv_words  # labels are not text
    assert list(task.documents((rows["data.train"], str(train))))[-2:] == ["a zesty film", "<br />wow!"]
    assert task.tokenizer.encode("<br />Wow!") == task.tokenizer.encode("wow !")  # basic_english, as classify


def test_the_leak_guard_drops_the_texts_of_excluded_files(tmp_path):
    rows = tiny_classification(tmp_path)
    train_texts = [line.split('","')[1].rstrip('"\n') for line in open(rows["data.train"])]
    held = tmp_path / "heldout.jsonl"  # five of them, as another split would hold them (case and spaces aside)
    held.write_text("".join(json.dumps({"text": "  " + t.upper(), "label": "x"}) + "\n" for t in train_texts[:5]))
    shared = sum(1 for t in train_texts if t in set(train_texts[:5]))
    task = make_task(rows["data.train"], **{"task.tokenizer": "word", "task.exclude": [str(held)]})
    assert task.counts["excluded_texts"] == {"train": shared}
    eos = task.tokenizer.eos_id
    assert int((task.splits["train"] == eos).sum() + (task.splits["valid"] == eos).sum()) == len(train_texts) - shared


@pytest.mark.parametrize("entry, message", [("nope.txt", "neither a file nor NAME:SPLIT"),
                                             ("sample:valid", "has no split 'valid'"),
                                             ("sample:dev", "has no split 'dev'")])
def test_a_bad_exclude_entry_is_a_config_error(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message):
        make_task(corpus(tmp_path), **{"task.exclude": [entry]})


def test_token_cache_refuses_what_it_cannot_cache(tmp_path):
    rows = tiny_classification(tmp_path)
    with pytest.raises(ConfigError, match="token_cache caches plain text files"):
        make_task(rows["data.train"], **{"task.token_cache": str(tmp_path / "cache")})


def test_without_a_progress_bar_a_line_tells_the_rate_and_eta(tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("seqlab.train.trainer"), "NOTE_SECONDS", 0.0)
    lines = []
    seqlab.train(small_rnn(corpus(tmp_path), **{"train.log_every": 2}), out=tmp_path / "run", log=lines.append)
    notes = [line for line in lines if "tokens/s" in line]
    assert notes and all("epoch ETA" in line and "step" in line for line in notes), lines
