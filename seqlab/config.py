"""Configuration as data: dataclasses hold every default, YAML presets override them, `key=value`
overrides override the presets, and the resolved tree is written to the run directory.

The tree::

    format_version, seed, device, precision, threads, dataset
    task:  {name: classify, <the task's options, see tasks/<name>.py>}
    model: {name: bag,      <the model's options, see models/<name>.py>}
    data:  DataConfig       (files and how to read them)
    train: TrainConfig      (optimiser, schedule, epochs, checkpoints)

`model=cnn` (a plain string for a section) selects another model and drops the previous model's
options; `model.dim=64` sets one option. Unknown keys are errors that suggest the nearest key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seqlab.errors import ConfigError
from seqlab.models import MODELS
from seqlab.tasks import TASKS
from seqlab.train.config import TrainConfig

FORMAT_VERSION = 1


@dataclass
class DataConfig:
    """Where the examples are and how to read them. With `train` unset, the named `dataset` (or the
    task's default dataset) fills train/valid/test."""

    train: str | None = None
    valid: str | None = None
    test: str | None = None
    format: str = "auto"
    encoding: str = "utf-8"
    header: bool | None = None
    label_column: int | str = 0
    text_columns: list | None = None
    text_key: str = "text"
    label_key: str = "label"
    valid_fraction: float = 0.05
    skip_bad_rows: bool = False
    workers: int = 0


@dataclass
class Config:
    """A whole run. `task_options` / `model_options` are the chosen task's and model's own dataclasses."""

    task: str = "classify"
    model: str = "bag"
    dataset: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task_options: Any = None
    model_options: Any = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        """The YAML tree (sections `task` and `model` carry their `name`)."""
        return {
            "format_version": self.format_version,
            "task": {"name": self.task, **dataclasses.asdict(self.task_options)},
            "model": {"name": self.model, **dataclasses.asdict(self.model_options)},
            "dataset": self.dataset,
            "seed": self.seed,
            "device": self.device,
            "precision": self.precision,
            "threads": self.threads,
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


_SCALARS = ("dataset", "seed", "device", "precision", "threads", "format_version")
_CHOICES = {"device": ("auto", "cpu", "cuda", "mps"), "precision": ("fp32", "bf16", "fp16")}


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a preset or a run's config.yaml with the safe loader (never constructs Python objects)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file not found", path=p)
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML ({getattr(e, 'problem', e)})", path=p, line=line) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=p) from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError("a config file must hold a mapping of keys to values", path=p)
    return tree


def parse_value(text: str) -> Any:
    """`key=value` values are YAML scalars/lists: `3`, `0.5`, `true`, `null`, `[3,4,5]`, `hello`."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def apply_override(tree: dict, key: str, value: Any) -> None:
    """Set a dotted key in the raw tree. A string given to the `task`/`model` section selects by name
    and drops the options meant for the previous choice."""
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"bad key {key!r}")
    if len(parts) == 1 and parts[0] in ("task", "model") and not isinstance(value, dict):
        old = tree.get(parts[0])
        old_name = old.get("name") if isinstance(old, dict) else old
        tree[parts[0]] = {"name": value} if value != old_name else (old if isinstance(old, dict) else {"name": value})
        return
    node = tree
    for p in parts[:-1]:
        nxt = node.get(p)
        if isinstance(nxt, str) and p in ("task", "model"):
            nxt = {"name": nxt}
        elif nxt is None:
            nxt = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts[:parts.index(p) + 1])} is a value, not a section (in {key!r})")
        node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def _suggest(key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(sorted(known))}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert) a value against a dataclass field's type annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{key}: bad value {value!r}")
    if tp is Any:
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            return [value]
        raise ConfigError(f"{key} must be a list, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def build_dataclass(cls: type, values: dict, prefix: str) -> Any:
    """Instantiate `cls` from a raw mapping, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix} must be a section (a mapping), got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        if k not in names:
            raise ConfigError(f"unknown key {prefix}.{k}" + _suggest(k, names))
        kwargs[k] = _coerce(v, hints[k], f"{prefix}.{k}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix}: {e}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def resolve(tree: dict) -> Config:
    """Turn a raw tree (defaults ⊕ preset ⊕ overrides) into a validated `Config`."""
    tree = dict(tree)
    top = [f.name for f in dataclasses.fields(Config) if f.name not in ("task_options", "model_options")]
    for k in tree:
        if k not in top:
            raise ConfigError(f"unknown key {k!r}" + _suggest(k, top))
    version = tree.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"config format_version {version} is not supported by this seqlab (expects {FORMAT_VERSION})"
        )

    def section(name: str, default: str) -> tuple[str, dict]:
        raw = tree.get(name, default)
        raw = {"name": raw} if isinstance(raw, str) else dict(raw or {})
        return str(raw.pop("name", default)), raw

    task_name, task_raw = section("task", "classify")
    if task_name not in TASKS:
        raise ConfigError(f"unknown task {task_name!r}" + _suggest(task_name, list(TASKS)))
    model_name, model_raw = section("model", TASKS[task_name].default_model)
    models = MODELS.get(task_name, {})
    if model_name not in models:
        raise ConfigError(
            f"unknown model {model_name!r} for task {task_name}" + _suggest(model_name, list(models))
        )
    cfg = Config(
        task=task_name,
        model=model_name,
        data=build_dataclass(DataConfig, tree.get("data") or {}, "data"),
        train=build_dataclass(TrainConfig, tree.get("train") or {}, "train"),
        task_options=build_dataclass(TASKS[task_name].Config, task_raw, "task"),
        model_options=build_dataclass(models[model_name].Config, model_raw, "model"),
    )
    hints = typing.get_type_hints(Config)
    for k in _SCALARS:
        if k in tree:
            setattr(cfg, k, _coerce(tree[k], hints[k], k))
    for k, choices in _CHOICES.items():
        if getattr(cfg, k) not in choices:
            raise ConfigError(f"{k} must be one of {', '.join(choices)}, got {getattr(cfg, k)!r}")
    if not 0.0 <= cfg.data.valid_fraction < 1.0:
        raise ConfigError(f"data.valid_fraction must be in [0, 1), got {cfg.data.valid_fraction}")
    return cfg


def make_config(preset: str | os.PathLike | dict | None = None, overrides: dict | list | None = None) -> Config:
    """defaults ⊕ preset (a YAML path or a mapping) ⊕ overrides (a mapping of dotted keys, or
    `key=value` strings as typed on the command line)."""
    tree: dict = {}
    if isinstance(preset, dict):
        for k, v in preset.items():
            apply_override(tree, k, v)
    elif preset is not None:
        tree = load_yaml(preset)
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    elif overrides:
        for s in overrides:
            if "=" not in s:
                raise ConfigError(f"expected key=value, got {s!r}")
            k, v = s.split("=", 1)
            items.append((k.strip(), parse_value(v)))
    for k, v in items:
        apply_override(tree, k, v)
    return resolve(tree)
