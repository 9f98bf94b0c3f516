"""Configuration as data: dataclasses hold every default, YAML presets override them, `key=value`
overrides override the presets, and the resolved tree is written to the run directory.

The tree::

    format_version, seed, device, precision, threads, dataset, init_from
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
from typing import Any, Literal

import yaml

from seqlab.errors import ConfigError
from seqlab.models import MODELS
from seqlab.options import Dropout, Positive, Range
from seqlab.tasks import TASKS
from seqlab.train.config import TrainConfig

FORMAT_VERSION = 2

# Format 2 gave every model the same names for the same things: `dim` (token embeddings, and a Transformer's
# width), `hidden` (an RNN's state, or an encoder's width when it differs from `dim`), `ff_dim`, `heads`,
# `layers` (`decoder_layers` where a decoder stack differs), `positions`, `tie_embeddings`.
# task -> model -> {format-1 name: format-2 name}; `migrate` applies it to format-1 trees (run directories).
RENAMED_IN_2: dict[str, dict[str, dict[str, str]]] = {
    "classify": {
        "cnn": {"embed_dim": "dim"},
        "rnn": {"embed_dim": "dim", "hidden_dim": "hidden", "num_layers": "layers"},
        "transformer": {"d_model": "dim", "n_heads": "heads", "n_layers": "layers", "d_ff": "ff_dim",
                        "positional": "positions"},
    },
    "tag": {"cnn": {"channels": "hidden"}, "transformer": {"d_model": "hidden", "d_ff": "ff_dim"}},
    "lm": {
        "rnn": {"emb_dim": "dim", "hidden_dim": "hidden", "tie_weights": "tie_embeddings"},
        "transformer": {"d_model": "dim", "n_heads": "heads", "d_ff": "ff_dim", "tie_weights": "tie_embeddings"},
    },
    "translate": {
        "rnn": {"embed_dim": "dim", "hidden_dim": "hidden", "enc_layers": "layers", "dec_layers": "decoder_layers"},
        "transformer": {"d_model": "dim", "n_heads": "heads", "enc_layers": "layers",
                        "dec_layers": "decoder_layers", "d_ff": "ff_dim"},
    },
    "caption": {
        "rnn": {"embed_dim": "dim", "hidden_dim": "hidden"},
        "transformer": {"d_model": "dim", "n_heads": "heads", "dec_layers": "layers", "d_ff": "ff_dim"},
    },
}


def _names(tree: dict, section: str, default: str) -> str:
    raw = tree.get(section, default)
    return str(raw.get("name", default) if isinstance(raw, dict) else raw)


def migrate(tree: dict) -> dict:
    """A config tree of an older `format_version` (a run directory written by an older seqlab) in today's
    format; a tree without `format_version` is taken as today's."""
    version = tree.get("format_version", FORMAT_VERSION)
    if version == FORMAT_VERSION:
        return tree
    if version != 1:
        raise ConfigError(f"config format_version {version!r} is not supported by this seqlab "
                          f"(it reads 1 and {FORMAT_VERSION})")
    tree = dict(tree, format_version=FORMAT_VERSION)
    if isinstance(tree.get("data"), dict):
        tree["data"] = {k: v for k, v in tree["data"].items() if k != "workers"}  # never read; gone in 2
    task = _names(tree, "task", "classify")
    renamed = RENAMED_IN_2.get(task, {}).get(_names(tree, "model", TASKS[task].default_model if task in TASKS
                                                    else ""), {})
    if isinstance(tree.get("model"), dict) and renamed:
        tree["model"] = {renamed.get(k, k): v for k, v in tree["model"].items()}
    return tree


@dataclass
class DataConfig:
    """Where the examples are and how to read them. With `train` unset, the named `dataset` (or the
    task's default dataset) fills train/valid/test."""

    train: str | None = None  # the training file (or folder, prefix): see the task for its formats
    valid: str | None = None  # None: data.valid_fraction of train is held out
    test: str | None = None  # None: no test split (a named dataset has its own)
    format: str = "auto"  # auto: by the file's name and first lines; the task lists its formats
    encoding: str = "utf-8"  # of every data file
    header: bool | None = None  # csv/tsv: None detects a header line
    label_column: int | str = 0  # csv/tsv: index or header name of the label
    text_columns: list | None = None  # csv/tsv: the columns joined as the text (None: all but the label)
    text_key: str = "text"  # jsonl
    label_key: str = "label"  # jsonl
    valid_fraction: Dropout = 0.05  # share of train held out as valid when there is no valid file
    skip_bad_rows: bool = False  # skip (and count) malformed rows instead of stopping at the first


