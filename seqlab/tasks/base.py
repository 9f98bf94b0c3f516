"""The task contract, written once: `Task` (what the trainer, the API and the shells need from a task, with the
scaffolding every task shares) and `Predictor` (what `seqlab.load(run_dir)` returns, for every task).

A task is one module in `seqlab/tasks/` with a `Task` subclass and a `Predictor` subclass, plus one line in
`TASKS`. Its module keeps only what is its own: how it reads a file, builds its vocabularies, encodes a
split, makes a batch, computes its loss and metrics, and predicts. The rest is here:

- sources: `data.train/valid/test`, or the named dataset's files; the format (`data.format`, or detected by
  `seqlab.data.readers.detect_format` among the task's `formats`); a split held out of train when there is
  no valid split (the lecture's random_split, seeded); the counts of a run; skipped bad rows reported once.
- the trainer's protocol (`seqlab.train.trainer.TrainTask`, a subset of this class): the seeded epoch plan
  (shuffled, or bucketed by length), `has_split`, no-op state hooks;
- artifacts: one JSON file per task (`artifact`), read back with a one-line CheckpointError when missing
  or corrupt; tasks with tokenizer files add them.

The shells (CLI, HTTP server, web page, ONNX export, reports) use only `seqlab.api` and the `Predictor`:
its `inputs` (what an item is), `options` (with types, defaults and bounds), `verb` (the CLI verb made for
it), `attention` (what `attention=True` adds to a result), `describe()`, `example_inputs()`,
`samples()` (decoded examples of the run's data) and `export_spec()` (ONNX, or None).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from seqlab.data import ReadStats, get_dataset
from seqlab.data.batching import bucketed_batches, shuffled_batches
from seqlab.data.datasets import DatasetSpec
from seqlab.data.images import MAX_PIXELS
from seqlab.data.io import atomic_write_text
from seqlab.data.readers import detect_format
from seqlab.errors import CheckpointError, ConfigError, DataError, SeqlabError
from seqlab.models import MODELS
from seqlab.options import Range
from seqlab.train import distributed as D

SPLITS = ("train", "valid", "test")


def hold_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The lecture's random_split: a random `fraction` of range(n) (a pure function of `seed`) is held
    out. Returns (kept, held), each sorted; nothing is held out when that would leave either side empty."""
    n_held = int(round(n * fraction))
    if n_held == 0 or n_held == n:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[: n - n_held]), np.sort(perm[n - n_held :])


def take(rows: Any, index: np.ndarray) -> Any:
    """Rows `index` of a list, or of anything indexed by an index array (arrays, a task's rows)."""
    return [rows[i] for i in index] if isinstance(rows, list) else rows[index]


