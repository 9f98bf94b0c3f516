"""Task `classify`: text -> label (the lecture's "many to one").

Builds the data (read, hold out a valid split, leak guard, tokenize, n-grams, vocabularies, encode),
the model (any of `MODELS["classify"]`; a model declares whether it takes the lecture's flat
tokens + offsets (`inputs = "bag"`) or padded tokens + lengths (`inputs = "padded"`)), the loss
(cross-entropy), the metrics (accuracy, macro-F1, per-class P/R/F1, confusion matrix) and the
predictor that `seqlab.load` returns.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seqlab.data import LabelVocab, ReadStats, Vocab, get_dataset, get_tokenizer, read
from seqlab.data.batching import Packed, bag_batch, bucketed_batches, pad_batch, sequential_batches, shuffled_batches
from seqlab.data.io import atomic_write_text
from seqlab.data.ngrams import hashed_ngram_ids, ngrams_iterator
from seqlab.errors import CheckpointError, ConfigError, DataError, LabelError
from seqlab.models import MODELS
from seqlab.options import NonNegative, Positive
from seqlab.tasks.common import LabelClassification, format_label, hold_out, top_k_labels

ARTIFACT = "vocab.json"


@dataclass
class ClassifyConfig:
    tokenizer: Literal["basic_english", "whitespace", "char"] = "basic_english"
    ngrams: Positive = 2  # word n-grams for the bag model (1 = the lecture's NGRAMS)
    ngram_buckets: NonNegative = 0  # 0: n-grams are vocabulary entries (the lecture's way); >0: hashed (fastText's)
    min_freq: Positive = 1  # rarer training words (and n-grams) are unknown
    max_vocab: Positive | None = None
    max_len: Positive | None = None  # truncate longer texts (padded models); truncations are counted
    drop_unknown: bool = True  # bag: leave unknown words/n-grams out of the mean (fastText); false: <unk> (torchtext)
    leak: Literal["report", "drop"] = "report"  # texts of train that also occur in valid/test
    pretrained: str | None = None  # word2vec/GloVe text file for the embedding of padded models
    freeze_pretrained: bool = False


def normalize(text: str) -> str:
    """The key under which the leak guard compares texts: lowercased, whitespace collapsed."""
    return " ".join(text.lower().split())


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # (N,) int64
    data: Packed
    path: str | None


@dataclass
class Batch:
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor  # (B,)


class ClassifyTask(LabelClassification):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    Config = ClassifyConfig
    default_model = "bag"
    default_dataset = "sample"

    def __init__(self, cfg: Any, device: torch.device, log=print):
        self.cfg = cfg
        self.opt: ClassifyConfig = cfg.task_options
        self.device = device
        self.log = log or (lambda _m: None)
        self.model_cls = MODELS["classify"][cfg.model]
        self.tokenize = get_tokenizer(self.opt.tokenizer)
        self.vocab: Vocab | None = None
        self.labels: LabelVocab | None = None
        self.splits: dict[str, Split] = {}
        self.counts: dict[str, Any] = {}
        self.vocab_built = False  # True once prepare() built the vocabularies from the training data

    # ------------------------------------------------------------------ files
    def _sources(self) -> tuple[dict[str, str | None], str, dict]:
        d = self.cfg.data
        if d.train:
            return {"train": d.train, "valid": d.valid, "test": d.test}, d.format, self._reader_options(d.format)
        spec = get_dataset(self.cfg.dataset or self.default_dataset)
        opts = dict(spec.reader_options)
        opts.setdefault("encoding", d.encoding)
        self.label_names = spec.label_names
        return {"train": spec.train, "valid": spec.valid, "test": spec.test}, spec.format, opts

    def _reader_options(self, fmt: str) -> dict:
        d = self.cfg.data
        opts: dict[str, Any] = {"encoding": d.encoding}
        if fmt in ("csv", "tsv", "auto"):
            opts.update(header=d.header, label_column=d.label_column, text_columns=d.text_columns)
        if fmt in ("jsonl", "auto"):
            opts.update(text_key=d.text_key, label_key=d.label_key)
        return opts

    def read_file(self, path: str, fmt: str, opts: dict) -> tuple[list[str], list[str], list[int]]:
        """texts, labels, source lines (a text may carry several labels; classification uses the first)."""
        if fmt == "auto":
            opts = self._auto_options(path, opts)
        stats = ReadStats()
        texts, labels, lines = [], [], []
        for ex in read(path, format=fmt, skip_bad_rows=self.cfg.data.skip_bad_rows, stats=stats, **opts):
            texts.append(ex.text)
            label = ex.label
            names = getattr(self, "label_names", None)
            labels.append(names.get(label, label) if names else label)
            lines.append(ex.line)
        if stats.skipped:
            self.log(f"{path}: skipped {stats.skipped} bad rows (first: {'; '.join(stats.first_errors[:2])})")
        self.counts.setdefault("skipped_rows", {})[str(path)] = stats.skipped
        return texts, labels, lines

    @staticmethod
    def _auto_options(path: str, opts: dict) -> dict:
        """With format=auto, pass each reader only the options it takes."""
        name = str(path).lower().removesuffix(".gz")
        keep = {"encoding"}
        if name.endswith((".csv", ".tsv")):
            keep |= {"header", "label_column", "text_columns"}
        elif name.endswith(".jsonl"):
            keep |= {"text_key", "label_key"}
        return {k: v for k, v in opts.items() if k in keep}

    # ------------------------------------------------------------------ features
    def features(self, text: str) -> list[str]:
        tokens = self.tokenize(text)
        if self.model_cls.inputs == "bag" and self.opt.ngrams > 1 and not self.opt.ngram_buckets:
            return list(ngrams_iterator(tokens, self.opt.ngrams))
        return tokens

    def encode(self, texts: list[str], features: list[list[str]] | None = None) -> Packed:
        """Token (and n-gram) ids of each text; `features` are the texts' `features()` if already computed."""
        vocab = self.vocab
        hashed = self.model_cls.inputs == "bag" and self.opt.ngrams > 1 and self.opt.ngram_buckets > 0
        drop = self.model_cls.inputs == "bag" and self.opt.drop_unknown
        unk = vocab.unk_index
        seqs = []
        for i, t in enumerate(texts):
            ids = vocab.encode(features[i] if features is not None else self.features(t))
            if hashed:
                ids = ids + hashed_ngram_ids(ids, self.opt.ngrams, self.opt.ngram_buckets, len(vocab))
            if drop:
                ids = [j for j in ids if j != unk]
            seqs.append(ids)
        return Packed.from_lists(seqs)

    @property
    def input_size(self) -> int:
        """Rows of the embedding: the vocabulary, plus the hash buckets of fastText-style n-grams."""
        hashed = self.model_cls.inputs == "bag" and self.opt.ngrams > 1 and self.opt.ngram_buckets > 0
        return len(self.vocab) + (self.opt.ngram_buckets if hashed else 0)

    # ------------------------------------------------------------------ preparation
    def prepare(self, artifacts: str | Path | None = None) -> None:
        """Read and encode every split. With `artifacts` (a run directory) the vocabularies are loaded
        from it (resume); otherwise they are built from the training split."""
        sources, fmt, opts = self._sources()
        if not sources["train"]:
            raise ConfigError("no training data: set data.train=PATH or dataset=NAME")
        raw = {}
        for split, path in sources.items():
            if path:
                raw[split] = (*self.read_file(path, fmt, opts), str(path))
        if "valid" not in raw and self.cfg.data.valid_fraction > 0:
            raw["train"], raw["valid"] = self._hold_out(raw["train"])
        self._leak_guard(raw)
        train_features = [self.features(t) for t in raw["train"][0]]
        if artifacts is None:
            self.vocab = Vocab.build(
                train_features,
                min_freq=self.opt.min_freq,
                max_size=self.opt.max_vocab,
            )
            self.labels = LabelVocab.build(raw["train"][1])
            self.vocab_built = True
        else:
            self.load_artifacts(artifacts)
        for split, (texts, labels, lines, path) in raw.items():
            feats = train_features if split == "train" else None
            self.splits[split] = self._make_split(texts, labels, lines, path, split, feats)
        self.counts.update({f"{k}_examples": len(v.texts) for k, v in self.splits.items()})
        self.counts.update(vocab_size=len(self.vocab), num_classes=len(self.labels))
        self._report_truncation()

    def _hold_out(self, train: tuple) -> tuple[tuple, tuple]:
        """The lecture's random_split: a random `valid_fraction` of train becomes the valid split."""
        texts, labels, lines, path = train
        tr, va = hold_out(len(texts), self.cfg.data.valid_fraction, self.cfg.seed)

        def pick(idx):
            return [texts[i] for i in idx], [labels[i] for i in idx], [lines[i] for i in idx], path

        return pick(tr), pick(va)

    def _leak_guard(self, raw: dict) -> None:
        """Count texts shared between splits (after normalisation); optionally drop them from train."""
        keys = {s: [normalize(t) for t in v[0]] for s, v in raw.items()}
        held = {s: set(k) for s, k in keys.items() if s != "train"}
        overlap = {s: sum(1 for k in keys["train"] if k in ks) for s, ks in held.items()}
        if "valid" in held and "test" in held:
            overlap["valid_test"] = len(held["valid"] & held["test"])
        self.counts["overlap"] = overlap
        shared = {k: v for k, v in overlap.items() if v}
        if shared:
            what = ", ".join(f"{'train/' + k if k in held else k.replace('_', '/')}: {v}" for k, v in shared.items())
            self.log(f"leak guard: texts shared between splits ({what})"
                     + ("; dropping them from train" if self.opt.leak == "drop" else "; task.leak=drop removes them"))
        if self.opt.leak == "drop" and held:
            heldout = set().union(*held.values())
            keep = [i for i, k in enumerate(keys["train"]) if k not in heldout]
            t, lab, ln, p = raw["train"]
            raw["train"] = ([t[i] for i in keep], [lab[i] for i in keep], [ln[i] for i in keep], p)
            self.counts["dropped_from_train"] = len(t) - len(keep)

    def _make_split(self, texts, labels, lines, path, split, features=None) -> Split:
        if split == "train" and not texts:
            raise DataError("no training examples", path=path)
        ids = []
        for lab, line in zip(labels, lines, strict=True):
            try:
                ids.append(self.labels.index(lab))
            except LabelError as e:
                raise LabelError(e.message, path=path, line=line) from None
        return Split(texts, np.asarray(ids, dtype=np.int64), self.encode(texts, features), path)

    def _report_truncation(self) -> None:
        if self.opt.max_len and self.model_cls.inputs == "padded":
            n = {s: int((sp.data.lengths > self.opt.max_len).sum()) for s, sp in self.splits.items()}
            self.counts["truncated"] = n
            if any(n.values()):
                shown = ", ".join(f"{k} {v}" for k, v in n.items() if v)
                self.log(f"truncated to task.max_len={self.opt.max_len} tokens: {shown}")

    # ------------------------------------------------------------------ artifacts
    def save_artifacts(self, run_dir: str | Path) -> None:
        atomic_write_text(
            Path(run_dir) / ARTIFACT,
            json.dumps({"vocab": self.vocab.to_dict(), "labels": self.labels.to_dict(), "counts": self.counts}),
        )

    def load_artifacts(self, run_dir: str | Path) -> None:
        path = Path(run_dir) / ARTIFACT
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            self.vocab = Vocab.from_dict(blob["vocab"])
            self.labels = LabelVocab.from_dict(blob["labels"])
        except FileNotFoundError:
            raise CheckpointError("vocabulary file missing", path=path) from None
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"vocabulary file is corrupt ({e.__class__.__name__})", path=path) from None
        self.counts = blob.get("counts", {})

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        model = self.model_cls(
            self.cfg.model_options,
            vocab_size=self.input_size,
            num_classes=len(self.labels),
            padding_idx=self.vocab.pad_index,
        )
        if self.opt.pretrained and self.vocab_built:  # a loaded or resumed run has its weights already
            load_pretrained = getattr(model, "load_pretrained", None)
            if load_pretrained is None:
                raise ConfigError(f"model {self.cfg.model} does not take pretrained word vectors")
            coverage = load_pretrained(self.opt.pretrained, self.vocab.itos, freeze=self.opt.freeze_pretrained)
            self.log(f"pretrained vectors: {coverage['found']}/{coverage['vocab']} vocabulary words "
                     f"({coverage['found'] / max(1, coverage['vocab']):.1%}) from {self.opt.pretrained}")
        return model

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split].texts) > 0

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        train = self.splits["train"]
        bs, seed = self.cfg.train.batch_size, self.cfg.seed * 1_000_003 + epoch
        if self.model_cls.inputs == "padded" and self.cfg.train.bucket:
            return bucketed_batches(train.data.lengths, bs, seed)
        return shuffled_batches(len(train.texts), bs, seed)

    def start_epoch(self, epoch: int) -> None:
        pass

    def collate(self, data: Packed, index: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Model inputs for examples `index` of `data`: (text, offsets) or (tokens, lengths)."""
        if self.model_cls.inputs == "bag":
            inputs = bag_batch(data, index)
        else:
            min_len = getattr(self.model_cls, "min_len", lambda _cfg: 1)(self.cfg.model_options)
            inputs = pad_batch(data, index, self.vocab.pad_index, self.opt.max_len, min_len)
        return tuple(t.to(self.device) for t in inputs)

    def make_batch(self, index: np.ndarray, split: str = "train") -> Batch:
        sp = self.splits[split]
        return Batch(self.collate(sp.data, index), torch.from_numpy(sp.labels[index]).to(self.device))

    # ------------------------------------------------------------------ loss and evaluation: LabelClassification

    def add_eval_file(self, path: str, split: str = "test") -> None:
        """Read another file for evaluation with the run's vocabularies (unknown labels are errors)."""
        _, fmt, opts = self._sources()
        texts, labels, lines = self.read_file(path, fmt, opts)
        self.splits[split] = self._make_split(texts, labels, lines, path, split)

    def example_command(self, run_dir: str | Path) -> str:
        """The `seqlab predict` line printed after training, on a real text of the held-out data."""
        split = next((self.splits[s] for s in ("test", "valid") if self.has_split(s)), self.splits["train"])
        words = split.texts[0].split()
        text = " ".join(words[:12])
        return f"seqlab predict {shlex.quote(str(run_dir))} {shlex.quote(text)}"

    def predictor(self, model: nn.Module) -> ClassifierPredictor:
        return ClassifierPredictor(self, model)


class ClassifierPredictor:
    """What `seqlab.load(run_dir)` returns for a classification run."""

    task_name = "classify"

    def __init__(self, task: ClassifyTask, model: nn.Module):
        self.task, self.model = task, model.eval()
        self.labels = list(task.labels.itos)

    @torch.no_grad()
    def predict(self, texts: list[str], top_k: int = 1, explain: bool = False) -> list[dict]:
        """For each text: `label`, `probability` and `top_k` [(label, probability), ...] best first;
        with `explain`, also `attention` [(token, weight), ...]: the model's attention over the tokens
        it read (models that attend only: rnn with pooling=attention, transformer with cls/attention)."""
        if isinstance(texts, str):
            texts = [texts]
        if explain and not getattr(self.model, "attends", False):
            raise ConfigError(f"--explain needs a model with attention over its tokens; this run's model "
                              f"{self.task.cfg.model!r} has none (train model=rnn model.pooling=attention, "
                              f"or model=transformer)")
        if not texts:
            return []
        task = self.task
        data = task.encode(list(texts))
        out = []
        bs = task.cfg.train.eval_batch_size
        for index in sequential_batches(len(texts), bs):
            inputs = task.collate(data, index)
            if explain:
                logits, weights = self.model(*inputs, return_attention=True)
                weights = weights.float().cpu().tolist()  # (B, T)
            else:
                logits = self.model(*inputs)
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            for j, result in enumerate(top_k_labels(probs, self.labels, top_k)):
                out.append(result)
                if explain:
                    tokens = task.features(texts[index[j]])[: task.opt.max_len]
                    out[-1]["attention"] = list(zip(tokens, weights[j], strict=False))
        return out

    def format_text(self, result: dict) -> str:
        """One prediction as `seqlab predict` prints it."""
        return format_label(result)
