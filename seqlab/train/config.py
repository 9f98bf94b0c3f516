"""The trainer's options (the `train:` section of a config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from seqlab.errors import ConfigError
from seqlab.options import NonNegative, NonNegativeFloat, Positive, PositiveFloat, Range

Decay = Annotated[float, Range(0.0, 1.0, min_open=True, max_open=True)]  # a factor in (0, 1)


@dataclass
class TrainConfig:
    """Defaults are the lecture's recipe (SGD lr 4.0, StepLR γ=0.9 per epoch, 5 epochs, batch 16)."""

    epochs: Positive = 5  # passes over the training data
    batch_size: Positive = 16  # examples per optimiser step
    eval_batch_size: Positive = 256  # examples per forward pass in evaluation and prediction
    max_steps: Positive | None = None  # stop after this many optimiser steps (None: run all epochs)
    max_seconds: PositiveFloat | None = None  # stop training after this many seconds (None: no limit); the
    # epoch it cuts is evaluated, the best weights kept (`seqlab tune` gives each trial what its budget has left)
    budget_seconds: PositiveFloat | None = None  # plan the epochs to fill this many seconds: after each epoch of
    # the first half of the run, as many epochs as fit at the mean measured epoch time (training and valid),
    # train.epochs at most, and the schedule (cosine, linear) decays over them; the first epoch's rates follow
    # the schedule over train.epochs; a task's own training before the epochs (caption: task.concept_epochs)
    # counts against the budget
    optimizer: Literal["sgd", "adam", "adamw", "adagrad", "muon"] = "sgd"  # sgd: the lecture's; adagrad: row-wise
    # if sparse; muon: Muon for the hidden layers' matrices (optim.Muon), AdamW (lr, betas, weight decay) for the rest
    muon_lr: PositiveFloat = 0.02  # muon: the matrices' learning rate (the peak; the schedule scales it as lr)
    muon_momentum: NonNegativeFloat = 0.95  # muon: Nesterov momentum of the matrices' updates
    lr: PositiveFloat = 4.0  # learning rate (the peak, with a schedule)
    momentum: NonNegativeFloat = 0.0  # sgd
    weight_decay: NonNegativeFloat = 0.0  # L2 (sgd, adam, adagrad) or decoupled (adamw) weight decay
    betas: list[float] | None = None  # Adam/AdamW (β1, β2); None: torch's defaults
    schedule: Literal["constant", "step", "exponential", "cosine", "linear"] = "step"  # linear: decay to 0
    gamma: PositiveFloat = 0.9  # step/exponential: factor per `step_size` epochs
    step_size: Positive = 1  # step: decay every this many epochs
    warmup_steps: NonNegative = 0  # linear warm-up, composes with every schedule
    min_lr_ratio: NonNegativeFloat = 0.0  # cosine/linear end at lr * min_lr_ratio
    layer_lr_decay: PositiveFloat = 1.0  # discriminative fine-tuning (ULMFiT): each layer group below the top
    # trains at this times the lr of the one above (2.6 ** -1 in ULMFiT); adam/adamw (see optim.layer_groups)
    gradual_unfreezing: bool = False  # epoch e trains the top e layer groups only (ULMFiT), then all
    clip_grad_norm: PositiveFloat | None = None  # clip the gradients' global norm (None: no clipping)
    metric: str | None = None  # valid metric that picks the best epoch (None: the task's default)
    early_stopping: Positive | None = None  # patience in epochs without improvement
    eval_every: NonNegative = 0  # also evaluate on valid every N steps (0: at epoch ends only)
    checkpoint_every: NonNegative = 0  # steps between checkpoints (0: at epoch ends only)
    checkpoint_seconds: NonNegativeFloat = 30.0  # an epoch end checkpoints when this long passed since the last
    # one (0: every epoch end); the last epoch always does, and SIGTERM/SIGINT too
    keep_checkpoints: Positive = 2  # checkpoints kept in RUN/checkpoints (the oldest are deleted)
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient
    log_every: Positive = 50  # steps between train lines in metrics.jsonl
    tensorboard: bool = False  # also write metrics.jsonl's figures as TensorBoard events in RUN/tensorboard
    bucket: bool = True  # padded models: batches of similar length (less padding)
    compile: bool = False  # torch.compile the model for training steps (needs a C compiler on the CPU)

    # Averaged weights (see Trainer._update_ema): valid/test evaluations and the kept best weights use an exponential
    # moving average of the weights; training goes on with the raw ones; checkpoints carry the average
    ema: bool = False  # evaluate and keep the averaged weights
    ema_decay: Decay = 0.999  # after each optimiser step: ema <- ema_decay * ema + (1 - ema_decay) * weights
    ema_start: NonNegative = 0  # the average starts from the weights after this many steps (0: the initial ones)
    average_last: NonNegative = 0  # checkpoint averaging (Vaswani et al. 2017): after the last epoch, the mean of
    # the weights at the last N epoch ends is evaluated on valid and kept when it beats the best epoch (0, 1: off)

    # `seqlab tune`'s search space over these keys (a preset narrows or extends it under `tune:`): `times` is a
    # range around the preset's value (log scale; an integer key stays an integer); see seqlab.tuning.space
    space: ClassVar[dict] = {"train.lr": {"times": [0.1, 10]}, "train.epochs": {"times": [0.5, 3]},
                             "train.batch_size": {"times": [0.25, 4]}}

    def validate(self) -> None:
        if self.betas is not None and len(self.betas) != 2:
            raise ConfigError(f"train.betas must be two numbers, got {self.betas!r}")
        if self.muon_momentum >= 1:
            raise ConfigError(f"train.muon_momentum must be below 1, got {self.muon_momentum}")
        if self.average_last > 1 and self.ema:
            raise ConfigError("train.average_last and train.ema are two averages of the weights: choose one")
        if self.layer_lr_decay != 1.0 and self.optimizer not in ("adam", "adamw"):
            raise ConfigError(f"train.layer_lr_decay takes train.optimizer=adam or adamw, got {self.optimizer}")