class Task:
    """The contract between a task and the trainer, the API and the shells. See the module docstring.

    Subclasses set the class attributes and implement `read`, `build`, `make_split`, `build_model`,
    `make_batch`, `training_loss`, `summarize`, `evaluate` and `report`; `artifacts`/`restore` when they
    keep a JSON artifact. `splits` maps a split name to the task's split object (anything with `len`)."""

    name: ClassVar[str]  # the key in TASKS and in `task: {name: ...}`
    Config: ClassVar[type]  # the task's options (`task:` section)
    Predictor: ClassVar[type[Predictor]]
    default_model: ClassVar[str]
    default_dataset: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # the data.format values it reads, most specific first (see detect_format)
    artifact: ClassVar[str | None] = "vocab.json"  # the JSON file `save_artifacts` writes (None: none)
    intended_use: ClassVar[str] = "As its task describes."  # for the model card
    default_metric: str = "accuracy"  # the valid metric that picks the best epoch
    headline: str = "accuracy"  # shown beside the loss in the per-epoch lines
    unit: ClassVar[str] = "examples"  # what the training rate counts (the `n` of the loss sums)

    def __init__(self, cfg: Any, device: torch.device, log: Callable[[str], None] | None = print):
        self.cfg = cfg
        self.opt = cfg.task_options
        self.device = device
        self.log = log or (lambda _m: None)
        self.model_cls = MODELS[self.name][cfg.model]
        self.splits: dict[str, Any] = {}
        self.counts: dict[str, Any] = {}
        self.read_test = True  # False: the test split is not read (a `seqlab tune` trial is scored on valid)
        self.init_source: Any = None  # the run `init_from` names, once adopted (seqlab.tasks.transfer.Source)
        fmt = cfg.data.format
        if fmt != "auto" and fmt not in self.formats:
            raise ConfigError(f"data.format must be one of auto, {', '.join(self.formats)} for task {self.name}, "
                              f"got {fmt!r}")

    # ------------------------------------------------------------------ sources
    def sources(self) -> dict[str, Any]:
        """What each split is read from: the data.* files, else the named dataset's (`dataset_sources`)."""
        d = self.cfg.data
        if d.train or d.valid or d.test:
            found = {s: getattr(d, s) for s in SPLITS if getattr(d, s)}
        else:
            found = self.dataset_sources(get_dataset(self.cfg.dataset or self.default_dataset))
        return found if self.read_test else {s: v for s, v in found.items() if s != "test"}

    def dataset_sources(self, spec: DatasetSpec) -> dict[str, Any]:
        """The files of a named dataset's splits (a split of several files is a tuple); a ConfigError for a dataset
        of another task's format."""
        if spec.format not in self.formats:
            raise ConfigError(f"dataset {spec.name!r} holds {spec.format} data, which task {self.name} does not read "
                              f"(it reads {', '.join(self.formats)})")
        def files(path: Any) -> str | tuple[str, ...]:
            return tuple(str(p) for p in path) if isinstance(path, tuple) else str(path)

        return {s: files(getattr(spec, s)) for s in SPLITS if getattr(spec, s) is not None}

    def format_of(self, path: str | Path) -> str:
        """data.format, or the format detected from `path` among the task's."""
        fmt = self.cfg.data.format
        return detect_format(path, self.formats, self.cfg.data.encoding) if fmt == "auto" else fmt

    def note_skipped(self, path: Any, stats: ReadStats, what: str = "rows") -> None:
        """Count (in `counts["skipped_rows"]`) and report once the bad rows a reader skipped."""
        self.counts.setdefault("skipped_rows", {})[str(path)] = stats.skipped
        if stats.skipped:
            self.log(f"{path}: skipped {stats.skipped} bad {what} (first: {'; '.join(stats.first_errors[:2])})")

    # ------------------------------------------------------------------ preparation
    def read(self, source: Any) -> Any:
        """The rows of one source (a file, a folder, a prefix...), in the task's own form."""
        raise NotImplementedError

    def read_all(self) -> dict[str, tuple[Any, str]]:
        """{split: (rows, where they came from)} for every source."""
        return {split: (self.read(source), str(source[0] if isinstance(source, tuple) else source))
                for split, source in self.sources().items()}

    def hold_out(self, rows: Any) -> tuple[Any, Any]:
        """(train, valid) rows when the data has no valid split: a seeded random `data.valid_fraction`."""
        keep, held = hold_out(len(rows), self.cfg.data.valid_fraction, self.cfg.seed)
        return take(rows, keep), take(rows, held)

    def prepare(self, artifacts: str | Path | None = None) -> None:
        """Read and encode every split. With `artifacts` (a run directory) the vocabularies (tokenizers,
        statistics) come from it (resume, evaluation) and a training split is optional; otherwise they are
        built from the training split."""
        raw = self.read_all()
        if "train" not in raw and artifacts is None:
            name = None if self.cfg.data.train else self.cfg.dataset
            raise ConfigError(f"dataset {name!r} has no training split: evaluate a run on it with "
                              f"`seqlab evaluate RUN_DIR --data {name}`" if name
                              else "no training data: set data.train=PATH or dataset=NAME")
        if "train" in raw and "valid" not in raw and self.cfg.data.valid_fraction > 0:
            rows, path = raw["train"]
            train, valid = self.hold_out(rows)
            raw["train"], raw["valid"] = (train, path), (valid, path)
        self.check_splits(raw)
        if artifacts is None:
            if not len(raw["train"][0]):
                raise DataError("no training examples", path=raw["train"][1])
            self.build(raw["train"][0])
        else:
            self.load_artifacts(artifacts)
        for split, (rows, path) in raw.items():
            self.splits[split] = self.make_split(rows, path, split)
        self.counts.update({f"{k}_examples": len(v) for k, v in self.splits.items()})
        self.count()

    def vocabulary(self) -> tuple[list[str], int] | None:
        """(the token of each row of the model's token embedding, how many of the first are specials), with the
        vocabularies built or loaded; None: the task's models have no token embedding (nothing to start from)."""
        return None

    def text_tokenizer(self) -> str | None:
        """The name (`seqlab.data.get_tokenizer`) of the tokenizer that cuts raw text into this run's tokens, if
        there is one: what a classifier started from this run cuts its texts with."""
        return None

    def adopt(self, source: Any) -> None:
        """Take the words of `source` (a `seqlab.tasks.transfer.Source`, `init_from`) before `prepare`: cut text
        as it does, and build the vocabulary from its tokens first."""
        raise ConfigError(f"init_from: a {self.name} model cannot start from another run (lm, classify and tag "
                          "models can)")

    def check_splits(self, raw: dict[str, tuple[Any, str]]) -> None:
        """A look at the raw rows of every split before anything is built (classify's leak guard)."""

    def build(self, train: Any) -> None:
        """Vocabularies, tokenizers, statistics: whatever the task learns from the training rows."""
        raise NotImplementedError

    def make_split(self, rows: Any, path: str, split: str) -> Any:
        """The encoded split the batches are cut from."""
        raise NotImplementedError

    def count(self) -> None:
        """Add the task's own figures to `counts` (vocabulary sizes, tokens...)."""

    def add_eval_file(self, path: str, split: str = "test") -> None:
        """Read another file for evaluation, encoded with the run's vocabularies."""
        self.splits[split] = self.make_split(self.read(path), str(path), split)

    # ------------------------------------------------------------------ artifacts
    def artifacts(self) -> dict:
        """What the JSON artifact holds besides `counts` (vocabularies, labels, statistics)."""
        return {}

    def restore(self, blob: dict, path: Path) -> None:
        """Take back what `artifacts` wrote; raise KeyError/ValueError/TypeError (or CheckpointError) when
        the blob is not what it should be."""

    def save_artifacts(self, run_dir: str | Path) -> None:
        if self.artifact:
            atomic_write_text(Path(run_dir) / self.artifact,
                              json.dumps({**self.artifacts(), "counts": self.counts}, ensure_ascii=False))

    def load_artifacts(self, run_dir: str | Path) -> None:
        if not self.artifact:
            return
        path = Path(run_dir) / self.artifact
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            self.restore(blob, path)
        except FileNotFoundError:
            raise CheckpointError(f"{self.artifact} missing", path=path) from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{self.artifact} is corrupt ({e.__class__.__name__})", path=path) from None
        self.counts = blob.get("counts", {})

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    # ------------------------------------------------------------------ the trainer's protocol
    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split]) > 0

    def lengths(self, split: Any) -> np.ndarray | None:
        """Each training example's length for batches of similar length (`train.bucket`); None: no bucketing."""
        return None

    def epoch_plan(self, epoch: int) -> Sequence[Any]:
        """The batches of one epoch, a pure function of seed and epoch (so a resumed run replays them)."""
        train = self.splits["train"]
        bs, seed = self.cfg.train.batch_size, self.cfg.seed * 1_000_003 + epoch
        lengths = self.lengths(train) if self.cfg.train.bucket else None
        return bucketed_batches(lengths, bs, seed) if lengths is not None else shuffled_batches(len(train), bs, seed)

    def shard_plan(self, plan: Sequence[Any], rank: int, world: int) -> list[tuple[Any, float]]:
        """Rank `rank`'s (batch, loss weight) pairs of an epoch's plan under DDP (the whole plan, weight 1, in one
        process): every world-th batch (`seqlab.train.distributed.shard_plan`). A task whose batches depend on
        the previous one (truncated BPTT) shards each batch instead."""
        return D.shard_plan(plan, rank, world)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each epoch's steps (also when a run resumes mid-epoch): epoch `epoch` (from 0) of the
        `epochs` planned (train.budget_seconds may plan them in the run's first half). A stateful task resets
        its state; a task may change its objective for the last epochs."""

    def state_dict(self) -> dict:
        """Task state to checkpoint (truncated BPTT's hidden state); {} for most tasks."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def make_batch(self, item: Any, split: str = "train") -> Any:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        """(the loss to minimise, sums for `summarize`: e.g. loss * n, correct, n)."""
        raise NotImplementedError

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """The metrics of `model` on `split` (the trainer's per-epoch valid metrics and the test metrics)."""
        raise NotImplementedError

    def before_training(self, model: nn.Module) -> None:
        """A new run's model before the trainer's first step (not a resumed run's): what a task trains on its
        own first, e.g. the captioner's encoder on visual concepts (`task.concept_epochs`)."""

    def pretraining_seconds(self) -> float:
        """The seconds `before_training` took for this run (kept with its artifacts; train.budget_seconds counts
        them)."""
        return 0.0

    def before_test(self, model: nn.Module) -> None:
        """After training, with the kept weights loaded, before the test split is evaluated (and the artifacts
        written again): what a task settles on valid, e.g. multi-label thresholds."""

    def report(self, model: nn.Module, split: str) -> dict:
        """`seqlab evaluate`: the metrics of `evaluate` and whatever else explains them."""
        return self.evaluate(model, split)

    def quantize(self, model: nn.Module, cutoff: int | None, dsub: int) -> dict[str, Tensor]:
        """`seqlab quantize`: the compressed weights to save (the task's vocabulary may shrink with them)."""
        raise ConfigError(f"quantize covers the bag of n-grams; a {self.name} model cannot be quantized")

    def predictor(self, model: nn.Module, run_dir: str | Path | None = None) -> Predictor:
        return self.Predictor(self, model, run_dir)


# ---------------------------------------------------------------------------------------------- predictor
@dataclass(frozen=True)
class Option:
    """An option of `Predictor.predict`: its type, default, bounds and what it does."""

    type: type
    default: Any
    help: str
    range: Range | None = None
    optional: bool = False  # None is allowed (and means the default behaviour described in `help`)

    def check(self, name: str, value: Any) -> Any:
        if value is None and (self.optional or self.default is None):
            return None
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            kind = {int: "an integer", float: "a number", bool: "true or false"}.get(self.type, self.type.__name__)
            raise ConfigError(f"{name} must be {kind}, got {value!r}")
        problem = self.range.problem(value) if self.range is not None else None
        if problem:
            raise ConfigError(f"{name} {problem}, got {value!r}")
        return value

    def describe(self) -> dict:
        out: dict[str, Any] = {"type": self.type.__name__, "default": self.default, "help": self.help}
        if self.range is not None:
            out.update(min=self.range.min, max=self.range.max)
        return out


@dataclass(frozen=True)
class Inputs:
    """What one item of `predict` is: `text` (a string), `tokens` (a string split at whitespace, or a list of
    tokens), `prompt` (a string to continue) or `image` (a file path, its bytes, or an array)."""

    kind: Literal["text", "tokens", "prompt", "image"]
    field: str  # its name in a request body: texts, sentences, prompt, image
    help: str


@dataclass(frozen=True)
class ExportSpec:
    """How a predictor's model is fed, for ONNX export: input names in forward's order, their dynamic axes
    (and those of `logits`), and the model inputs of a list of items."""

    names: tuple[str, ...]
    axes: dict[str, dict[int, str]]
    inputs: Callable[[list], tuple[Tensor, ...]]
    size: Callable[[Any], int] = len  # an item's length (to pair the shortest with a long one)
    longer: Callable[[Any, int], Any] = field(default=lambda item, n: item)  # an item at least n long


class Predictor:
    """What `seqlab.load(run_dir)` returns: `predict(items, **options)` for every task, and the description
    the shells need. A subclass sets `inputs`, `options`, `verb` and `attention`, and implements `run`,
    `format_text`, `split_items` / `split_references` and `synthetic_inputs`."""

    inputs: ClassVar[Inputs]
    options: ClassVar[dict[str, Option]] = {}
    verb: ClassVar[str] = "predict"  # the CLI verb made for it (`seqlab predict` works for every task)
    outputs_file: ClassVar[str | None] = None  # a file of the run directory holding every test output (report links it)
    attention: ClassVar[str | None] = None  # tokens | alignment | image: what `attention=True` adds, if anything

    def __init__(self, task: Task, model: nn.Module, run_dir: str | Path | None = None):
        self.task, self.model = task, model.eval()
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.max_pixels: int | None = MAX_PIXELS  # image inputs: larger ones are refused before decoding

    @property
    def task_name(self) -> str:
        return self.task.name

    # ------------------------------------------------------------------ predicting
    def check_options(self, options: dict) -> dict:
        """The options with defaults filled in; ConfigError for an unknown option or a bad value."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise ConfigError(f"{unknown[0]} is not an option of a {self.task_name} model (its options: {known})")
        return {k: o.check(k, options.get(k, o.default)) for k, o in self.options.items()}

    def predict(self, items: Any, **options) -> list[dict]:
        """One result (a dict) per item; see the task's `run` for what a result holds."""
        options = self.check_options(options)
        if isinstance(items, (str, bytes, Path)) or (isinstance(items, np.ndarray) and items.ndim == 3):
            items = [items]
        items = list(items)
        if not items:
            return []
        if self.inputs.kind in ("text", "prompt"):
            for i, text in enumerate(items, 1):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{self.inputs.field.removesuffix('s')} {i} is empty")
        with torch.inference_mode():
            return self.run(items, **options)

    def run(self, items: list, **options) -> list[dict]:
        raise NotImplementedError

    def stream(self, item: Any, **options):
        """Yield a result piece by piece (language models); other predictors refuse."""
        raise ConfigError(f"a {self.task_name} model does not generate text piece by piece (that is task=lm)")

    def format_text(self, result: dict) -> str:
        """One result as `seqlab predict` prints it."""
        raise NotImplementedError

    def load_input(self, item: Any) -> Any:
        """An item as `run` takes it (a decoded image, say); DataError when it is not one."""
        return item

    # ------------------------------------------------------------------ examples and description
    def data_split(self) -> str | None:
        """The first of test, valid, train the task holds, reading the run's data when needed (None when it
        cannot be read here)."""
        if not self.task.splits and self.run_dir is not None:
            try:
                self.task.prepare(artifacts=self.run_dir)
            except SeqlabError:
                return None
        return next((s for s in ("test", "valid", "train") if self.task.has_split(s)), None)

    def split_items(self, split: str) -> list:
        """The inputs of `split`, as `predict` takes them."""
        raise NotImplementedError

    def split_references(self, split: str) -> list:
        """What `split` says the answer to each item is (labels, tags, translations, captions)."""
        raise NotImplementedError

    def synthetic_inputs(self, n: int) -> list:
        """Items made from the vocabulary, when the run's data cannot be read."""
        raise NotImplementedError

    def example_inputs(self, n: int = 1) -> tuple[list, str]:
        """Up to `n` items of the run's data (test, else valid, else train) and what they are; items made from
        the vocabulary when the data cannot be read here."""
        split = self.data_split()
        if split is not None:
            return self.split_items(split)[:n], f"{split} examples"
        return self.synthetic_inputs(n), "examples made from the vocabulary (no data here)"

    def samples(self, n: int = 3) -> tuple[str, list[dict]] | None:
        """(split, [{"input", "reference", "result"}]) for up to n items of the run's test (else valid) data,
        with attention when the model has it; None when the run has neither or its data cannot be read."""
        split = self.data_split()
        if split not in ("test", "valid"):
            return None
        items, refs = self.split_items(split)[:n], self.split_references(split)[:n]
        results = self.predict(items, **({"attention": True} if self.attends() else {}))
        return split, [{"input": i, "reference": r, "result": res} for i, r, res in zip(items, refs, results,
                                                                                          strict=True)]

    def example_command(self, run_dir: str | Path) -> str:
        """The line printed after training to try the run, on a real input when there is one."""
        run = shlex.quote(str(run_dir))
        if self.inputs.kind == "image":
            return f"seqlab {self.verb} {run} IMAGE.png"
        items, _ = self.example_inputs(1)
        text = " ".join(str(items[0] if items else "").split()[:12]) or "hello"
        if self.inputs.kind == "prompt":
            return f"seqlab {self.verb} {run} --prompt {shlex.quote(text)} --max-new-tokens 200"
        return f"seqlab {self.verb} {run} {shlex.quote(text)}"

    def attends(self) -> bool:
        """Whether this run's model gives the `attention` the predictor describes."""
        return self.attention is not None and bool(getattr(self.model, "attends", True))

    def labels(self) -> list[str] | None:
        """The labels (tags) the model chooses among, for tasks that have them."""
        return None

    def describe(self) -> dict:
        """What the shells show and validate against: task, inputs, options, outputs."""
        return {"task": self.task_name, "model": self.task.cfg.model, "verb": self.verb,
                "inputs": {"kind": self.inputs.kind, "field": self.inputs.field, "help": self.inputs.help},
                "options": {k: o.describe() for k, o in self.options.items()}, "attention": self.attention,
                "labels": self.labels()}

    def export_spec(self) -> ExportSpec | None:
        """How to export the model to ONNX, or None when it has no single-call ONNX form."""
        return None
