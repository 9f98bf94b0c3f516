"""kill -9 at any moment, then `seqlab train --resume RUN_DIR`: the finished run is bit-identical to one
that was never interrupted (weights, last checkpoint, every line of metrics.jsonl but the timings).

Each run is a real `python -m seqlab train` process. Most kills are sent from outside when polling the
run directory shows the run got that far (a checkpoint appeared); the few windows too short to hit from
outside (inside a checkpoint write, inside an evaluation, while the run directory is being created) are
hit exactly by a hook that SIGKILLs the process from within (RUNNER below: seqlab's own CLI, one function
wrapped). The runs share one process to compare with: an uninterrupted in-process run, same seed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import seqlab
from seqlab.cli import main
from seqlab.train.checkpoint import checkpoint_dirs
from tests.helpers import LECTURE, tiny_classification, write_csv

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
TIMING = ("seconds", "examples_per_s")

# 228 training examples (12 held out for valid), batch 4: 57 steps per epoch, 171 in all; a checkpoint
# every 5 steps; dropout draws from the RNG at every step; SGD with momentum (dense embedding) and Adam
# (+SparseAdam for the sparse embedding) carry optimiser state; the step schedule changes the learning
# rate at every epoch.
SETTINGS = {**LECTURE, "train.epochs": 3, "train.batch_size": 4, "train.checkpoint_every": 5,
            "train.keep_checkpoints": 3, "model.dim": 16, "model.dropout": 0.3, "threads": 1}
OPTIMIZERS = {"sgd": {"train.optimizer": "sgd", "train.lr": 0.5, "train.momentum": 0.9,
                      "model.sparse": False},
              "adam": {"train.optimizer": "adam", "train.lr": 0.01}}

# `python -m seqlab` with one function wrapped so that its Nth call SIGKILLs the process: `evaluate` after the
# evaluation ran (its result never written), `checkpoint` when a checkpoint's files are written but its
# manifest is not, `run_dir` when the hidden `.NAME.partial-PID` directory exists but holds nothing yet.
RUNNER = """
import importlib, os, runpy, signal, sys
module = importlib.import_module  # (`seqlab.train` the attribute is the API function, not the package)
where, nth = os.environ["SEQLAB_KILL_AT"].split(":")
owner, name = {"evaluate": (module("seqlab.train.trainer").Trainer, "evaluate"),
               "checkpoint": (module("seqlab.train.checkpoint"), "atomic_write_text"),
               "run_dir": (module("seqlab.api"), "atomic_write_text")}[where]
