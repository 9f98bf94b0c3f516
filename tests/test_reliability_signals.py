"""SIGTERM and SIGINT: training finishes the current step, writes a checkpoint, prints one line and exits 3;
`seqlab train --resume` then finishes bit-identically to an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal

import pytest
import torch

import seqlab
from seqlab.cli import main
from seqlab.tasks.classify import ClassifyTask
from seqlab.train.checkpoint import checkpoint_dirs
from tests.helpers import tiny_classification
from tests.test_reliability_kill import (
    OPTIMIZERS,
    SETTINGS,
    argv,
    assert_same_run,
    newest_step,
    resume_in_process,
    signal_when,
    start,
)

SGD = {**SETTINGS, **OPTIMIZERS["sgd"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return tiny_classification(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    return seqlab.train(None, {**data, **SGD}, out=tmp_path_factory.mktemp("reference") / "run", quiet=True)


def stopped_line(sig: signal.Signals, run) -> re.Pattern:
    return re.compile(rf"seqlab: stopped by {sig.name} at step (\d+); checkpoint written, continue with "
                      rf"`seqlab train --resume {re.escape(str(run))}`")


def assert_stopped_cleanly(lines: list[str], sig: signal.Signals, run) -> None:
    """One line naming the signal and the step; that step's checkpoint holds the state after that step."""
    assert len(lines) == 1, lines
    m = stopped_line(sig, run).fullmatch(lines[0])
    assert m, lines[0]
    step = int(m.group(1))
    assert newest_step(run) == step
    state = torch.load(checkpoint_dirs(run)[-1] / "train_state.pt", weights_only=True)
    assert state["global_step"] == step and not state["finished"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_a_training_process_stops_it_resumably(sig, data, reference, tmp_path, capsys):
    run, log = tmp_path / "run", tmp_path / "log"
    proc = start(["train", *argv({**data, **SGD}), "--out", str(run)], log)
    code = signal_when(proc, lambda: newest_step(run) >= 10, log, sig)
    assert code == 3, log.read_text()
    assert_stopped_cleanly(log.read_text().splitlines(), sig, run)
    resume_in_process(run, capsys)
    assert_same_run(run, reference)


def signal_at_step(monkeypatch, sig: signal.Signals, step: int, times: int = 1) -> None:
    """Send `sig` `times` times to this process from inside training step `step` (in-process runs)."""
    loss, seen = ClassifyTask.training_loss, [0]

    def training_loss(self, model, batch):
        seen[0] += 1
        if seen[0] == step:
            for _ in range(times):
                os.kill(os.getpid(), sig)
        return loss(self, model, batch)

    monkeypatch.setattr(ClassifyTask, "training_loss", training_loss)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_step_during_which_the_signal_came_is_finished(sig, data, reference, tmp_path, capsys,
                                                           monkeypatch):
    run = tmp_path / "run"
    signal_at_step(monkeypatch, sig, 23)
    assert main(["train", *argv({**data, **SGD}), "--out", str(run), "--quiet"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert_stopped_cleanly(err, sig, run)
    assert newest_step(run) == 23  # not a checkpoint of checkpoint_every=5: written for the signal
    monkeypatch.undo()
    resume_in_process(run, capsys)
    assert_same_run(run, reference)


def test_a_second_sigint_stops_at_once_and_the_run_still_resumes(data, reference, tmp_path, capsys,
                                                                  monkeypatch):
    run = tmp_path / "run"
    signal_at_step(monkeypatch, signal.SIGINT, 23, times=2)
    assert main(["train", *argv({**data, **SGD}), "--out", str(run), "--quiet"]) == 130
    assert capsys.readouterr().err.splitlines() == ["seqlab: interrupted"]
    assert newest_step(run) == 20  # the first Ctrl-C's checkpoint never came
    monkeypatch.undo()
    resume_in_process(run, capsys)
    assert_same_run(run, reference)
