"""train.ema: the averaged weights are the closed form of the raw ones, evaluation and the kept weights use them,
training goes on with the raw ones (the same trajectory as without), the checkpoint carries them, bad values."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from seqlab.config import build_dataclass, make_config
from seqlab.errors import ConfigError
from seqlab.train.checkpoint import checkpoint_dirs
from seqlab.train.config import TrainConfig
from seqlab.train.trainer import Trainer

STEPS = 4  # per epoch


class ToyTask:
    """Linear regression on fixed batches; records the weights every training step sees and every evaluation
    evaluates."""

    default_metric, headline, unit = "loss", "loss", "examples"

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.w = torch.randn(STEPS, 8, 3, generator=g), torch.tensor([[1.0, -2.0, 0.5]])
        self.seen: list[dict[str, torch.Tensor]] = []  # the weights before each step
        self.evaluated: list[tuple[float, dict[str, torch.Tensor]]] = []

    def epoch_plan(self, epoch):
        return list(range(STEPS))

    def shard_plan(self, plan, rank, world):
        return [(i, 1.0) for i in plan]

    def make_batch(self, item):
        return self.x[item], self.x[item] @ self.w.T

    def start_epoch(self, epoch, epochs):
        pass

    def training_loss(self, model, batch):
        self.seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return loss, {"loss": loss.item() * len(x), "n": len(x)}

    def summarize(self, sums):
        return {"loss": sums["loss"] / sums["n"]}

    def has_split(self, split):
        return split == "valid"

    def evaluate(self, model, split):
        x = self.x.flatten(0, 1)
        loss = ((model(x) - x @ self.w.T) ** 2).mean().item()
        self.evaluated.append((loss, {n: p.detach().clone() for n, p in model.named_parameters()}))
        return {"loss": loss}

    def before_test(self, model):
        pass

    def pretraining_seconds(self):
        return 0.0

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def train(tmp_path, **options) -> tuple[ToyTask, Trainer]:
    tmp_path.mkdir(exist_ok=True)
    torch.manual_seed(0)
    model, task = nn.Linear(3, 1), ToyTask()
    cfg = build_dataclass(TrainConfig, {"epochs": 3, "lr": 0.05, "schedule": "constant", **options}, "train")
    trainer = Trainer(task, model, cfg, tmp_path, torch.device("cpu"), log=None, progress=False)
    trainer.fit()
    return task, trainer


def closed_form(weights: list[dict], start: int, steps: int, d: float) -> dict[str, torch.Tensor]:
    """d^(k) w_s + (1 - d) sum_{i=s+1..s+k} d^(s+k-i) w_i, with k = steps - start."""
    k = steps - start
    return {n: d ** k * weights[start][n] + (1 - d) * sum(d ** (steps - i) * weights[i][n]
                                                          for i in range(start + 1, steps + 1)) for n in weights[0]}


@pytest.mark.parametrize("start", [0, 3])
def test_the_average_is_the_closed_form_and_evaluation_uses_it(tmp_path, start):
    d = 0.8
    task, trainer = train(tmp_path, ema=True, ema_decay=d, ema_start=start)
    last = load_file(str(checkpoint_dirs(tmp_path)[-1] / "model.safetensors"))  # the raw weights after step 12
    raw = task.seen + [last]  # raw[i]: the weights after i steps
    total = 3 * STEPS
    assert len(raw) == total + 1
    state = torch.load(checkpoint_dirs(tmp_path)[-1] / "train_state.pt", weights_only=True)
    for n, value in closed_form(raw, start, total, d).items():
        torch.testing.assert_close(state["ema"][n], value, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(state["ema"][n], raw[-1][n])  # an average, not the last weights
    valid = task.evaluated[:3]  # one per epoch end (then the test split's)
    for epoch, (_, weights) in enumerate(valid, start=1):
        for n, value in closed_form(raw, start, epoch * STEPS, d).items():
            torch.testing.assert_close(weights[n], value, rtol=1e-6, atol=1e-7)
    best = min(range(3), key=lambda i: valid[i][0])
    kept = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(kept[n], valid[best][1][n]) for n in kept)  # the averaged weights are kept
    assert all(torch.equal(task.evaluated[-1][1][n], kept[n]) for n in kept)  # and tested


def test_training_goes_on_with_the_raw_weights(tmp_path):
    """The raw trajectory with the average equals the one without it (evaluation swaps the weights back)."""
    with_ema, _ = train(tmp_path / "a", ema=True, ema_decay=0.5)
    without, trainer = train(tmp_path / "b")
    assert trainer.ema is None
    assert torch.load(checkpoint_dirs(tmp_path / "b")[-1] / "train_state.pt", weights_only=True)["ema"] is None
    for a, b in zip(with_ema.seen, without.seen, strict=True):
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(with_ema.evaluated[0][1][n], without.evaluated[0][1][n]) for n in a)


def test_an_average_not_started_yet_is_none_and_evaluation_uses_the_raw_weights(tmp_path):
    task, trainer = train(tmp_path, ema=True, ema_start=100)
    assert trainer.ema is None
    assert all(torch.equal(task.evaluated[0][1][n], task.seen[STEPS][n]) for n in task.seen[0])


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.5])
def test_bad_ema_decay_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError, match=r"train\.ema_decay.*\(0, 1\)") as e:
        make_config(None, [f"train.ema_decay={value}"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="ema_start"):
        make_config(None, ["train.ema_start=-1"])
