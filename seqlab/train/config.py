"""The trainer's options (the `train:` section of a config)."""

from __future__ import annotations

from dataclasses import dataclass

from seqlab.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine", "linear")


@dataclass
class TrainConfig:
    """Defaults are the lecture's recipe (SGD lr 4.0, StepLR γ=0.9 per epoch, 5 epochs, batch 16)."""

    epochs: int = 5
    batch_size: int = 16
    eval_batch_size: int = 256
    max_steps: int | None = None  # stop after this many optimiser steps (None: run all epochs)
    optimizer: str = "sgd"
    lr: float = 4.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: list | None = None  # Adam/AdamW (β1, β2); None: torch's defaults
    schedule: str = "step"  # constant|step|exponential|cosine|linear (linear decay to 0)
    gamma: float = 0.9  # step/exponential: factor per `step_size` epochs
    step_size: int = 1  # step: decay every this many epochs
    warmup_steps: int = 0  # linear warm-up, composes with every schedule
    min_lr_ratio: float = 0.0  # cosine/linear end at lr * min_lr_ratio
    clip_grad_norm: float | None = None
    metric: str | None = None  # valid metric that picks the best epoch (None: the task's default)
    early_stopping: int | None = None  # patience in epochs without improvement
    eval_every: int = 0  # also evaluate on valid every N steps (0: at epoch ends only)
    checkpoint_every: int = 0  # steps between checkpoints (0: at epoch ends only)
    keep_checkpoints: int = 2
    on_nonfinite: str = "stop"  # stop|skip: a NaN/inf loss or gradient
    log_every: int = 50  # steps between train lines in metrics.jsonl
    bucket: bool = True  # padded models: batches of similar length (less padding)
    compile: bool = False  # torch.compile the model for training steps (needs a C compiler on the CPU)

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"train.on_nonfinite must be stop or skip, got {self.on_nonfinite!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "keep_checkpoints", "step_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if self.betas is not None and len(self.betas) != 2:
            raise ConfigError(f"train.betas must be two numbers, got {self.betas!r}")
