"""`seqlab tune`'s search space: its parameters (`Param`, parsed from a preset's `tune:` forms), the space of a
preset (`search_space`), and the durations and sizes of the command line."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from seqlab.config import _suggest, find_preset, load_yaml, make_config
from seqlab.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a float or int range (optionally log-scaled, stepped) or a choice."""

    key: str  # the dotted config key (train.lr, model.dim, task.ngrams...)
    kind: Literal["float", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> list:
        """The values at the edges of the dimension (checked against the config before the search starts)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key}: one of {', '.join(map(str, self.choices))}"
        return f"{self.key}: {self.kind} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_param(key: str, spec: Any, base: Any) -> Param:
    """A Param from its YAML form (see the module docstring); `base` is the preset's value of the key."""
    where = f"tune: {key}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices")
        return Param(key, "choice", choices=tuple(spec))
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a list of choices or a mapping with low/high or times, got {spec!r}")
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "times"})
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}" + _suggest(unknown[0], ["low", "high", "log",
                                                                                          "step", "times"]))
    log = spec.get("log", "times" in spec)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if "times" in spec:
        times = spec["times"]
        if not (isinstance(times, list) and len(times) == 2 and all(_number(t) and t > 0 for t in times)):
            raise ConfigError(f"{where}: times must be two positive numbers [low, high], got {times!r}")
        if not _number(base) or base <= 0:
            raise ConfigError(f"{where}: times needs a positive preset value, and the preset's is {base!r}")
        if isinstance(base, int):
            low = max(1, round(base * times[0]))
            high = max(low, round(base * times[1]))
        else:
            low, high = base * times[0], base * times[1]
    elif "low" in spec and "high" in spec:
        low, high = spec["low"], spec["high"]
        if not (_number(low) and _number(high)):
            raise ConfigError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    else:
        raise ConfigError(f"{where}: give both low and high, or times")
    step = spec.get("step")
    if step is not None and (not _number(step) or step <= 0):
        raise ConfigError(f"{where}: step must be a positive number, got {step!r}")
    if low > high:
        raise ConfigError(f"{where}: low {low} is above high {high}")
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"{where}: a log range needs low > 0 and no step")
    whole = isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int))
    return Param(key, "int" if whole else "float", low, high, log, step)


def _lookup(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _keys(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def search_space(preset: str | os.PathLike | None, overrides: dict | None = None) -> list[Param]:
    """The space a study searches for `preset` with `overrides` fixed: TrainConfig.space ⊕ the task's and the
    model's `space` ⊕ the preset's `tune:` section, less the overridden keys. ConfigError for an unknown key, a
    malformed range, a value the config refuses, or an empty space."""
    from seqlab.models import MODELS
    from seqlab.tasks import TASKS
    from seqlab.train.config import TrainConfig

    overrides = dict(overrides or {})
    cfg = make_config(preset, overrides)
    space = {**TrainConfig.space, **getattr(TASKS[cfg.task].Config, "space", {}),
             **getattr(MODELS[cfg.task][cfg.model], "space", {})}
    section = load_yaml(find_preset(preset)).get("tune") if preset is not None else None
    if section is not None and not isinstance(section, dict):
        raise ConfigError("the preset's tune: section must map config keys to ranges or choices")
    tree = cfg.to_dict()
    known = _keys(tree)
    for key, spec in (section or {}).items():
        if key not in known:
            raise ConfigError(f"tune: unknown key {key!r}" + _suggest(key, known))
        if spec is None:
            space.pop(key, None)
        else:
            space[key] = spec
    params = [parse_param(key, spec, _lookup(tree, key)) for key, spec in space.items()
              if key not in overrides and key in known]
    if not params:
        raise ConfigError("the search space is empty: every key of it is fixed by an override or removed by the "
                          "preset's tune: section")
    for p in params:  # each edge of each dimension must make a valid config
        for value in p.values():
            try:
                make_config(preset, {**overrides, p.key: value})
            except ConfigError as e:
                raise ConfigError(f"tune: {p.key} = {value!r} is not a valid value ({e.message})") from None
    return params


def parse_budget(text: str) -> float:
    """'10m', '90s', '1.5h' or a number of seconds -> seconds (> 0)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text))
    if not m:
        raise ConfigError(f"--budget must be a duration such as 10m, 90s or 1h, got {text!r}")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds <= 0:
        raise ConfigError(f"--budget must be positive, got {text!r}")
    return seconds


def parse_size(text: str) -> int:
    """'2M', '500K', '1.5G' or a number of bytes -> bytes (> 0), as fastText's -autotune-modelsize."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMG]?)B?\s*", str(text), flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--max-size must be a size such as 2M, 500K or 1G, got {text!r}")
    return int(float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2).upper()])
