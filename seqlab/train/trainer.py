"""The training loop, generic over a small task protocol.

The trainer knows a task only through `TrainTask` below: the task plans each epoch's batches (a
deterministic function of seed and epoch, so that a resumed run sees the same data in the same
order), builds them, computes the loss and evaluates. The trainer owns the rest: optimiser steps,
schedules, mixed precision, gradient clipping, the NaN/inf guard, validation and the best epoch,
early stopping, checkpoints (every N steps and at epoch ends, atomic, exact resume mid-epoch),
SIGTERM/SIGINT, progress bars and `metrics.jsonl`; with `train.ema`, an exponential moving average of the
weights that evaluation and the kept best weights use (training goes on with the raw ones); with
`train.average_last`, the mean of the last epochs' weights, kept when it beats the best epoch on valid.

Under torchrun (see `seqlab.train.distributed`) each rank takes its share of every epoch's plan, the model
is wrapped in DistributedDataParallel, metric sums are reduced over the ranks, validation runs on rank 0
and is broadcast, and only rank 0 writes checkpoints, weights and metrics.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from seqlab.errors import CheckpointError, ConfigError, Interrupted, TrainingError
from seqlab.train import distributed as D
from seqlab.train.checkpoint import load_latest_checkpoint, load_weights, save_checkpoint, save_weights
from seqlab.train.config import TrainConfig
from seqlab.train.device import autocast, grad_scaler, rng_state, set_rng_state
from seqlab.train.metrics_log import MetricsLog
from seqlab.train.optim import Schedule, build_optimizer, layer_groups, lr_factor, stack_optimizer_state

LOWER_IS_BETTER = {"loss", "perplexity", "bits_per_char"}


class TrainTask(Protocol):
    """What the trainer needs from a task: a subset of `seqlab.tasks.base.Task`, the whole contract."""

    default_metric: str  # the valid metric that picks the best epoch
    headline: str  # the metric shown beside the loss in the per-epoch lines
    unit: str  # what the training rate counts: examples, tokens

    def epoch_plan(self, epoch: int) -> Sequence[Any]: ...  # batch descriptors for one epoch

    def shard_plan(self, plan: Sequence[Any], rank: int, world: int) -> list[tuple[Any, float]]: ...  # DDP share

    def make_batch(self, item: Any) -> Any: ...  # a batch on the task's device

    def start_epoch(self, epoch: int, epochs: int) -> None: ...  # epoch (from 0) of the epochs planned

    def training_loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    def summarize(self, sums: dict[str, float]) -> dict[str, float]: ...

    def has_split(self, split: str) -> bool: ...

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]: ...

    def before_test(self, model: nn.Module) -> None: ...  # the kept weights are loaded; test comes next

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _first_nonfinite(named: list[tuple[str, torch.Tensor]]) -> str | None:
    """Name of the first tensor holding a NaN or an infinity. One host sync for all of them: a norm is
    non-finite when a value is (and, rarely, when huge finite values overflow it: checked exactly)."""
    if not named:
        return None
    values = [t.coalesce().values() if t.is_sparse else t for _, t in named]
    norms = torch.stack([torch.linalg.vector_norm(v.float()) for v in values])
    if bool(torch.isfinite(norms).all()):
        return None
    bad = (n for (n, _), v in zip(named, values, strict=True) if not bool(torch.isfinite(v).all()))
    return next(bad, None)


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def _fmt_epoch(epoch: int, secs: float, train: dict, valid: dict | None, headline: str) -> str:
    """The lecture's per-epoch lines, with the loss as a true per-example (or per-token) mean."""
    mins, s = divmod(int(secs), 60)
    name = {"accuracy": "Acc"}.get(headline, headline)

    def part(m: dict, split: str) -> str:
        v = m.get(headline)
        shown = f"{v * 100:.1f}%" if headline.endswith("accuracy") else f"{v:.4f}"
        return f"\tLoss: {m['loss']:.4f}({split})\t|\t{name}: {shown}({split})"

    lines = [f"Epoch: {epoch + 1}  | time in {mins} minutes, {s} seconds", part(train, "train")]
    if valid is not None:
        lines.append(part(valid, "valid"))
    return "\n".join(lines)


NOTE_SECONDS = 30.0  # without a progress bar (output to a file), a progress line at most this often