original, calls = getattr(owner, name), [0]
def wrapped(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(nth) and where != "evaluate":
        os.kill(os.getpid(), signal.SIGKILL)
    out = original(*args, **kwargs)
    if calls[0] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(owner, name, wrapped)
sys.argv[0] = "seqlab"
runpy.run_module("seqlab", run_name="__main__", alter_sys=True)
"""


def argv(overrides: dict) -> list[str]:
    return [f"{k}={v}" for k, v in overrides.items()]


def start(args: list[str], log: Path, kill_at: str | None = None) -> subprocess.Popen:
    """`python -m seqlab ARGS` (or the RUNNER, killing itself at `kill_at`), output to `log`."""
    cmd = [sys.executable, "-m", "seqlab"] if kill_at is None else [sys.executable, "-c", RUNNER]
    env = ENV if kill_at is None else {**ENV, "SEQLAB_KILL_AT": kill_at}
    with open(log, "w") as f:
        return subprocess.Popen([*cmd, *args, "--quiet"], stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO)


def newest_step(run: Path) -> int:
    """The step of the newest finished checkpoint (0: none). Hidden temp directories do not count."""
    dirs = checkpoint_dirs(run) if run.is_dir() else []
    return int(dirs[-1].name.removeprefix("step-")) if dirs else 0


def signal_when(proc: subprocess.Popen, ready, log: Path, sig: int, delay: float = 0.0) -> int:
    """Send `sig` to `proc` `delay` seconds after `ready()` first holds; return its exit code."""
    deadline = time.monotonic() + 300
    while not ready():
        ended = proc.poll()
        assert ended is None, f"the run ended (exit {ended}) before the signal:\n{log.read_text()}"
        assert time.monotonic() < deadline, "the run never got to the point of the signal"
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(sig)
    return proc.wait(timeout=120)


def kill_when(proc: subprocess.Popen, ready, log: Path, delay: float = 0.0) -> None:
    """SIGKILL `proc` (from outside) `delay` seconds after `ready()` first holds."""
    code = signal_when(proc, ready, log, signal.SIGKILL, delay)
    assert code == -signal.SIGKILL, f"finished before the kill:\n{log.read_text()}"


def killed_from_within(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=300) == -signal.SIGKILL, f"the hook never fired:\n{log.read_text()}"


def resume_in_process(run: Path, capsys) -> None:
    assert main(["train", "--resume", str(run), "--quiet"]) == 0, capsys.readouterr().err
    capsys.readouterr()


def metric_lines(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k not in TIMING} for x in lines]


def assert_same_run(run: Path, reference: Path) -> None:
    """Bit-identical best weights and last checkpoint; the same metrics.jsonl (timings aside)."""
    last, last_ref = checkpoint_dirs(run)[-1], checkpoint_dirs(reference)[-1]
    for a, b in [(run, reference), (last, last_ref)]:
        wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{a}: tensor {k} differs from the uninterrupted run"
    assert last.name == last_ref.name
    got, want = metric_lines(run), metric_lines(reference)
    assert got[-1]["split"] == "test" and got[-1] == want[-1]
    assert got == want
    assert not list((run / "checkpoints").glob(".tmp-*")), "a killed checkpoint write left its temp directory"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return tiny_classification(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, Path]:
    """The uninterrupted runs to compare with, one per optimiser."""
    root = tmp_path_factory.mktemp("reference")
    return {name: seqlab.train(None, {**data, **SETTINGS, **opt}, out=root / name, quiet=True)
            for name, opt in OPTIMIZERS.items()}


def test_sgd_killed_in_its_first_checkpoint_write_mid_epoch_and_in_evaluation(data, reference, tmp_path,
                                                                               capsys):
    run, log = tmp_path / "run", tmp_path / "log"
    args = ["train", *argv({**data, **SETTINGS, **OPTIMIZERS["sgd"]}), "--out", str(run)]
    # 1. inside the very first checkpoint write: no checkpoint is finished, so --resume starts over
    killed_from_within(start(args, log, kill_at="checkpoint:1"), log)
    assert newest_step(run) == 0 and list((run / "checkpoints").glob(".tmp-step-000000005-*"))
    # 2. from outside, somewhere in the middle of epoch 1
    kill_when(start(["train", "--resume", str(run)], log), lambda: newest_step(run) >= 20, log, delay=0.01)
    assert 20 <= newest_step(run) < 57
    # 3. inside the evaluation on valid at the end of epoch 1 (its result and best weights never written)
    killed_from_within(start(["train", "--resume", str(run)], log, kill_at="evaluate:1"), log)
    assert newest_step(run) < 57 and not (run / "model.safetensors").exists()
    resume_in_process(run, capsys)
    assert_same_run(run, reference["sgd"])


def test_adam_killed_mid_epoch_right_after_a_checkpoint_and_in_evaluation(data, reference, tmp_path, capsys):
    run, log = tmp_path / "run", tmp_path / "log"
    args = ["train", *argv({**data, **SETTINGS, **OPTIMIZERS["adam"]}), "--out", str(run)]
    # 1. from outside, somewhere in the middle of epoch 1
    kill_when(start(args, log), lambda: newest_step(run) >= 10, log, delay=0.01)
    first = newest_step(run)
    assert 10 <= first < 57
    # 2. from outside, as soon as a checkpoint of epoch 2 appears
    kill_when(start(["train", "--resume", str(run)], log), lambda: newest_step(run) >= 70, log)
    second = newest_step(run)
    assert 70 <= second < 114
    # 3. inside the evaluation on valid at the end of epoch 2
    killed_from_within(start(["train", "--resume", str(run)], log, kill_at="evaluate:1"), log)
    assert newest_step(run) < 114
    resume_in_process(run, capsys)
    assert_same_run(run, reference["adam"])


def test_a_kill_before_the_run_directory_exists_leaves_nothing_behind(data, tmp_path, capsys):
    """Data preparation writes nothing; the run directory appears by renaming a finished hidden
    `.NAME.partial-PID` directory, which a kill can leave behind and the next run into NAME removes."""
    run, log = tmp_path / "run", tmp_path / "log"
    big = write_csv(tmp_path / "big.csv", [("pos", f"a great film number {i}") for i in range(20000)]
                    + [("neg", f"a dull film number {i}") for i in range(20000)])
    proc = start(["train", f"data.train={big}", "--out", str(run)], log)
    fd_dir = Path(f"/proc/{proc.pid}/fd")

    def reading() -> bool:  # the process holds the training file open: it is reading the data
        try:
            return any(os.readlink(fd) == str(big) for fd in fd_dir.iterdir())
        except OSError:  # a descriptor closed while we looked
            return False

    if not fd_dir.parent.is_dir():
        proc.kill()
        pytest.skip("needs /proc to see the process reading its data")
    kill_when(proc, reading, log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv", "log"]
    # a kill in the moment the hidden directory exists, before it is renamed to the run directory
    args = ["train", *argv({**data, **SETTINGS}), "--out", str(run)]
    killed_from_within(start(args, log, kill_at="run_dir:1"), log)
    assert not run.exists() and len(list(tmp_path.glob(".run.partial-*"))) == 1
    assert main(["train", *argv({**data, **SETTINGS, "train.epochs": 1}), "--out", str(run), "--quiet"]) == 0
    assert (run / "model.safetensors").is_file() and not list(tmp_path.glob(".run.partial-*"))
