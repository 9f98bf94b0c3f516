"""Task caption end to end on synthetic pictures: training overfits a few images to their exact captions,
metrics, the run directory, `seqlab caption` (with --plot-attention) and bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from seqlab import api
from seqlab.cli import main
from seqlab.errors import ConfigError, DataError
from seqlab.tasks.caption import bleu_scores, caption_words

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def write_data(root):
    img = root / "img"
    img.mkdir()
    rows = []
    for i, (name, rgb) in enumerate(COLORS.items()):
        a = np.full((24, 24, 3), 60, np.uint8)
        a[2 + 6 * i: 12 + 6 * i, 4:14] = rgb
        Image.fromarray(a).save(img / f"{name}.jpg", quality=95)
        rows.append({"image": f"{name}.jpg", "captions": [f"a {name} square on grey .", f"a {name} square on grey ."]})
    (root / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return img, root / "c.jsonl"


def config(img, captions, model="rnn"):
    return {"task": "caption", "model": model, "task.images": str(img), "task.size": 16, "task.min_freq": 1,
            "task.beam": 2, "data.train": str(captions), "data.valid": str(captions), "data.test": str(captions),
            "model.channels": [8, 16], "model.dropout": 0.0, "train.epochs": 40, "train.batch_size": 3,
            "train.optimizer": "adam", "train.lr": 0.01, "train.schedule": "constant", "threads": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("caption")
    import os

    os.environ["SEQLAB_CACHE"] = str(root / "cache")
    img, captions = write_data(root)
    cfg = {**config(img, captions), "model.hidden": 64, "model.dim": 32, "model.attention_dim": 32,
           "task.attention_reg": 1.0}
    run_dir = api.train(cfg, out=root / "run", quiet=True, log=None)
    return run_dir, img


def test_caption_words():
    assert caption_words("A dog, running .") == ["a", "dog", ",", "running"]
    assert caption_words("Two dogs.") == ["two", "dogs"]


def test_bleu_against_all_references():
    assert bleu_scores(["a b c d"], [["a b c d", "x y"]])["bleu4"] == pytest.approx(100.0)
    assert bleu_scores(["a b c d"], [["x y z w"]])["bleu1"] == 0.0


def test_overfits_its_images_and_writes_metrics(run):
    run_dir, img = run
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    test = lines[-1]
    assert test["split"] == "test"
    for key in ("bleu1", "bleu4", "cider", "greedy_bleu4", "greedy_cider", "perplexity", "images_per_s"):
        assert key in test
    assert test["greedy_bleu4"] == pytest.approx(100.0) and test["greedy_cider"] > 1.0
    assert (run_dir / "tokenizer.json").is_file() and (run_dir / "captions.json").is_file()
    captioner = api.load(run_dir)
    out = captioner.predict([str(img / f"{c}.jpg") for c in COLORS], beam=1)
    assert [r["caption"] for r in out] == [f"a {c} square on grey" for c in COLORS]
    # batched == one at a time, through the predictor (beam search)
    batched = captioner.predict([str(img / f"{c}.jpg") for c in COLORS], beam=2)
    single = [captioner.predict(str(img / f"{c}.jpg"), beam=2)[0] for c in COLORS]
    assert [r["caption"] for r in batched] == [r["caption"] for r in single]


def test_caption_cli_with_attention_plot(run, tmp_path, capsys):
    run_dir, img = run
    out = tmp_path / "att.png"
    assert main(["caption", str(run_dir), str(img / "red.jpg"), "--json", "--plot-attention", str(out)]) == 0
    r = json.loads(capsys.readouterr().out.strip())
    assert r["caption"] == "a red square on grey" and r["image"].endswith("red.jpg")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(out).size[0] > 100
    assert main(["caption", str(run_dir), str(tmp_path / "missing.jpg")]) == 2
    assert "no such image file" in capsys.readouterr().err


def test_caption_for_unknown_image_and_corrupt_jpeg(tmp_path):
    import os

    os.environ["SEQLAB_CACHE"] = str(tmp_path / "cache")
    img, captions = write_data(tmp_path)
    captions.write_text(captions.read_text() + json.dumps({"image": "ghost.jpg", "captions": ["boo"]}) + "\n")
    with pytest.raises(DataError, match="unknown image ghost.jpg"):
        api.train(config(img, captions), out=tmp_path / "r1", quiet=True, log=None)
    captions.write_text("".join(x + "\n" for x in captions.read_text().splitlines()[:3]))
    (img / "red.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="red.jpg"):
        api.train(config(img, captions), out=tmp_path / "r2", quiet=True, log=None)


def test_picture_from_bytes_and_arrays(run):
    run_dir, img = run
    captioner = api.load(run_dir)
    from_file = captioner.load_input(str(img / "red.jpg"))
    assert from_file.shape == (16, 16, 3)
    assert np.array_equal(captioner.load_input((img / "red.jpg").read_bytes()), from_file)
    big = np.asarray(Image.open(img / "red.jpg"))
    assert captioner.predict([big], beam=1)[0]["caption"] == "a red square on grey"
    with pytest.raises(DataError, match="uploaded image"):
        captioner.load_input(b"not an image")


def test_concept_targets_hold_every_caption_word_of_each_image_and_no_special(run):
    """Issue 23's visual concepts: the multi-label target of each image is the words of all of its captions."""
    from seqlab.data.batching import Packed
    from seqlab.tasks.caption import CaptionSplit

    task = api.load(run[0]).task
    tok = task.tok
    red, grey, square, blue = (tok.token_to_id(w) for w in ("red", "grey", "square", "blue"))
    tokens = Packed.from_lists([[blue], [red, square], [tok.unk_id, grey], [tok.eos_id]])
    sp = CaptionSplit(["a", "b"], np.zeros((2, 3, 16, 16), np.uint8), [["x"], ["y", "z", "w"]], tokens,
                      np.array([0, 1]), np.array([1, 3]), "")
    target = task.concept_targets(sp, np.array([1, 0]))
    assert target.shape == (2, tok.vocab_size) and target.dtype == torch.float32
    assert sorted(np.flatnonzero(target[0]).tolist()) == sorted([red, square, grey])  # image 1: captions 1-3
    assert np.flatnonzero(target[1]).tolist() == [blue]
    assert target[:, [tok.unk_id, tok.eos_id, tok.pad_id]].sum() == 0  # no specials, no <unk>


