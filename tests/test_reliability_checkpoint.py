"""Checkpoints that are detected when broken and never run code, and the NaN/inf guard (all in-process).

A corrupted or truncated newest checkpoint is skipped with a warning for the previous good one (and the
run still ends bit-identically); nothing usable is one CheckpointError line. A crafted pickle in
train_state.pt, or a python/* tag in config.yaml, is refused without its side effect ever happening. A
non-finite loss, gradient or weight stops training with the step and the parameter named, leaving the
last good checkpoint byte for byte as it was; `train.on_nonfinite=skip` skips and counts such steps.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import seqlab
from seqlab.cli import main
from seqlab.data.io import sha256_file
from seqlab.tasks.classify import ClassifyTask
from seqlab.train.checkpoint import STATE_VERSION, checkpoint_dirs
from tests.helpers import LECTURE, tiny_classification
from tests.test_reliability_kill import argv, assert_same_run, newest_step

# 228 training examples, batch 16: 15 steps per epoch, 30 in all; checkpoints every 5 steps, the last 3 kept
SETTINGS = {**LECTURE, "train.epochs": 2, "train.checkpoint_every": 5, "train.keep_checkpoints": 3, "model.dim": 8,
            "model.dropout": 0.3, "threads": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return tiny_classification(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    return seqlab.train(None, {**data, **SETTINGS}, out=out, quiet=True)


@pytest.fixture
def run(reference, tmp_path) -> Path:
    """A copy of the reference run to break, as if stopped after its last checkpoint but before its summary
    (a finished run is not resumed: there is nothing to do)."""
    run = Path(shutil.copytree(reference, tmp_path / "run"))
    (run / "summary.json").unlink()
    return run


def cli(args: list[str], capsys) -> tuple[int, list[str], list[str]]:
    """`seqlab ARGS` in-process: exit code, error lines, warning lines (no traceback may escape)."""
    code = main(args)
    err = capsys.readouterr().err.splitlines()
    errors = [x for x in err if x.startswith("seqlab: error:")]
    warnings = [x for x in err if x.startswith("seqlab: warning:")]
    assert len(errors) + len(warnings) == len(err), err
    return code, errors, warnings


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0xFF
    path.write_bytes(bytes(b))


def rewrite_manifest(ckpt: Path) -> None:
    """Make the manifest match the files as they now are (a crafted checkpoint, not a corrupted one)."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(ckpt / name) for name in manifest["files"]}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


# ------------------------------------------------------------------------------------------ corruption
CORRUPTIONS = {
    "model.safetensors truncated": lambda c: truncate(c / "model.safetensors"),
    "model.safetensors with a flipped byte": lambda c: flip_a_byte(c / "model.safetensors"),
    "train_state.pt truncated": lambda c: truncate(c / "train_state.pt"),
    "train_state.pt empty": lambda c: (c / "train_state.pt").write_bytes(b""),
    "manifest.json truncated": lambda c: truncate(c / "manifest.json"),
    "manifest.json missing": lambda c: (c / "manifest.json").unlink(),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_broken_newest_checkpoint_is_skipped_for_the_previous_one(corrupt, run, reference, capsys):
    newest = checkpoint_dirs(run)[-1]
    assert newest.name == "step-000000030"
    corrupt(newest)
    code, errors, warnings = cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 0 and not errors
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"seqlab: warning: skipping checkpoint: {newest}: ")
    assert warnings[1] == "seqlab: warning: resumed from the older checkpoint step-000000025"
    assert_same_run(run, reference)


def test_no_usable_checkpoint_is_one_error_line_and_exit_2(run, capsys):
    ckpts = checkpoint_dirs(run)
    for ckpt, corrupt in zip(ckpts, CORRUPTIONS.values(), strict=False):
        corrupt(ckpt)
    code, errors, warnings = cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 2 and len(warnings) == len(ckpts) == 3
    assert len(errors) == 1
    assert errors[0].startswith(f"seqlab: error: {run / 'checkpoints'}: no usable checkpoint: ")
    assert all(c.name in errors[0] for c in ckpts)


def test_a_training_state_that_does_not_fit_the_config_is_one_error_line(run, capsys):
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("optimizer: sgd", "optimizer: adam"))
    code, errors, _ = cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 2 and len(errors) == 1 and "training state does not fit this run" in errors[0]
    (run / "config.yaml").write_text(config)
    newest = checkpoint_dirs(run)[-1]
    torch.save({"version": STATE_VERSION, "epoch": "two"}, newest / "train_state.pt")
    rewrite_manifest(newest)
    code, errors, _ = cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 2 and len(errors) == 1 and "training state does not fit this run (KeyError" in errors[0]


