"""train.budget_seconds: after each epoch of the first half of the run, the run plans as many epochs as fit in the
budget at the mean measured epoch time (train.epochs at most), the schedule decays over them, a resumed run keeps
the plan.

The trainer's clock is replaced by one that only the training steps and evaluations advance, so the epoch time
(and with it the plan) is exact."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from seqlab.config import build_dataclass
from seqlab.errors import ConfigError
from seqlab.train import trainer as trainer_module
from seqlab.train.config import TrainConfig
from seqlab.train.trainer import Trainer
from tests.test_trainer_ema import STEPS, ToyTask

STEP_SECONDS, EVAL_SECONDS = 1.0, 2.0  # an epoch: 4 steps and a valid evaluation = 6 s


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Timed(ToyTask):
    """The toy regression whose steps and evaluations take known time on `clock`; records each step's lr."""

    def __init__(self, clock: Clock, first_step: float = STEP_SECONDS):
        super().__init__()
        self.clock, self.trainer, self.first_step = clock, None, first_step
        self.lrs: list[float] = []

    def training_loss(self, model, batch):
        self.clock.now += self.first_step if not self.lrs else STEP_SECONDS
        self.lrs.append(self.trainer.schedule.get_lr())
        return super().training_loss(model, batch)

    def evaluate(self, model, split):
        self.clock.now += EVAL_SECONDS
        return super().evaluate(model, split)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=c))
    return c


def trainer_for(tmp_path, clock: Clock, first_step: float = STEP_SECONDS, **options) -> tuple[Timed, Trainer]:
    tmp_path.mkdir(exist_ok=True)
    torch.manual_seed(0)
    task = Timed(clock, first_step)
    cfg = build_dataclass(TrainConfig, {"epochs": 10, "lr": 0.05, "schedule": "linear", **options}, "train")
    task.trainer = Trainer(task, nn.Linear(3, 1), cfg, tmp_path, torch.device("cpu"), log=None, progress=False)
    return task, task.trainer


def records(run, split: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_the_epochs_that_fit_are_run_and_the_schedule_decays_over_them(tmp_path, clock):
    task, trainer = trainer_for(tmp_path, clock, budget_seconds=20.0)  # 20 // 6 = 3 epochs of the 10
    trainer.fit()
    assert trainer.epoch == 3 and len(task.lrs) == 3 * STEPS
    assert records(tmp_path, "budget") == [{"split": "budget", "epoch": 1, "step": STEPS, "epoch_seconds": 6.0,
                                            "epochs": 3}]
    assert [r["epoch"] for r in records(tmp_path, "valid")] == [1, 2, 3]
    # epoch 1 follows the linear decay over 10 epochs (40 steps), then over the 3 planned (12 steps) to 0
    assert task.lrs[:STEPS] == pytest.approx([0.05 * (1 - s / 40) for s in range(STEPS)])
    assert task.lrs[STEPS:] == pytest.approx([0.05 * (1 - s / 12) for s in range(STEPS, 3 * STEPS)])
    assert trainer.schedule.get_lr() == pytest.approx(0.0)


def test_a_slow_first_epoch_is_averaged_out_in_the_first_half_of_the_run(tmp_path, clock):
    # epoch 1 takes 12 s (a first step of 7 s), the others 6 s: the plan follows the mean epoch time while no
    # more than half of the planned epochs are done (60 // 12 = 5, 60 // 9 = 6, 60 // 8 = 7), then stays
    task, trainer = trainer_for(tmp_path, clock, first_step=7.0, budget_seconds=60.0)
    trainer.fit()
    assert [(r["epoch"], r["epoch_seconds"], r["epochs"]) for r in records(tmp_path, "budget")] == [
        (1, 12.0, 5), (2, 9.0, 6), (3, 8.0, 7)]
    assert trainer.epoch == 7 and len(task.lrs) == 7 * STEPS
    assert task.lrs[3 * STEPS:] == pytest.approx([0.05 * (1 - s / 28) for s in range(3 * STEPS, 7 * STEPS)])
    assert trainer.schedule.get_lr() == pytest.approx(0.0)


def test_train_epochs_stays_the_most(tmp_path, clock):
    task, trainer = trainer_for(tmp_path, clock, epochs=2, budget_seconds=600.0)
    trainer.fit()
    assert trainer.epoch == 2 and records(tmp_path, "budget")[0]["epochs"] == 2


def test_at_least_the_first_epoch(tmp_path, clock):
    task, trainer = trainer_for(tmp_path, clock, budget_seconds=1.0)
    trainer.fit()
    assert trainer.epoch == 1 and len(task.lrs) == STEPS


def test_without_a_budget_the_epochs_are_train_epochs(tmp_path, clock):
    task, trainer = trainer_for(tmp_path, clock, epochs=3)
    trainer.fit()
    assert trainer.epoch == 3 and not records(tmp_path, "budget")
    assert task.lrs == pytest.approx([0.05 * (1 - s / 12) for s in range(12)])


@pytest.mark.parametrize("first_step, budget, planned", [(STEP_SECONDS, 20.0, [3]), (7.0, 60.0, [5, 6, 7])])
def test_a_resumed_run_keeps_the_planned_epochs_and_rates(tmp_path, clock, first_step, budget, planned):
    whole, trainer = trainer_for(tmp_path / "whole", clock, first_step, budget_seconds=budget)
    trainer.fit()

    class Stop(Exception):
        pass

    part, first = trainer_for(tmp_path / "part", clock, first_step, budget_seconds=budget, checkpoint_seconds=0)
    real_end = first._end_epoch

    def end_then_stop(has_valid):  # interrupted right after epoch 2's checkpoint
        real_end(has_valid)
        if first.epoch == 2:
            raise Stop

    first._end_epoch = end_then_stop
    with pytest.raises(Stop):
        first.fit()
    rest, second = trainer_for(tmp_path / "part", clock, STEP_SECONDS, budget_seconds=budget, checkpoint_seconds=0)
    second.fit(resume=True)  # the seconds spent before the interruption count: epoch 3 is planned as in one run
    assert second.epoch == planned[-1]
    assert [r["epochs"] for r in records(tmp_path / "part", "budget")] == planned
    assert part.lrs + rest.lrs == pytest.approx(whole.lrs)


def test_a_bad_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="budget_seconds"):
        build_dataclass(TrainConfig, {"budget_seconds": 0}, "train")


def test_a_tasks_own_training_before_the_epochs_comes_off_the_budget(tmp_path, clock):
    """Task.pretraining_seconds (caption: task.concept_epochs) counts: 20 s less 8 s leaves 2 epochs of 6 s."""
    task, trainer = trainer_for(tmp_path, clock, budget_seconds=20.0)
    task.pretraining_seconds = lambda: 8.0
    trainer.fit()
    assert trainer.epoch == 2 and records(tmp_path, "budget")[0]["epochs"] == 2