def test_a_concept_head_learns_which_words_describe_each_picture(tmp_path):
    """model.concepts=true: the task's multi-label loss trains the head; each picture's colour word gets a high
    probability, the other colours a low one (and the captions are still learnt)."""
    import os

    os.environ["SEQLAB_CACHE"] = str(tmp_path / "cache")
    img, captions = write_data(tmp_path)
    cfg = {**config(img, captions), "model.hidden": 64, "model.dim": 32, "model.attention_dim": 32,
           "model.concepts": True, "task.concept_loss": 1.0, "train.epochs": 30}
    run_dir = api.train(cfg, out=tmp_path / "run", quiet=True, log=None)
    captioner = api.load(run_dir)
    out = captioner.predict([str(img / f"{c}.jpg") for c in COLORS], beam=1)
    assert [r["caption"] for r in out] == [f"a {c} square on grey" for c in COLORS]
    task, model = captioner.task, captioner.model
    pixels = np.stack([captioner.load_input(str(img / f"{c}.jpg")).transpose(2, 0, 1) for c in COLORS])
    with torch.no_grad():
        probs = torch.sigmoid(model.encode(task.to_input(pixels)).concepts)  # (3, V)
    ids = [task.tok.token_to_id(c) for c in COLORS]
    own = probs[:, ids].diagonal()
    others = probs[:, ids][~torch.eye(3, dtype=torch.bool)]
    assert own.min() > 0.5 > others.max(), (own, others)  # without the loss (measured): others up to 1.0
    assert probs[:, task.tok.unk_id].max() < 0.5


def test_concept_pretraining_teaches_the_encoder_before_the_captions(tmp_path):
    """task.concept_epochs: the encoder and concept head train alone first. With the concept loss off in the
    one caption epoch (a single step), what the head knows comes from the pretraining: it tells the colours
    apart. The passes are logged and recorded; without a concept head it is a config error."""
    import os

    os.environ["SEQLAB_CACHE"] = str(tmp_path / "cache")
    img, captions = write_data(tmp_path)
    logs = []
    cfg = {**config(img, captions), "model.concepts": True, "task.concept_loss": 0.0, "task.concept_epochs": 40,
           "train.epochs": 1}
    run_dir = api.train(cfg, out=tmp_path / "run", log=logs.append)
    assert sum("concepts " in line for line in logs) == 40
    captioner = api.load(run_dir)
    record = captioner.task.counts["concept_pretraining"]
    assert len(record) == 40 and record[-1]["loss"] < record[0]["loss"] and "valid_loss" in record[-1]
    pixels = np.stack([captioner.load_input(str(img / f"{c}.jpg")).transpose(2, 0, 1) for c in COLORS])
    with torch.no_grad():
        probs = torch.sigmoid(captioner.model.encode(captioner.task.to_input(pixels)).concepts)
    ids = [captioner.task.tok.token_to_id(c) for c in COLORS]
    own, others = probs[:, ids].diagonal(), probs[:, ids][~torch.eye(3, dtype=torch.bool)]
    assert own.min() > 0.5 > others.max(), (own, others)
    with pytest.raises(ConfigError, match="model.concepts=true"):
        api.train({**cfg, "model.concepts": False}, out=tmp_path / "r2", quiet=True, log=None)
    assert not (tmp_path / "r2").exists()


def test_self_critical_epochs_raise_the_cider_reward_of_the_drawn_captions(tmp_path):
    """task.scst_epochs: the last N epochs draw task.scst_samples captions per picture and follow the CIDEr-D
    reward (baseline: the picture's other samples); the mean reward of those epochs rises, they log it, and
    the epochs before train by teacher forcing (no reward)."""
    import os

    os.environ["SEQLAB_CACHE"] = str(tmp_path / "cache")
    img, captions = write_data(tmp_path)
    logs = []
    cfg = {**config(img, captions), "model.hidden": 32, "model.dim": 16, "model.attention_dim": 16,
           "train.epochs": 34, "task.scst_epochs": 30, "task.scst_samples": 8}
    run_dir = api.train(cfg, out=tmp_path / "run", log=logs.append)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["split"] == "train_epoch"]
    assert [("reward" in r) for r in epochs] == [False] * 4 + [True] * 30
    rewards = [r["reward"] for r in epochs[4:]]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 1.0, rewards  # measured: 0.50 -> 2.27
    assert all(0.0 <= r <= 10.0 for r in rewards)
    task = api.load(run_dir).task
    task.start_epoch(3, 34)  # the last 30 of 34 planned epochs
    assert task.scst is False and task.opt.scst_samples == 8
    task.start_epoch(4, 34)
    assert task.scst is True
    with pytest.raises(ConfigError, match="scst_samples"):
        api.train({**cfg, "task.scst_samples": 1}, out=tmp_path / "r2", quiet=True, log=None)