# ------------------------------------------------------------------------------------------ safe loading
class SideEffect:
    """Unpickling this creates the file `path` (any callable would run the same way: os.system...)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def crafted_state(kind: str, marker: Path) -> bytes:
    state = {"version": STATE_VERSION, "epoch": SideEffect(marker)}
    if kind == "raw pickle":
        return pickle.dumps(state, protocol=2)
    buf = Path(str(marker) + ".pt")
    torch.save(state, buf)
    return buf.read_bytes()


@pytest.mark.parametrize("kind", ["torch.save zip", "raw pickle"])
def test_a_crafted_pickle_in_train_state_is_refused_and_never_runs(kind, run, tmp_path, capsys):
    payload = crafted_state(kind, tmp_path / "pwned")
    pickle.loads(payload) if kind == "raw pickle" else torch.load(tmp_path / "pwned.pt", weights_only=False)
    assert (tmp_path / "pwned").exists()  # the payload is live: an ordinary unpickler runs it
    (tmp_path / "pwned").unlink()
    newest = checkpoint_dirs(run)[-1]
    (newest / "train_state.pt").write_bytes(payload)
    rewrite_manifest(newest)  # it passes the hash check: only the loader stands in the way
    code, errors, warnings = cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 2 and not warnings, warnings  # refused outright, not skipped for an older checkpoint
    assert len(errors) == 1
    assert errors[0].startswith(f"seqlab: error: {newest / 'train_state.pt'}: refusing to load")
    assert not (tmp_path / "pwned").exists()


def test_a_python_tag_in_a_config_is_refused_and_never_runs(run, data, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = f"seed: !!python/object/apply:builtins.open [{marker}, w]\n"
    yaml.unsafe_load(evil)
    assert marker.exists()  # the tag is live: an unsafe loader runs it
    marker.unlink()
    config = (run / "config.yaml").read_text()
    line = config.splitlines().index("seed: 0") + 1
    (run / "config.yaml").write_text(config.replace("seed: 0\n", evil))
    for verb in (["train", "--resume"], ["predict"], ["evaluate"], ["info"]):
        args = [*verb, str(run), *(["a great film"] if verb == ["predict"] else [])]
        code, errors, _ = cli(args, capsys)
        assert code == 2 and len(errors) == 1, (verb, errors)
        assert errors[0].startswith(f"seqlab: error: {run / 'config.yaml'}:{line}: "), errors
        assert "python/object/apply" in errors[0]
    (tmp_path / "preset.yaml").write_text(evil)
    code, errors, _ = cli(["train", str(tmp_path / "preset.yaml"), *argv(data), "--quiet"], capsys)
    assert code == 2 and errors[0].startswith(f"seqlab: error: {tmp_path / 'preset.yaml'}:1: ")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ NaN / inf
def files_digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def inject(monkeypatch, at: set[int], action) -> None:
    """Call `action(model, step)` at the start of the training steps numbered `at`; its return value, when
    not None, multiplies the loss."""
    loss, seen = ClassifyTask.training_loss, [0]

    def training_loss(self, model, batch):
        seen[0] += 1
        factor = action(model, seen[0]) if seen[0] in at else None
        value, sums = loss(self, model, batch)
        return (value * factor if factor is not None else value), sums

    monkeypatch.setattr(ClassifyTask, "training_loss", training_loss)


def test_a_huge_learning_rate_stops_with_the_step_and_the_loss_named(data, tmp_path, capsys):
    run = tmp_path / "run"
    huge = {"train.lr": "1.0e+30", "train.checkpoint_every": 1}  # (YAML 1.1 reads 1e30 as a string)
    code, errors, _ = cli(["train", *argv({**data, **SETTINGS, **huge}), "--out", str(run), "--quiet"],
                          capsys)
    assert code == 2 and len(errors) == 1
    m = re.search(r"non-finite value in the loss at step (\d+) \(epoch 1\); training stopped", errors[0])
    assert m, errors
    assert newest_step(run) == int(m.group(1)) - 1
    for ckpt in checkpoint_dirs(run):  # every checkpoint written is whole and finite
        manifest = json.loads((ckpt / "manifest.json").read_text())
        assert manifest["files"]["model.safetensors"] == sha256_file(ckpt / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "model.safetensors")).values())


def test_adam_with_an_absurd_learning_rate_is_a_training_error_not_a_crash(data, tmp_path, capsys):
    """Adam's first step moves each weight by about lr (torch's fused kernel keeps 1e38 finite, the for-loop one
    overflowed): the weights or the next loss are non-finite, a one-line training error naming the step."""
    absurd = {"train.optimizer": "adam", "train.lr": "1.0e+38"}
    code, errors, _ = cli(["train", *argv({**data, **SETTINGS, **absurd}), "--out", str(tmp_path / "run"),
                           "--quiet"], capsys)
    assert code == 2 and len(errors) == 1
    assert re.search(r"(the optimiser step overflowed|non-finite value in the loss) at step \d+", errors[0]), errors


def test_adam_s_step_size_overflow_is_a_training_error_where_adam_is_not_fused(data, tmp_path, capsys,
                                                                              monkeypatch):
    """Where torch's fused Adam is not used (MPS, ...), the for-loop Adam raises on a step size lr / (1 - beta1^t)
    beyond float range: a one-line training error naming step 1."""

    class ForLoopAdam(torch.optim.Adam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "fused": None})

    monkeypatch.setattr(torch.optim, "Adam", ForLoopAdam)
    absurd = {"train.optimizer": "adam", "train.lr": "1.0e+38"}
    code, errors, _ = cli(["train", *argv({**data, **SETTINGS, **absurd}), "--out", str(tmp_path / "run"),
                           "--quiet"], capsys)
    assert code == 2 and len(errors) == 1 and "the optimiser step overflowed at step 1" in errors[0], errors


def test_an_inf_loss_stops_and_leaves_the_last_good_checkpoint_untouched(data, tmp_path, capsys, monkeypatch):
    run, before = tmp_path / "run", {}
    inject(monkeypatch, {12}, lambda model, step: before.update(files_digest(run)) or float("inf"))
    code, errors, _ = cli(["train", *argv({**data, **SETTINGS}), "--out", str(run), "--quiet"], capsys)
    assert code == 2 and errors == [
        f"seqlab: error: {run}: non-finite value in the loss at step 12 (epoch 1); training stopped, the "
        f"last good checkpoint is untouched (lower train.lr, set train.clip_grad_norm, or "
        f"train.on_nonfinite=skip)"]
    assert newest_step(run) == 10 and "checkpoints/step-000000010/model.safetensors" in before
    assert files_digest(run) == before


def test_a_nan_gradient_names_the_parameter(data, tmp_path, capsys, monkeypatch):
    run, hooked = tmp_path / "run", []

    def poison_fc_grad(model, step):
        if not hooked:
            hooked.append(model.fc.weight.register_hook(lambda g: g * float("nan")))

    inject(monkeypatch, {7}, poison_fc_grad)
    code, errors, _ = cli(["train", *argv({**data, **SETTINGS}), "--out", str(run), "--quiet"], capsys)
    assert code == 2 and len(errors) == 1
    assert "non-finite value in the gradient of parameter 'fc.weight' at step 7 (epoch 1)" in errors[0]
    assert newest_step(run) == 5


def test_a_weight_that_became_inf_is_never_written(data, tmp_path, capsys, monkeypatch):
    """An update can overflow though its loss and gradients were finite (here: a row no batch reads)."""
    run, before = tmp_path / "run", {}

    def overflow_pad_row(model, step):
        before.update(files_digest(run))
        with torch.no_grad():
            model.embedding.weight[1] = float("inf")  # <pad>: a bag of words never looks it up

    inject(monkeypatch, {13}, overflow_pad_row)
    code, errors, _ = cli(["train", *argv({**data, **SETTINGS}), "--out", str(run), "--quiet"], capsys)
    assert code == 2 and len(errors) == 1
    assert "non-finite value in parameter 'embedding.weight' after step 15; training stopped" in errors[0]
    assert newest_step(run) == 10 and files_digest(run) == before


def test_skip_mode_skips_and_counts_nonfinite_steps(data, tmp_path, capsys, monkeypatch):
    run, params = tmp_path / "run", {}

    def snapshot_then_inf(model, step):
        params[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return float("inf") if step in (7, 12) else None

    inject(monkeypatch, {7, 8, 12}, snapshot_then_inf)
    assert main(["train", *argv({**data, **SETTINGS, "train.on_nonfinite": "skip"}), "--out", str(run)]) == 0
    assert "skipped 2 steps with a non-finite loss or gradient" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 2
    assert torch.load(checkpoint_dirs(run)[-1] / "train_state.pt", weights_only=True)["skipped_steps"] == 2
    # the skipped step 7 changed nothing: the weights that step 8 starts from are those step 7 started from
    assert all(torch.equal(params[7][k], params[8][k]) for k in params[7])


def test_a_finished_run_resumed_with_more_epochs_trains_on_as_if_asked_so_from_the_start(data, reference,
                                                                                         tmp_path, capsys):
    short = seqlab.train(None, {**data, **SETTINGS, "train.epochs": 1}, out=tmp_path / "run", quiet=True)
    assert main(["train", "--resume", str(short), "train.epochs=2", "--quiet"]) == 0
    capsys.readouterr()
    assert_same_run(short, reference)  # the 2-epoch reference (the step schedule does not depend on epochs)
