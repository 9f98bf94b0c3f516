"""The types of config options, declared once on the dataclasses and checked by `seqlab.config`:

    cell: Literal["rnn", "lstm", "gru"] = "lstm"      # a choice
    layers: Positive = 2                              # an integer >= 1
    dropout: Dropout = 0.1                            # a float in [0, 1)
    widths: Annotated[list[int], Range(min=1)] = ...  # a bound applies to each element of a list

Cross-field rules (`dim` divisible by `heads`, ...) stay in the dataclass's `validate()`. This module
imports nothing of seqlab, so every layer may use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """Bounds of a number (inclusive unless `*_open`)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def problem(self, value: float) -> str | None:
        """Why `value` is out of range, or None."""
        low = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        high = self.max is not None and (value >= self.max if self.max_open else value > self.max)
        return f"must be {self.describe()}" if low or high else None

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        if self.min is not None:
            named = {(1, False): "at least 1", (0, True): "positive"}
            return named.get((self.min, self.min_open), f"{'>' if self.min_open else '>='} {self.min:g}")
        return f"{'<' if self.max_open else '<='} {self.max:g}"


Positive = Annotated[int, Range(min=1)]
NonNegative = Annotated[int, Range(min=0)]
Dropout = Annotated[float, Range(0.0, 1.0, max_open=True)]  # a probability that must leave something
PositiveFloat = Annotated[float, Range(0.0, min_open=True)]
NonNegativeFloat = Annotated[float, Range(min=0.0)]
PositiveInts = Annotated[list[int], Range(min=1)]
NonNegativeInts = Annotated[list[int], Range(min=0)]
NonNegativeFloats = Annotated[list[float], Range(min=0.0)]


# `seqlab tune`'s search space of the models trained with dense gradients (each model class's `space`, beside its
# `recipe`; the trainer's own is `TrainConfig.space`): how much to regularise
DENSE_SPACE: dict = {"model.dropout": {"low": 0.0, "high": 0.6},
                     "train.weight_decay": {"low": 1e-6, "high": 0.1, "log": True}}
