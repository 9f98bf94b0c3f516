"""Task `image` end to end: digits, IDX files and image folders through seqlab.api and seqlab.cli.main;
the fixed digits test split, normalisation, shift augmentation, prediction from files."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

import seqlab
from seqlab.cli import main
from seqlab.config import make_config
from seqlab.data.images import load_digits_arrays
from seqlab.errors import ConfigError, DataError, LabelError
from seqlab.tasks.image import ImageTask, random_shift

SMALL = {"task": "image", "model.channels": [8], "model.hidden": [32], "train.optimizer": "adam",
         "train.lr": 0.01, "train.schedule": "constant", "train.batch_size": 32}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return seqlab.train(None, {**SMALL, "train.epochs": 3}, out=tmp_path_factory.mktemp("img") / "digits", quiet=True)


def test_digits_train_evaluate_and_report(digits_run, capsys):
    last = json.loads((digits_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "test" and last["accuracy"] > 0.85
    assert main(["evaluate", str(digits_run), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["examples"] == 359 and set(rep["per_class"]) == {str(d) for d in range(10)}
    assert rep["accuracy"] == pytest.approx(last["accuracy"]) and {"macro_f1", "loss"} <= set(rep)
    assert sum(map(sum, rep["confusion_matrix"]["matrix"])) == 359
    assert main(["evaluate", str(digits_run)]) == 0
    assert "confusion matrix" in capsys.readouterr().out


def test_predict_from_an_image_file_equals_predict_from_the_array(digits_run, tmp_path, capsys):
    x, _ = load_digits_arrays()
    Image.fromarray(x[5, 0]).save(tmp_path / "five.png")  # an 8x8 grey PNG
    Image.fromarray(np.kron(x[5, 0], np.ones((4, 4), np.uint8))).convert("RGB").save(tmp_path / "big.png")
    model = seqlab.load(digits_run)
    from_array = model.predict(x[5])[0]
    from_file, big = model.predict([str(tmp_path / "five.png"), str(tmp_path / "big.png")], top_k=3)
    assert from_file["label"] == from_array["label"]
    assert from_file["probability"] == pytest.approx(from_array["probability"], abs=1e-6)
    assert len(big["top_k"]) == 3 and big["label"] in model.labels()
    assert main(["predict", str(digits_run), str(tmp_path / "five.png")]) == 0
    label, p = capsys.readouterr().out.strip().split("\t")
    assert label == from_array["label"] and float(p) == pytest.approx(from_array["probability"], abs=1e-4)
    assert main(["predict", str(digits_run), str(tmp_path / "five.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == label
    assert main(["predict", str(digits_run), str(tmp_path / "missing.png")]) == 2
    assert "no such image file" in capsys.readouterr().err


def test_digits_test_split_is_fixed_across_seeds_and_normalised_to_zero_mean():
    tasks = []
    for seed in (0, 1):
        task = ImageTask(make_config(None, {"task": "image", "seed": seed}), torch.device("cpu"), log=None)
        task.prepare()
        tasks.append(task)
    a, b = tasks
    assert np.array_equal(a.splits["test"].images, b.splits["test"].images)
    assert not np.array_equal(a.splits["valid"].images, b.splits["valid"].images)
    assert len(a.splits["train"].labels) + len(a.splits["valid"].labels) + len(a.splits["test"].labels) == 1797
    x = a.to_input(a.splits["train"].images)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-2


def test_shift_moves_every_image_by_at_most_s_pixels():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 7, 7)
    x[:, 0, 3, 3] = 1.0
    out = random_shift(x, 2)
    assert out.shape == x.shape and torch.all(out.sum(dim=(1, 2, 3)) == 1)
    where = out[:, 0].flatten(1).argmax(1)
    rows, cols = where // 7, where % 7
    assert rows.min() == 1 and rows.max() == 5 and cols.min() == 1 and cols.max() == 5
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10


def write_idx(path, array, code):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(">u1").tobytes()))


def stripes(n, seed, size=8):
    """Images of class 0 (a bright row) and class 1 (a bright column), at random places."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    y = np.arange(n) % 2
    for i in range(n):
        k = rng.integers(1, size - 1)
        if y[i] == 0:
            x[i, k, :] = 255
        else:
            x[i, :, k] = 255
    return x, y


def test_idx_files_by_the_mnist_naming_scheme(tmp_path):
    for split, seed in (("train", 0), ("t10k", 1)):
        x, y = stripes(60, seed)
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", x, 0x08)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", y, 0x08)
    over = {**SMALL, "train.epochs": 8, "data.format": "idx",
            "data.train": str(tmp_path / "train-images-idx3-ubyte.gz"),
            "data.test": str(tmp_path / "t10k-images-idx3-ubyte.gz")}
    run = seqlab.train(None, over, out=tmp_path / "run", quiet=True)
    rep = seqlab.evaluate(run)
    assert rep["examples"] == 60 and rep["accuracy"] > 0.9 and set(rep["per_class"]) == {"0", "1"}
    (tmp_path / "odd.gz").write_bytes(b"")
    with pytest.raises(ConfigError, match="MNIST file names"):
        seqlab.train(None, {**over, "data.train": str(tmp_path / "odd.gz")}, out=tmp_path / "r2", quiet=True)


def write_folder(root, n, seed, size=8, classes=("column", "row")):
    x, y = stripes(n, seed, size)
    for i in range(n):
        d = root / classes[1 - y[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([x[i]] * 3, axis=-1)).save(d / f"{i}.png")
    return root


def test_image_folders_with_class_names_and_resizing(tmp_path, capsys):
    train = write_folder(tmp_path / "train", 40, 0)
    test = write_folder(tmp_path / "test", 10, 1, size=12)
    over = {**SMALL, "train.epochs": 2, "data.train": str(train), "data.test": str(test)}
    with pytest.raises(DataError, match="model takes 3x8x8"):
        seqlab.train(None, over, out=tmp_path / "r1", quiet=True)
    run = seqlab.train(None, {**over, "task.size": 8}, out=tmp_path / "r2", quiet=True)
    model = seqlab.load(run)
    assert model.labels() == ["column", "row"] and model.task.shape == (3, 8, 8)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 10
    odd = write_folder(tmp_path / "odd", 4, 2, classes=("column", "diagonal"))
    with pytest.raises(LabelError, match="diagonal"):
        seqlab.evaluate(run, data=str(odd))


def test_unknown_dataset_and_format_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown image dataset 'mnist'"):
        seqlab.train(None, {"task": "image", "dataset": "mnist"}, out=tmp_path / "a", quiet=True)
    with pytest.raises(ConfigError, match="data.format must be one of auto, folder, idx"):
        seqlab.train(None, {"task": "image", "data.format": "csv"}, out=tmp_path / "b", quiet=True)
    with pytest.raises(ConfigError, match="task.normalize"):
        make_config(None, {"task": "image", "task.normalize": "zscore"})
