"""precision=auto: the lower precision only when it is clearly faster; the probe leaves the model, the task's
carried state and the RNG streams as they were; a run that chose fp32 is the fp32 run; config.yaml keeps the
choice."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

import seqlab
from seqlab.train import precision as P
from seqlab.train.device import rng_state
from tests.test_task_lm import corpus, make_task, small_rnn
from tests.test_trainer_ema import ToyTask


@pytest.mark.parametrize("seconds, chosen", [
    ({"fp32": 1.0, "bf16": 0.8}, "bf16"),  # 1.25x
    ({"fp32": 1.0, "bf16": 0.9}, "fp32"),  # 1.11x: not worth the precision
    ({"fp32": 1.0, "bf16": 3.0}, "fp32"),  # emulated bf16
    ({"fp32": 1.0, "fp16": 0.5}, "fp16"),
])
def test_the_lower_precision_must_pay_for_itself(seconds, chosen):
    assert P.choose(seconds) == chosen


def test_candidates():
    assert P.candidates(torch.device("cpu")) == ["fp32", "bf16"]
    assert P.candidates(torch.device("mps")) == ["fp32"]


class Noisy(ToyTask):
    """The toy regression whose batches draw from torch's RNG (as augmentation does)."""

    def make_batch(self, item):
        x, y = super().make_batch(item)
        return x + 0.01 * torch.randn_like(x), y


def test_the_probe_leaves_no_trace_on_the_model_and_the_rngs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 1))  # BatchNorm: running statistics are buffers
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    before = rng_state()
    seconds = P.step_seconds(Noisy(), model, torch.device("cpu"), ["fp32", "bf16"], rounds=2)
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), before["torch"])  # the probe's batch and steps drew from it


def test_the_probe_restores_the_language_models_carried_state(tmp_path):
    task = make_task(corpus(tmp_path))
    model = task.build_model()
    assert task.state is None
    P.step_seconds(task, model, torch.device("cpu"), ["fp32"], rounds=2)
    assert task.state is None  # the probe's windows carried a state; the run starts from the zero state


def test_an_auto_run_that_chose_fp32_is_the_fp32_run(tmp_path, monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(P, "choose", lambda seconds: "fp32")
    text = corpus(tmp_path)
    seqlab.train(small_rnn(text, model="rnn", precision="auto"), out=tmp_path / "auto", log=lines.append)
    seqlab.train(small_rnn(text, model="rnn", precision="fp32"), out=tmp_path / "fp32", quiet=True)
    assert any(line.startswith("precision=auto: a training step takes fp32") for line in lines)
    assert yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["precision"] == "fp32"
    auto, fp32 = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("auto", "fp32"))
    assert auto.keys() == fp32.keys() and all(torch.equal(auto[k], fp32[k]) for k in auto)


def test_config_yaml_keeps_a_bf16_choice_and_a_resumed_run_does_not_measure(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "choose", lambda seconds: "bf16")
    run = tmp_path / "run"
    seqlab.train(small_rnn(corpus(tmp_path), precision="auto"), out=run, quiet=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["precision"] == "bf16"
    monkeypatch.setattr(P, "step_seconds", lambda *a, **k: pytest.fail("a resumed run measured again"))
    seqlab.train(resume=run, overrides=["train.epochs=2"], quiet=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["precision"] == "bf16"