def progress_span(plan: int, step_in_epoch: int, global_step: int, epoch: int, epochs: int,
                  max_steps: int | None) -> tuple[int, int]:
    """(the steps this epoch's progress bar counts to, the epochs the run will have): where `max_steps` stops
    the run, the bar (and its ETA) ends there, not at the end of the epoch."""
    if not max_steps:
        return plan, epochs
    steps = min(plan, step_in_epoch + max_steps - global_step)
    after = max_steps - global_step - (steps - step_in_epoch)  # steps left after this epoch
    return steps, min(epochs, epoch + 1 + -(-max(0, after) // max(1, plan)))


class Trainer:
    """Runs `fit` for one model and task inside a run directory."""

    def __init__(
        self,
        task: TrainTask,
        model: nn.Module,
        cfg: TrainConfig,
        run_dir: str | os.PathLike,
        device: torch.device,
        precision: str = "fp32",
        log: Callable[[str], None] | None = print,
        progress: bool = True,
        on_valid: Callable[[int, dict[str, float]], None] | None = None,
        test: bool = True,
    ):
        """`on_valid(evaluation, metrics)` is called after each valid evaluation, numbered from 1 (it may raise to
        stop the run: `seqlab tune` prunes a trial so); `test=False` leaves the test split unevaluated."""
        self.task, self.model, self.cfg = task, model, cfg
        self.on_valid, self.test = on_valid, test
        self.rank, self.world = D.rank(), D.world_size()
        self.main = self.rank == 0
        self.train_model = D.wrap(torch.compile(model) if cfg.compile else model, device)  # what steps run
        self.run_dir = Path(run_dir)
        self.device, self.precision = device, precision
        self.log = (log if self.main else None) or (lambda _msg: None)
        self.progress = progress and self.main
        self.metric = cfg.metric or task.default_metric
        self.optimizer = build_optimizer(model, cfg)
        if cfg.gradual_unfreezing and self.world > 1:
            raise ConfigError("train.gradual_unfreezing trains in one process (DDP needs the same trainable "
                              "parameters at every step)")
        self.groups = layer_groups(model) if cfg.gradual_unfreezing else None
        self.trainable = {id(p): p.requires_grad for p in model.parameters()}  # what stays frozen whatever the epoch
        self.scaler = grad_scaler(device, precision)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.main,
                                  tensorboard=self.run_dir / "tensorboard" if cfg.tensorboard else None)
        self.stop_signal: int | None = None
        self.last_checkpoint = time.perf_counter()
        # position and history (all of it goes into train_state.pt)
        self.epoch = 0
        self.epochs = cfg.epochs  # the epochs planned: train.budget_seconds sets them after each one
        self.budgeted = False  # train.budget_seconds has set self.epochs
        self.budget_spent = 0.0  # train.budget_seconds: the seconds of the epochs done (steps and valid evaluation)
        self.steps_per_epoch = 1
        self.step_in_epoch = 0
        self.global_step = 0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.epoch_sums: dict[str, float] = {}
        self.epoch_time = 0.0
        self.skipped_steps = 0
        self.finished = False
        self.schedule: Schedule | None = None
        self.ema: dict[str, torch.Tensor] | None = None  # train.ema: the averaged weights by name, once started
        self.snapshots: list[dict[str, torch.Tensor]] = []  # train.average_last: the weights at the last epoch ends
        self.averaged = 0  # how many epoch ends the kept weights are the mean of (0: one epoch's weights)
        self.evaluations = 0  # valid evaluations of this process
        self.started = time.perf_counter()  # train.max_seconds counts from here
        self.last_note = self.started  # the last progress line written without a progress bar

    # ----------------------------------------------------------------- state
    def state_dict(self, rngs: list[dict] | None = None, tasks: list[dict] | None = None) -> dict:
        """Everything to resume; `rngs`: the RNG states of all ranks (rank order) when distributed."""
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "epoch_sums": dict(self.epoch_sums),
            "epoch_time": self.epoch_time,
            "skipped_steps": self.skipped_steps,
            "finished": self.finished,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs if rngs is not None and self.world > 1 else rng_state(),
            "task": tasks if tasks is not None and self.world > 1 else self.task.state_dict(),
            "metrics_lines": self.metrics.lines,
            "world_size": self.world,
            "ema": None if self.ema is None else {n: t.cpu() for n, t in self.ema.items()},
            "snapshots": self.snapshots,
            "averaged": self.averaged,
            "budget_epochs": self.epochs if self.budgeted else None,
            "budget_spent": self.budget_spent,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size", 1) != self.world:
            raise CheckpointError(f"the run was checkpointed with {state.get('world_size', 1)} processes; resume "
                                  f"it with as many (this is {self.world})", path=self.run_dir / "checkpoints")
        for k in ("epoch", "step_in_epoch", "global_step", "best", "best_epoch", "bad_epochs", "epoch_time",
                  "skipped_steps", "finished"):
            setattr(self, k, state[k])
        self.epoch_sums = dict(state["epoch_sums"]) if self.main else {}  # rank 0 saved the sums of all ranks
        self.optimizer.load_state_dict(stack_optimizer_state(self.optimizer, self.model, state["optimizer"]))
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self._load_ema(state.get("ema"))  # None: not started (or a checkpoint from before train.ema)
        kept = state.get("snapshots", [])[-self.cfg.average_last:] if self.cfg.average_last > 1 else []
        self.snapshots = [self._shaped(s, "an epoch's saved weight", on_model=False) for s in kept]
        self.averaged = state.get("averaged", 0)
        if self.cfg.budget_seconds and state.get("budget_epochs"):  # the epochs the budget planned stay planned
            self.epochs, self.budgeted = min(self.cfg.epochs, state["budget_epochs"]), True
            self.budget_spent = float(state.get("budget_spent", 0.0))
        task = state["task"]  # one per rank under DDP (a dict: checkpointed by one process, or by seqlab <= 0.2)
        self.task.load_state_dict(task[self.rank] if isinstance(task, list) else task)
        self.metrics.truncate(state["metrics_lines"], step=self.global_step + 1)
        set_rng_state(state["rng"][self.rank] if self.world > 1 else state["rng"])  # each rank its own

    def _check_weights(self) -> None:
        """Never write non-finite weights (an update can overflow though loss and gradients were finite)."""
        name = _first_nonfinite([(n, p.detach()) for n, p in self.model.named_parameters()])
        if name is not None:
            raise TrainingError(
                f"non-finite value in parameter {name!r} after step {self.global_step}; training stopped, "
                f"the last good checkpoint is untouched (lower train.lr or set train.clip_grad_norm)",
                path=self.run_dir,
            )

    # ----------------------------------------------------------------- averaged weights (train.ema)
    # An exponential moving average of the weights rather than NT-ASGD's average: it composes with every optimiser
    # and schedule the presets use (SGD with cosine decay, Adam, Muon), needs no trigger on the valid metric (which
    # a 6-epoch budget may never fire: Merity et al. wait 5 non-improving evaluations), and its state is one tensor
    # per parameter, so a resumed run continues it exactly. Under DDP every rank averages its own (identical)
    # weights. Parameters only: buffers are the model's own.
    def _update_ema(self) -> None:
        """After an optimiser step (and once before the first): from step `train.ema_start` on, the average
        starts as a copy of the weights, and then each step folds its weights in:
        ema <- decay * ema + (1 - decay) * w, so k steps after the start ema = d^k w_s + (1 - d) sum_i d^(k-i) w_i."""
        if not self.cfg.ema or self.global_step < self.cfg.ema_start:
            return
        with torch.no_grad():
            if self.ema is None:
                self.ema = {n: p.detach().clone() for n, p in self.model.named_parameters()}
                return
            for n, p in self.model.named_parameters():
                self.ema[n].lerp_(p.detach(), 1.0 - self.cfg.ema_decay)

    def _load_ema(self, ema: dict | None) -> None:
        """A checkpoint's average (a dict name -> tensor, or None) onto this model's devices."""
        self.ema = self._shaped(ema, "averaged weight", on_model=True) if self.cfg.ema and ema is not None else None

    def _shaped(self, weights: dict, what: str, on_model: bool) -> dict[str, torch.Tensor]:
        """Weights by name from a checkpoint, checked against the model's parameters (ValueError), in the model's
        dtypes, on its devices (`on_model`) or on the CPU."""
        out = {}
        for n, p in self.model.named_parameters():
            if weights[n].shape != p.shape:
                raise ValueError(f"{what} {n!r} has shape {tuple(weights[n].shape)}, the model {tuple(p.shape)}")
            out[n] = weights[n].to(device=p.device if on_model else "cpu", dtype=p.dtype, copy=True)
        return out

    @contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """Inside, the model holds the averaged weights (train.ema, once started); after, its raw ones again,
        bit for bit (copied in place: the optimiser and DDP keep their parameters)."""
        if self.ema is None:
            yield
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            raw = {n: p.detach().clone() for n, p in params.items()}
            for n, p in params.items():
                p.copy_(self.ema[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(raw[n])

    # ----------------------------------------------------------------- checkpoint averaging (train.average_last)
    # The mean of the weights at the last N epoch ends (Vaswani et al. 2017 average the last checkpoints), kept in
    # memory and in the checkpoints (N copies of the weights, on the CPU) so a resumed run averages the same ones.
    def _snapshot(self) -> None:
        """At an epoch end: remember its weights (the last `train.average_last` of them)."""
        if self.cfg.average_last > 1:
            now = {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters()}
            self.snapshots = [*self.snapshots, now][-self.cfg.average_last:]

    def _average_snapshots(self, has_valid: bool) -> None:
        """After the last epoch: the model takes the mean of the remembered weights; evaluated on valid, it
        becomes the kept weights when it beats the best epoch (without a valid split, always)."""
        n = len(self.snapshots)
        if n < 2:
            return
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(sum(s[name].float() for s in self.snapshots) / n)
        first, last = self.epoch - n + 1, self.epoch
        keep, value = True, None
        if has_valid:
            valid = self.evaluate("valid")
            self.metrics.write({"split": "valid_average", "epoch": last, "epochs": [first, last],
                                "step": self.global_step, **valid})
            value = valid[self.metric]
            keep = _better(self.metric, value, self.best)
            self.log(f"mean of the weights of epochs {first}-{last}: valid {self.metric} {value:.4f}, "
                     + ("kept" if keep else f"epoch {(self.best_epoch or 0) + 1}'s {self.best:.4f} stays"))
        if keep:
            self.best, self.best_epoch, self.averaged = value, last - 1, n
            self._save_weights()

    def _save_weights(self) -> None:
        self._check_weights()
        if self.main:
            save_weights(self.model, self.run_dir / "model.safetensors")

    def checkpoint(self) -> None:
        """Every rank calls it at the same step; rank 0 writes, holding the epoch's sums of all ranks."""
        self._check_weights()
        total = D.all_reduce_sums(self.epoch_sums)
        self.epoch_sums = total if self.main else {}
        rngs = D.all_gather_object(rng_state())  # dropout streams differ by rank once batch sizes do
        tasks = D.all_gather_object(self.task.state_dict())  # each rank's own (truncated BPTT's hidden state)
        if self.main:
            save_checkpoint(self.run_dir, self.global_step, self.model, self.state_dict(rngs, tasks),
                            self.cfg.keep_checkpoints)
        self.last_checkpoint = time.perf_counter()

    # ----------------------------------------------------------------- signals
    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, _frame):
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self.stop_signal = signum

        return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    # ----------------------------------------------------------------- one step
    def _train_step(self, batch: Any, weight: float = 1.0) -> dict[str, float] | None:
        """One optimiser step. `weight` scales the loss of this rank's share of a distributed step."""
        self.model.train()
        self.optimizer.zero_grad()
        with autocast(self.device, self.precision):
            loss, sums = self.task.training_loss(self.train_model, batch)
        (loss_bad,) = D.any_rank(not torch.isfinite(loss.detach()).item())  # every rank skips, or none
        bad = "the loss" if loss_bad else None
        if bad is None:
            self.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
            if self.scaler.is_enabled():
                for o in self.optimizer.optimizers:
                    self.scaler.unscale_(o)
            grads = [(n, p.grad) for n, p in self.model.named_parameters() if p.grad is not None]
            name = _first_nonfinite(grads)
            if name is not None and not self.scaler.is_enabled():
                bad = f"the gradient of parameter {name!r}"
        if bad is not None:
            if self.cfg.on_nonfinite == "stop":
                raise TrainingError(
                    f"non-finite value in {bad} at step {self.global_step + 1} (epoch {self.epoch + 1}); "
                    f"training stopped, the last good checkpoint is untouched (lower train.lr, set "
                    f"train.clip_grad_norm, or train.on_nonfinite=skip)",
                    path=self.run_dir,
                )
            self.skipped_steps += 1
            self.optimizer.zero_grad()
            return None
        if self.cfg.clip_grad_norm:
            dense = [p for p in self.model.parameters() if p.grad is not None and not p.grad.is_sparse]
            torch.nn.utils.clip_grad_norm_(dense, self.cfg.clip_grad_norm)
        try:
            self.optimizer.step(self.scaler)
        except RuntimeError as e:  # Adam's step size lr / (1 - beta1^t) beyond float range
            if "overflow" not in str(e):
                raise
            raise TrainingError(f"the optimiser step overflowed at step {self.global_step + 1} (train.lr="
                                f"{self.cfg.lr:g} is far too large); training stopped, the last good "
                                f"checkpoint is untouched", path=self.run_dir) from None
        if self.scaler.is_enabled():
            self.scaler.update()
        self.schedule.step()
        return sums

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, split: str) -> dict[str, float]:
        """Rank 0 evaluates the whole split (the weights are the same on every rank) and tells the others."""
        metrics = None
        if self.main:
            self.model.eval()
            with torch.no_grad(), autocast(self.device, self.precision):
                metrics = self.task.evaluate(self.model, split)
        return D.broadcast_object(metrics)

    def _after_valid(self, valid: dict[str, float]) -> None:
        if self.metric not in valid:
            raise ConfigError(f"train.metric {self.metric!r} is not a valid metric of this task (it reports "
                              f"{', '.join(valid)})")
        value = valid[self.metric]
        if _better(self.metric, value, self.best):
            self.best, self.best_epoch, self.bad_epochs, self.averaged = value, self.epoch, 0, 0
            self._save_weights()
        else:
            self.bad_epochs += 1
        self.evaluations += 1
        if self.on_valid is not None:
            self.on_valid(self.evaluations, valid)

    # ----------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> dict[str, dict[str, float]]:
        """Train (or resume) to the end; return {"valid": best valid metrics, "test": test metrics}."""
        plan0 = self.task.shard_plan(self.task.epoch_plan(0), self.rank, self.world)
        self.steps_per_epoch = steps_per_epoch = max(1, len(plan0))
        self.schedule = Schedule(self.optimizer, self._lr_factor())
        if resume:
            state = load_latest_checkpoint(self.run_dir, self.model)
            try:
                self.load_state_dict(state)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
                raise CheckpointError(
                    f"the training state does not fit this run ({e.__class__.__name__}: "
                    f"{str(e).splitlines()[0][:120] if str(e) else ''}); was config.yaml edited?",
                    path=self.run_dir / "checkpoints",
                ) from None
            self.schedule.replan(self._lr_factor())  # over the epochs a budget planned
            self.finished = self._done()  # a finished run resumed with more epochs or steps trains on
            self.log(f"resumed at epoch {self.epoch + 1}, step {self.step_in_epoch} of {steps_per_epoch} "
                     f"(global step {self.global_step})")
        if self.ema is None:
            self._update_ema()  # train.ema_start=0: the average starts from the initial weights
        has_valid = self.task.has_split("valid")
        old_handlers = self._install_signals()
        try:
            try:
                while not self.finished:
                    plan = plan0 if self.epoch == 0 else self.task.shard_plan(self.task.epoch_plan(self.epoch),
                                                                              self.rank, self.world)
                    self._run_epoch(plan, has_valid)
            finally:
                for s, h in old_handlers.items():
                    signal.signal(s, h)
            return self._final(has_valid)
        finally:
            self.metrics.close()  # TensorBoard's events of a run that stops early (pruned, interrupted) too

    def _lr_factor(self):
        """The schedule's multiplier of the learning rate at each step, over the planned epochs."""
        total = self.steps_per_epoch * self.epochs
        if self.cfg.max_steps:
            total = min(total, self.cfg.max_steps)
        return lr_factor(self.cfg, self.steps_per_epoch, total)

    def _fit_budget(self, eval_seconds: float) -> None:
        """train.budget_seconds, after each epoch of the first half of the run: plan as many epochs as fit in the
        budget at the mean measured time of the epochs so far (training steps and valid evaluation; ranks take
        their mean), train.epochs at most and never fewer than are done; the schedule decays over them. A first
        epoch slower than the rest (warm-up, a busy machine) no longer leaves the budget's end unused; in the
        second half the plan stays, so the decay to the end is never moved. The seconds of the task's own
        training before the epochs (`Task.pretraining_seconds`) come off the budget."""
        done = self.epoch + 1
        if self.budgeted and done > self.epochs / 2:
            return
        per_rank = D.all_reduce_sums({"seconds": self.epoch_time + eval_seconds})["seconds"]
        self.budget_spent += per_rank / self.world
        per_epoch = self.budget_spent / done
        left = self.cfg.budget_seconds - self.task.pretraining_seconds()
        fit = max(done, int(left // max(per_epoch, 1e-9)))
        planned, self.budgeted = min(self.cfg.epochs, fit), True
        if planned == self.epochs and done > 1:
            return
        self.epochs = planned
        self.schedule.replan(self._lr_factor())
        self.metrics.write({"split": "budget", "epoch": done, "step": self.global_step, "epoch_seconds": per_epoch,
                            "epochs": self.epochs})
        self.log(f"train.budget_seconds={self.cfg.budget_seconds:g}: an epoch takes {per_epoch:.1f} s on average, "
                 f"so {self.epochs} epochs (train.epochs={self.cfg.epochs} at most)")

    def _run_epoch(self, plan: Sequence[Any], has_valid: bool) -> None:
        cfg = self.cfg
        if self.step_in_epoch == 0:
            self.epoch_sums, self.epoch_time = {}, 0.0
        self.task.start_epoch(self.epoch, self.epochs)
        self._unfreeze()
        steps, epochs = progress_span(len(plan), self.step_in_epoch, self.global_step, self.epoch, self.epochs,
                                      cfg.max_steps)
        bar = tqdm(total=steps, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{epochs}",
                   disable=not (self.progress and sys.stderr.isatty()), leave=False, unit="batch")
        t0, seen, first = time.perf_counter(), 0.0, self.step_in_epoch
        while self.step_in_epoch < len(plan):
            item, weight = plan[self.step_in_epoch]
            sums = self._train_step(self.task.make_batch(item), weight)
            self.step_in_epoch += 1
            self.global_step += 1
            if sums is not None:  # a step was taken (not skipped as non-finite)
                self._update_ema()
            if sums is not None and weight > 0:  # weight 0: a filler batch of a rank whose share ran out
                for k, v in sums.items():
                    self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
                seen += sums.get("examples", sums.get("n", 0.0))
            elapsed = time.perf_counter() - t0
            bar.update(1)
            if self.global_step % cfg.log_every == 0:
                total = D.all_reduce_sums({**self.epoch_sums, "_seen": seen})
                seen_all = total.pop("_seen")
                running = self.task.summarize(total) if total else {}
                rate = seen_all / max(elapsed, 1e-9)
                bar.set_postfix(loss=f"{running.get('loss', float('nan')):.4f}", ex_s=f"{rate:.0f}")
                if bar.disable and self.progress and time.perf_counter() - self.last_note >= NOTE_SECONDS:
                    self.last_note = time.perf_counter()  # no bar (a log file): a line now and then instead
                    left = (steps - self.step_in_epoch) * elapsed / max(1, self.step_in_epoch - first)
                    self.log(f"  epoch {self.epoch + 1}/{epochs} step {self.step_in_epoch}/{steps} | loss "
                             f"{running.get('loss', float('nan')):.4f} | {rate:,.0f} {self.task.unit}/s | "
                             f"epoch ETA {left / 60:.1f} min")
                self.metrics.write({"split": "train", "epoch": self.epoch + 1, "step": self.global_step,
                                    "lr": self.schedule.get_lr(), "examples_per_s": rate, **running})
            if cfg.eval_every and self.global_step % cfg.eval_every == 0 and has_valid:
                with self._averaged_weights():
                    valid = self.evaluate("valid")
                    self.metrics.write({"split": "valid", "epoch": self.epoch + 1, "step": self.global_step,
                                        **valid})
                    self._after_valid(valid)
            if (cfg.max_steps and self.global_step >= cfg.max_steps) or self._out_of_time():
                break
            (stop_now,) = D.any_rank(self.stop_signal is not None)  # a signal to one rank stops them all
            if (cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0) or stop_now:
                self.epoch_time += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.checkpoint()
            if stop_now:
                bar.close()
                name = signal.Signals(self.stop_signal or signal.SIGTERM).name
                raise Interrupted(
                    f"stopped by {name} at step {self.global_step}; checkpoint written, continue with "
                    f"`seqlab train --resume {self.run_dir}`"
                )
        bar.close()
        self.epoch_time += time.perf_counter() - t0
        self._end_epoch(has_valid)

    def _unfreeze(self) -> None:
        """`train.gradual_unfreezing`: epoch e (from 1) trains the top e layer groups (`optim.layer_groups`); a
        parameter the run froze (task.freeze_pretrained) stays frozen."""
        if self.groups is None:
            return
        first = len(self.groups) - (self.epoch + 1)
        for i, group in enumerate(self.groups):
            for p in group:
                p.requires_grad_(i >= first and self.trainable[id(p)])

    def _out_of_time(self) -> bool:
        """`train.max_seconds` have passed since this process started training (every rank agrees)."""
        if self.cfg.max_seconds is None:
            return False
        (late,) = D.any_rank(time.perf_counter() - self.started >= self.cfg.max_seconds)
        return late

    def _done(self) -> bool:
        """All epochs run, `max_steps` or `max_seconds` reached, or no improvement for `early_stopping` epochs."""
        c = self.cfg
        return (self.epoch >= self.epochs or bool(c.max_steps and self.global_step >= c.max_steps)
                or bool(c.early_stopping and self.bad_epochs >= c.early_stopping) or self._out_of_time())

    def _end_epoch(self, has_valid: bool) -> None:
        sums = D.all_reduce_sums(self.epoch_sums)
        train = self.task.summarize(sums) if sums else {"loss": math.nan}
        train_rate = sums.get("examples", sums.get("n", 0.0)) / max(self.epoch_time, 1e-9)
        self.metrics.write({"split": "train_epoch", "epoch": self.epoch + 1, "step": self.global_step,
                            "seconds": self.epoch_time, "examples_per_s": train_rate, **train})
        valid, t0 = None, time.perf_counter()
        with self._averaged_weights():
            if has_valid:
                valid = self.evaluate("valid")
                self.metrics.write({"split": "valid", "epoch": self.epoch + 1, "step": self.global_step, **valid})
                self._after_valid(valid)
            else:
                self._save_weights()
        self._snapshot()
        if self.task.headline in train:
            self.log(_fmt_epoch(self.epoch, self.epoch_time, train, valid, self.task.headline))
        if self.cfg.budget_seconds:
            self._fit_budget(time.perf_counter() - t0)
        stop_early = bool(self.cfg.early_stopping and self.bad_epochs >= self.cfg.early_stopping)
        if stop_early:
            self.log(f"early stopping: no improvement of valid {self.metric} for {self.bad_epochs} epochs")
        self.epoch += 1
        self.step_in_epoch = 0
        self.finished = self._done()
        gap = self.cfg.checkpoint_seconds
        (due,) = D.any_rank(self.finished or not gap or time.perf_counter() - self.last_checkpoint >= gap)
        if due:  # a run of seconds writes its last epoch's checkpoint only
            self.checkpoint()

    def _final(self, has_valid: bool) -> dict[str, dict[str, float]]:
        self._average_snapshots(has_valid)
        D.barrier()  # rank 0 has written the best weights
        load_weights(self.model, self.run_dir / "model.safetensors")
        result: dict[str, dict[str, float]] = {}
        if has_valid and self.best is not None:
            result["valid"] = {self.metric: self.best, "epoch": (self.best_epoch or 0) + 1}
            if self.averaged:
                result["valid"]["averaged_epochs"] = self.averaged
        if self.main:
            self.model.eval()
            with torch.no_grad(), autocast(self.device, self.precision):
                self.task.before_test(self.model)  # e.g. thresholds tuned on valid with the kept weights
        if self.test and self.task.has_split("test"):
            test = self.evaluate("test")
            result["test"] = test
            self.metrics.write({"split": "test", "epoch": self.epoch, "step": self.global_step, **test})
        if self.skipped_steps:
            self.log(f"skipped {self.skipped_steps} steps with a non-finite loss or gradient")
        return result