@dataclass
class Config:
    """A whole run. `task_options` / `model_options` are the chosen task's and model's own dataclasses."""

    task: str = "classify"  # classify | tag | translate | lm | image | caption (and any task in seqlab.tasks.TASKS)
    model: str = "bag"  # the task's model (the task's default when task= is given alone)
    dataset: str | None = None  # a named dataset (see `seqlab presets datasets`); None: data.* or the task's default
    seed: int = 0  # every random choice of a run: initialisation, shuffling, dropout, the held-out split
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: CUDA when there is one, else the CPU
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # autocast precision (bf16/fp16 pay on GPUs;
    # auto: the faster for this model here, measured on a few steps, seqlab.train.precision)
    threads: Positive | None = None  # torch's CPU threads (None: torch's default)
    init_from: str | None = None  # a run directory whose matching layers (and words) the model starts from
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
            "init_from": self.init_from,
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


_SCALARS = ("dataset", "seed", "device", "precision", "threads", "init_from", "format_version")


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


PRESETS = Path(__file__).parent / "configs"  # the presets shipped in the package, by name: `sst2/bag`


def preset_names() -> list[str]:
    """Every shipped preset's name, sorted (`digits/convnet`, ..., `ud_english/rnn`)."""
    return sorted(str(p.relative_to(PRESETS).with_suffix("")) for p in PRESETS.glob("*/*.yaml"))


