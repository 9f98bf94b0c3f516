"""train.average_last: the mean of the weights at the last epoch ends is evaluated on valid after the last epoch,
kept when it beats the best epoch (else the best epoch stays), resumed exactly from a checkpoint, bad values."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from seqlab.config import build_dataclass
from seqlab.errors import ConfigError
from seqlab.train.config import TrainConfig
from seqlab.train.trainer import Trainer
from tests.test_trainer_ema import ToyTask


def trainer_for(tmp_path, task: ToyTask | None = None, **options) -> tuple[ToyTask, Trainer]:
    tmp_path.mkdir(exist_ok=True)
    torch.manual_seed(0)
    task = task or ToyTask()
    cfg = build_dataclass(TrainConfig, {"epochs": 4, "lr": 0.05, "schedule": "constant", **options}, "train")
    return task, Trainer(task, nn.Linear(3, 1), cfg, tmp_path, torch.device("cpu"), log=None, progress=False)


class Scripted(ToyTask):
    """The toy regression with valid losses given in advance (one per evaluation): which weights win is known."""

    def __init__(self, losses: list[float]):
        super().__init__()
        self.losses = losses

    def evaluate(self, model, split):
        super().evaluate(model, split)
        loss = self.losses[len(self.evaluated) - 1]
        self.evaluated[-1] = (loss, self.evaluated[-1][1])
        return {"loss": loss}


def records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_mean_of_the_last_epochs_is_evaluated_and_kept_when_better(tmp_path):
    task, trainer = trainer_for(tmp_path, Scripted([3.0, 2.0, 1.0, 1.5, 0.5]), average_last=3)
    result = trainer.fit()
    ends = [w for _, w in task.evaluated[:4]]  # the raw weights at each epoch end
    mean = {n: (ends[1][n] + ends[2][n] + ends[3][n]) / 3 for n in ends[0]}
    assert len(task.evaluated) == 5  # 4 epoch ends, then the mean of the last 3
    assert all(torch.allclose(task.evaluated[4][1][n], mean[n], atol=1e-7) for n in mean)
    assert not all(torch.allclose(ends[3][n], mean[n]) for n in mean)
    averaged = [r for r in records(tmp_path) if r["split"] == "valid_average"]
    assert len(averaged) == 1 and averaged[0]["epochs"] == [2, 4] and averaged[0]["loss"] == 0.5
    assert result["valid"] == {"loss": 0.5, "epoch": 4, "averaged_epochs": 3}
    kept = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.allclose(kept[n], mean[n], atol=1e-7) for n in kept)


def test_a_worse_mean_leaves_the_best_epoch(tmp_path):
    task, trainer = trainer_for(tmp_path, Scripted([1.0, 2.0, 3.0, 4.0, 5.0]), average_last=2)
    result = trainer.fit()
    assert len(task.evaluated) == 5 and result["valid"] == {"loss": 1.0, "epoch": 1}
    kept = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(kept[n], task.evaluated[0][1][n]) for n in kept)


def test_a_later_best_epoch_replaces_a_kept_mean(tmp_path):
    """A finished run whose mean was kept, resumed with more epochs: a better new epoch is no mean."""
    _, first = trainer_for(tmp_path, Scripted([3.0, 2.0, 1.0, 1.5, 0.5]), average_last=2, checkpoint_seconds=0)
    first.fit()
    _, more = trainer_for(tmp_path, Scripted([0.1, 0.4]), average_last=2, checkpoint_seconds=0, epochs=5)
    assert more.fit(resume=True)["valid"] == {"loss": 0.1, "epoch": 5}


def test_off_by_default_and_with_one(tmp_path):
    for i, options in enumerate(({}, {"average_last": 1})):
        task, trainer = trainer_for(tmp_path / str(i), **options)
        trainer.fit()
        assert trainer.snapshots == [] and len(task.evaluated) == 4  # the epochs' only: no average


def test_a_resumed_run_averages_the_same_weights(tmp_path):
    """Stopped after epoch 2 and resumed: the snapshots come back from the checkpoint, so the mean equals that
    of the run that was never stopped."""
    whole_task, whole = trainer_for(tmp_path / "whole", average_last=3, checkpoint_seconds=0)
    whole.fit()
    _, first = trainer_for(tmp_path / "cut", average_last=3, checkpoint_seconds=0, epochs=2)
    first.fit()
    resumed_task, resumed = trainer_for(tmp_path / "cut", average_last=3, checkpoint_seconds=0)
    resumed.fit(resume=True)
    a, b = whole_task.evaluated[4][1], resumed_task.evaluated[2][1]  # the averages' evaluations
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert len(resumed.snapshots) == 3


def test_average_last_with_ema_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="average_last and train.ema"):
        build_dataclass(TrainConfig, {"average_last": 3, "ema": True}, "train")
