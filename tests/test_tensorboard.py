"""`train.tensorboard=true`: metrics.jsonl's figures as TensorBoard events, read back with TensorBoard's own
event reader; a run per trial under `seqlab tune`; a missing package is one clear error."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import seqlab  # noqa: E402
from seqlab.errors import ConfigError  # noqa: E402
from tests.helpers import tiny_classification  # noqa: E402


def events(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def test_every_logged_figure_is_a_tensorboard_scalar_at_its_step(tmp_path):
    data = tiny_classification(tmp_path)
    run = seqlab.train(None, {**data, "train.tensorboard": True, "train.log_every": 5, "train.epochs": 3},
                       out=tmp_path / "run", quiet=True)
    acc = events(run / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/examples_per_s", "train_epoch/loss", "train_epoch/seconds",
            "valid/accuracy", "valid/loss", "test/accuracy", "test/macro_f1"} <= tags
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for split, name in (("valid", "accuracy"), ("train", "lr"), ("train", "loss")):
        logged = [(r["step"], r[name]) for r in records if r["split"] == split]
        read = [(e.step, e.value) for e in acc.Scalars(f"{split}/{name}")]
        assert [s for s, _ in read] == [s for s, _ in logged]
        assert [v for _, v in read] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert len(acc.Scalars("valid/accuracy")) == 3  # one per epoch


def test_without_the_flag_no_event_files_are_written(tmp_path):
    run = seqlab.train(None, {**tiny_classification(tmp_path), "train.epochs": 1}, out=tmp_path / "run", quiet=True)
    assert not (run / "tensorboard").exists()


def test_a_missing_tensorboard_package_is_one_clear_error_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"needs the tensorboard package"):
        seqlab.train(None, {**tiny_classification(tmp_path), "train.tensorboard": True}, out=tmp_path / "run",
                     quiet=True)
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_a_resumed_run_purges_the_events_after_its_checkpoint(tmp_path):
    """A run that dies after epoch 3's evaluation, before its checkpoint (the last is epoch 2's), then resumed:
    the events the dead run wrote after that checkpoint are replaced, so each step appears once."""
    data = tiny_classification(tmp_path)

    class Died(Exception):
        pass

    def die(n, _valid):
        if n == 3:
            raise Died

    common = {**data, "train.tensorboard": True, "train.log_every": 1, "train.epochs": 6,
              "train.checkpoint_seconds": 0, "train.early_stopping": None}
    with pytest.raises(Died):
        seqlab.train(None, common, out=tmp_path / "run", quiet=True, on_valid=die)
    seqlab.train(None, [], resume=tmp_path / "run", quiet=True)
    acc = events(tmp_path / "run" / "tensorboard")
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(1, steps[-1] + 1))  # every step once, in order
    assert len(acc.Scalars("valid/accuracy")) == 6  # epoch 3's evaluation once, not twice


def test_seqlab_tune_writes_a_tensorboard_run_per_trial(tmp_path):
    pytest.importorskip("optuna")
    data = tiny_classification(tmp_path)
    out = tmp_path / "study"
    seqlab.tune(None, {**data, "train.tensorboard": True, "train.epochs": 2}, out=out, trials=2, quiet=True)
    for n in (0, 1):
        assert "valid/accuracy" in events(out / "trials" / str(n) / "tensorboard").Tags()["scalars"]