def find_preset(name: str | os.PathLike) -> Path:
    """A preset file: `name` as a path, else the shipped preset of that name (`sst2/bag`, `sst2/bag.yaml`, or
    seqlab 0.1's checkout path `configs/sst2/bag.yaml`)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = str(name).removeprefix("configs/").removesuffix(".yaml")
    shipped = PRESETS / f"{stem}.yaml"
    if shipped.is_file():
        return shipped
    near = difflib.get_close_matches(stem, preset_names(), n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else " (`seqlab presets` lists them)"
    raise ConfigError(f"no such preset file, nor a preset named {stem!r}{hint}")


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


def _suggest(key: Any, known: list[str]) -> str:
    near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(sorted(known))}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert) a value against a dataclass field's type annotation: unions, `Literal`
    choices, `Annotated[T, Range(...)]` bounds (on each element of a list), lists, bool, int, float, str."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(tp)
        value = _coerce(value, base, key)
        for r in (e for e in extras if isinstance(e, Range)):
            for v in value if isinstance(value, list) else [value]:
                problem = None if v is None else r.problem(v)
                if problem:
                    raise ConfigError(f"{key} {problem}, got {value!r}")
        return value
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) is type(choices[choices.index(value)]):
            return value
        shown = ", ".join(str(c) for c in choices)
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{key} must be one of {shown}, got {value!r}{hint}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or value in ("None", "none")):  # YAML's null, or Python's habit
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
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item, key) for v in value]
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


def build_dataclass(cls: type, values: dict, prefix: str, renamed: dict[str, str] | None = None) -> Any:
    """Instantiate `cls` from a raw mapping, rejecting unknown keys (`renamed`: old name -> today's, for
    the message) and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix} must be a section (a mapping), got {values!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        if k not in names:
            if renamed and renamed.get(k) in names:
                raise ConfigError(f"unknown key {prefix}.{k}: it is called {prefix}.{renamed[k]} since config "
                                  f"format 2")
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


def model_recipe(model_cls: type) -> dict[str, dict]:
    """A model's own training recipe (`recipe` on its class: dotted `train.*` / `task.*` keys, the defaults it
    trains with when neither a preset nor an override says otherwise), as sections: {"train": {...}, ...}."""
    out: dict[str, dict] = {}
    for key, value in getattr(model_cls, "recipe", {}).items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def resolve(tree: dict) -> Config:
    """Turn a raw tree (defaults ⊕ preset ⊕ overrides) into a validated `Config`."""
    tree = dict(tree)
    top = [f.name for f in dataclasses.fields(Config) if f.name not in ("task_options", "model_options")]
    for k in tree:
        if k not in top:
            raise ConfigError(f"unknown key {k!r}" + _suggest(k, top))
    tree = migrate(tree)

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
    recipe = model_recipe(models[model_name])
    cfg = Config(
        task=task_name,
        model=model_name,
        data=build_dataclass(DataConfig, tree.get("data") or {}, "data"),
        train=build_dataclass(TrainConfig, {**recipe.get("train", {}), **(tree.get("train") or {})}, "train"),
        task_options=build_dataclass(TASKS[task_name].Config, {**recipe.get("task", {}), **task_raw}, "task"),
        model_options=build_dataclass(models[model_name].Config, model_raw, "model",
                                      RENAMED_IN_2.get(task_name, {}).get(model_name)),
    )
    hints = typing.get_type_hints(Config, include_extras=True)
    for k in _SCALARS:
        if k in tree:
            setattr(cfg, k, _coerce(tree[k], hints[k], k))
    return cfg


def make_config(preset: str | os.PathLike | dict | None = None, overrides: dict | list | None = None) -> Config:
    """defaults ⊕ preset (a YAML path or a mapping) ⊕ overrides (a mapping of dotted keys, or
    `key=value` strings as typed on the command line)."""
    tree: dict = {}
    if isinstance(preset, dict):
        for k, v in preset.items():
            apply_override(tree, k, v)
    elif preset is not None:
        tree = load_yaml(find_preset(preset))
        tree.pop("tune", None)  # the preset's search space, for `seqlab tune` (seqlab.tuning reads it)
    for k, v in parse_overrides(overrides).items():
        apply_override(tree, k, v)
    return resolve(tree)


def parse_overrides(overrides: dict | list | None) -> dict[str, Any]:
    """`key=value` strings (as typed on the command line) or a mapping -> a mapping of dotted keys to values."""
    if isinstance(overrides, dict) or not overrides:
        return dict(overrides or {})
    out = {}
    for s in overrides:
        if "=" not in s:
            raise ConfigError(f"expected key=value, got {s!r}")
        k, v = s.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


# ---------------------------------------------------------------------------------------------- describing keys
def _field_help(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field of a dataclass (and of the dataclasses it inherits), with the
    comment lines that continue it."""
    import inspect
    import re

    out: dict[str, str] = {}
    for klass in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        name = None
        for line in lines:
            field_line = re.match(r"\s+(\w+): [^#]*?(?:#\s*(.*))?$", line)
            if field_line and not line.lstrip().startswith("#"):
                name = field_line.group(1)
                if field_line.group(2):
                    out[name] = field_line.group(2).strip()
            elif name and (comment := re.match(r"\s+#\s*(.*)$", line)) and name in out:
                out[name] += " " + comment.group(1).strip()
            else:
                name = None
    return out


def _type_name(tp: Any) -> str:
    """A field's type as `seqlab presets` shows it: `int >= 1`, `one of a, b`, `float in [0, 1)`, ..."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(tp)
        bounds = [e.describe() for e in extras if isinstance(e, Range)]
        return _type_name(base) + (f" ({bounds[0]})" if bounds else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " | ".join(_type_name(a) for a in args) + (" | null" if len(args) < len(typing.get_args(tp)) else "")
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return f"list of {_type_name(item)}"
    return getattr(tp, "__name__", str(tp))


def describe_keys() -> list[dict]:
    """Every config key: its dotted name, type, default and help, the task and model sections once per task
    and model (`section`: top, data, train, task:NAME, model:TASK/NAME)."""
    def rows(cls: type, prefix: str, section: str, skip: tuple[str, ...] = ()) -> list[dict]:
        hints, helps = typing.get_type_hints(cls, include_extras=True), _field_help(cls)
        out = []
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out.append({"key": f"{prefix}{f.name}", "section": section, "type": _type_name(hints[f.name]),
                        "default": default, "help": helps.get(f.name, "")})
        return out

    out = rows(Config, "", "top", skip=("data", "train", "task_options", "model_options", "format_version"))
    out += rows(DataConfig, "data.", "data") + rows(TrainConfig, "train.", "train")
    for task, cls in TASKS.items():
        out += rows(cls.Config, "task.", f"task:{task}")
        for model, mcls in MODELS.get(task, {}).items():
            out += rows(mcls.Config, "model.", f"model:{task}/{model}")
            out += [{"key": key, "section": f"model:{task}/{model}", "type": "its recipe", "default": value,
                     "help": f"this model trains with {key}={value} unless told otherwise"}
                    for key, value in getattr(mcls, "recipe", {}).items()]
    return out
