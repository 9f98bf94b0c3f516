"""Task `classify`: text -> label (the lecture's "many to one").

Builds the data (read, hold out a valid split, leak guard, tokenize, vocabularies, encode), the model (any
of `MODELS["classify"]`, fed by the featurizer its `inputs` names: the lecture's flat tokens + offsets with
n-grams for `bag`, padded tokens + lengths for the others; see `seqlab.data.features`), the loss
(cross-entropy), the metrics (accuracy, macro-F1, per-class P/R/F1, confusion matrix, and fastText's P@1
and R@1) and the predictor that `seqlab.load` returns.

Multi-label (`task.multi_label`, on by itself when a training text has several labels, as fastText's
`__label__a __label__b` lines): one sigmoid per label (fastText's `-loss ova`), binary cross-entropy; a label
is predicted when its probability reaches its threshold, one per label tuned on the valid split for F1 after
training (kept in the run; `predict --threshold T` sets one for all); metrics P@1 and R@1 (as `fasttext
test`) and micro/macro F1. A gold label training never saw is not an error: it counts as missed (in the
accuracy and F1; `fasttext test`'s P@k and R@k leave such labels out, and so does seqlab's P@1 and R@1), and
is named once in a warning.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data import LabelVocab, ReadStats, Vocab, get_tokenizer, read
from seqlab.data.batching import Packed, sequential_batches
from seqlab.data.datasets import DatasetSpec
from seqlab.data.features import FEATURES, BagFeatures
from seqlab.data.readers import TEXT_FORMATS, leak_key
from seqlab.data.tokenizers import Tokenized
from seqlab.data.vectors import read_vectors
from seqlab.errors import ConfigError
from seqlab.models.bag import quantize_rows
from seqlab.models.embedding import copy_vectors
from seqlab.options import NonNegative, Positive, Range
from seqlab.tasks import metrics as M
from seqlab.tasks.base import ExportSpec, Inputs, Option
from seqlab.tasks.common import IGNORE, TOP_K, LabelPredictor, LabelTask, top_k_labels


@dataclass
class ClassifyConfig:
    tokenizer: Literal["basic_english", "whitespace", "char"] = "basic_english"  # text -> words
    ngrams: Positive = 2  # word n-grams for the bag model (1 = the lecture's NGRAMS)
    ngram_buckets: NonNegative = 0  # 0: n-grams are vocabulary entries (the lecture's way); >0: hashed (fastText's)
    min_freq: Positive = 1  # rarer training words (and n-grams) are unknown
    max_vocab: Positive | None = None  # keep the most frequent entries (None: all)
    max_len: Positive | None = None  # truncate longer texts (padded models); truncations are counted
    drop_unknown: bool = True  # bag: leave unknown words/n-grams out of the mean (fastText); false: <unk> (torchtext)
    leak: Literal["report", "drop"] = "report"  # texts of train that also occur in valid/test
    multi_label: bool | None = None  # a sigmoid per label (fastText's -loss ova); None: when a text has several
    pretrained: str | None = None  # word2vec/GloVe text file for the model's word embedding
    freeze_pretrained: bool = False  # keep the pretrained vectors fixed while training


@dataclass
class Rows:
    """A file as read: texts, their labels (as strings; the first is the label of single-label data) and
    source lines."""

    texts: list[str]
    labels: list[tuple[str, ...]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index) -> Rows:
        return Rows([self.texts[i] for i in index], [self.labels[i] for i in index], [self.lines[i] for i in index])


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # (N,) int64: the first gold label (ids >= the model's labels: never seen in training)
    gold: Packed  # every gold label of each text
    data: Packed
    path: str | None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Batch:
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor  # (B,) the first gold label; multi-label: (B, C) 0/1 targets


class ClassifyTask(LabelTask):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    name = "classify"
    intended_use = ("Assigning one of the labels it was trained on to a short text of the same kind and language "
                    "as its training data (e.g. the sentiment of a review, the topic of a news item).")
    Config = ClassifyConfig
    default_model = "bag"
    default_dataset = "sample"
    formats = TEXT_FORMATS

    def __init__(self, cfg: Any, device: torch.device, log=print):
        super().__init__(cfg, device, log)
        self.tokenize = get_tokenizer(self.opt.tokenizer)
        self.train_tokens: Tokenized | None = None  # the training texts' tokens, from build
        min_len = getattr(self.model_cls, "min_len", lambda _cfg: 1)(cfg.model_options)
        self.features = FEATURES[self.model_cls.inputs].from_options(self.opt, min_len)
        self.vocab: Vocab | None = None
        self.labels: LabelVocab | None = None
        self.vocab_built = False  # True once prepare() built the vocabularies from the training data
        self.reader_options: dict[str, Any] | None = None  # a named dataset's
        self.label_names: dict[str, str] | None = None
        self.multi = False  # one sigmoid per label
        self.thresholds: np.ndarray | None = None  # multi-label: (C,) the probability that predicts each label

    # ------------------------------------------------------------------ files
    def dataset_sources(self, spec: DatasetSpec) -> dict[str, Any]:
        self.reader_options, self.label_names = dict(spec.reader_options), spec.label_names
        return super().dataset_sources(spec)

    def _read_options(self, fmt: str) -> dict:
        """The reader's own options, from a named dataset or from data.*."""
        d = self.cfg.data
        opts: dict[str, Any] = {"encoding": d.encoding}
        if self.reader_options is not None:
            return {**opts, **self.reader_options}
        if fmt in ("csv", "tsv"):
            opts.update(header=d.header, label_column=d.label_column, text_columns=d.text_columns)
        elif fmt == "jsonl":
            opts.update(text_key=d.text_key, label_key=d.label_key)
        return opts

    def read(self, path: str) -> Rows:
        """Texts, labels, source lines (a text may carry several labels; classification uses the first)."""
        fmt = self.format_of(path)
        stats = ReadStats()
        rows = Rows([], [], [])
        names = self.label_names or {}
        for ex in read(path, format=fmt, skip_bad_rows=self.cfg.data.skip_bad_rows, stats=stats,
                       **self._read_options(fmt)):
            rows.texts.append(ex.text)
            rows.labels.append(tuple(names.get(label, label) for label in ex.labels))
            rows.lines.append(ex.line)
        self.note_skipped(path, stats)
        return rows

    def tokens(self, texts: list[str]) -> Tokenized:
        """Each text's tokens, lazily (the training texts' from `build`, whose corpus the bag keeps for their
        one encoding)."""
        if self.train_tokens is not None and texts is self.train_tokens.texts:
            tokens, self.train_tokens = self.train_tokens, None
            return tokens
        return Tokenized(texts, self.tokenize)

    def encode(self, texts: list[str]) -> Packed:
        """The model's ids of each text (tokens, n-grams: see the featurizer)."""
        return self.features.encode(self.vocab, self.tokens(texts))

    # ------------------------------------------------------------------ preparation
    def check_splits(self, raw: dict[str, tuple[Rows, str]]) -> None:
        """The leak guard: count texts shared between splits (after normalisation); optionally drop them
        from train."""
        keys = {s: [leak_key(t) for t in rows.texts] for s, (rows, _) in raw.items()}
        held = {s: set(k) for s, k in keys.items() if s != "train"}
        train = keys.get("train", [])
        overlap = {s: sum(1 for k in train if k in ks) for s, ks in held.items()}
        if "valid" in held and "test" in held:
            overlap["valid_test"] = len(held["valid"] & held["test"])
        self.counts["overlap"] = overlap
        shared = {k: v for k, v in overlap.items() if v}
        if shared:
            what = ", ".join(f"{'train/' + k if k in held else k.replace('_', '/')}: {v}" for k, v in shared.items())
            self.log(f"leak guard: texts shared between splits ({what})"
                     + ("; dropping them from train" if self.opt.leak == "drop" else "; task.leak=drop removes them"))
        if self.opt.leak == "drop" and held and "train" in raw:
            heldout = set().union(*held.values())
            rows, path = raw["train"]
            kept = rows[[i for i, k in enumerate(train) if k not in heldout]]
            raw["train"] = (kept, path)
            self.counts["dropped_from_train"] = len(rows) - len(kept)

    def build(self, train: Rows) -> None:
        self.train_tokens = tokens = self.tokens(train.texts)
        self.vocab = self.features.build_vocab(tokens, self.opt.min_freq, self.opt.max_vocab)
        if self.init_source is not None:
            self.vocab = self.vocab.led_by(self.init_source.words)
        self.labels = LabelVocab.build(label for labels in train.labels for label in labels)
        self.vocab_built = True
        several = any(len(labels) > 1 for labels in train.labels)
        self.set_multi(several if self.opt.multi_label is None else self.opt.multi_label)

    def vocabulary(self) -> tuple[list[str], int]:
        return self.vocab.itos, len(self.vocab.specials)

    def text_tokenizer(self) -> str:
        return self.opt.tokenizer

    def adopt(self, source) -> None:
        """Cut texts as the source run does; `build` puts its words first."""
        if isinstance(self.features, BagFeatures):
            raise ConfigError("init_from: the bag of n-grams does not start from a run; give it word vectors "
                              "(task.pretrained=FILE.vec), or fine-tune model=rnn, cnn or transformer")
        name = source.task.text_tokenizer()
        if name is None:
            raise ConfigError(f"init_from: the tokens of {source.run_dir} are not cut from raw text by a tokenizer "
                              "classify has (basic_english, whitespace, char)")
        if name != self.opt.tokenizer:
            self.log(f"init_from: texts are cut by {name}, as in {source.run_dir}")
            self.opt.tokenizer, self.tokenize = name, get_tokenizer(name)
        self.init_source = source

    def set_multi(self, multi: bool) -> None:
        self.multi = multi
        self.headline = self.default_metric = "p@1" if multi else "accuracy"

    def make_split(self, rows: Rows, path: str, split: str) -> Split:
        flat = self.label_ids(label for labels in rows.labels for label in labels)
        cuts = np.cumsum([0] + [len(labels) for labels in rows.labels])
        gold = [flat[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        return Split(rows.texts, np.asarray([g[0] for g in gold], dtype=np.int64), Packed.from_lists(gold),
                     self.encode(rows.texts), path)

    def count(self) -> None:
        super().count()
        self.counts.update(vocab_size=len(self.vocab), num_classes=len(self.labels))
        n = {s: self.features.truncated(sp.data) for s, sp in self.splits.items()}
        if any(n.values()):
            self.counts["truncated"] = n
            shown = ", ".join(f"{k} {v}" for k, v in n.items() if v)
            self.log(f"truncated to task.max_len={self.opt.max_len} tokens: {shown}")

    # ------------------------------------------------------------------ artifacts
    def artifacts(self) -> dict:
        thresholds = None if self.thresholds is None else self.thresholds.tolist()
        kept = getattr(self.features, "kept_buckets", None)
        return {"vocab": self.vocab.to_dict(), "labels": self.labels.to_dict(), "multi_label": self.multi,
                "thresholds": thresholds, "kept_buckets": None if kept is None else kept.tolist()}

    def restore(self, blob: dict, path) -> None:
        self.vocab = Vocab.from_dict(blob["vocab"])
        self.labels = LabelVocab.from_dict(blob["labels"])
        self.set_multi(bool(blob.get("multi_label", False)))  # format 1 runs were single-label
        if blob.get("kept_buckets") is not None:
            self.features.kept_buckets = np.asarray(blob["kept_buckets"], dtype=np.int64)
        if blob.get("thresholds") is not None:
            self.thresholds = np.asarray(blob["thresholds"], dtype=np.float64)
            if self.thresholds.shape != (len(self.labels),):
                raise ValueError("one threshold per label")

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        model = self.model_cls(self.cfg.model_options, vocab_size=self.features.rows(self.vocab),
                               num_classes=len(self.labels), padding_idx=self.vocab.pad_index)
        if self.opt.pretrained and self.vocab_built:  # a loaded or resumed run has its weights already
            weight = model.embedding.weight
            pad = self.vocab.pad_index
            index, table = read_vectors(self.opt.pretrained, self.vocab.itos, weight.size(1), skip=[pad])
            copy_vectors(weight.data, torch.from_numpy(index), torch.from_numpy(table), pad)
            weight.requires_grad_(not self.opt.freeze_pretrained)
            self.log(f"pretrained vectors: {len(index)}/{len(self.vocab) - 1} vocabulary words "
                     f"({len(index) / max(1, len(self.vocab) - 1):.1%}) from {self.opt.pretrained}")
        return model

    def quantize(self, model: nn.Module, cutoff: int | None, dsub: int) -> dict[str, torch.Tensor]:
        """`seqlab quantize`, as `fasttext quantize`: keep the `cutoff` embedding rows of largest norm (n-gram and
        word entries of the vocabulary, or the hash buckets; the specials always), then product-quantize the
        embedding (`seqlab.models.bag.quantize_rows`). The vocabulary (kept buckets) changes here; returns
        the weights to save."""
        if not isinstance(self.features, BagFeatures):
            raise ConfigError(f"quantize covers the bag of n-grams (model=bag); this run's model is {self.cfg.model!r}")
        weight, V = model.embedding.weight.detach().cpu(), len(self.vocab)
        if weight.size(1) % dsub:
            raise ConfigError(f"dsub {dsub} must divide the embedding's dimension {weight.size(1)}")
        first = V if self.features.hashed else len(self.vocab.specials)  # the rows that may be pruned start here
        end = weight.size(0) if self.features.hashed else V
        if cutoff is not None and cutoff < end - first:
            keep = torch.topk(weight[first:end].norm(dim=1), cutoff).indices.sort().values + first
            if self.features.hashed:
                old = self.features.kept_buckets
                buckets = (keep - V).numpy()
                self.features.kept_buckets = buckets if old is None else old[buckets]
            else:
                v = self.vocab
                self.vocab = Vocab(v.itos[:first] + [v.itos[i] for i in keep.tolist()], v.specials, v.unk_token,
                                   v.pad_token)
            weight = torch.cat([weight[:first], weight[keep]])
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "embedding.weight"}
        return {**state, **{f"embedding.{k}": v.contiguous() for k, v in quantize_rows(weight, dsub).items()}}

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def lengths(self, split: Split) -> np.ndarray | None:
        return self.features.lengths(split.data)

    def collate(self, data: Packed, index: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Model inputs for examples `index` of `data`, on the task's device."""
        return tuple(t.to(self.device) for t in self.features.collate(data, index, self.vocab))

    def make_batch(self, index: np.ndarray, split: str = "train") -> Batch:
        sp = self.splits[split]
        labels = torch.from_numpy(self.multi_hot(sp, index) if self.multi else sp.labels[index])
        return Batch(self.collate(sp.data, index), labels.to(self.device))

    def multi_hot(self, split: Split, index: np.ndarray) -> np.ndarray:
        """(B, C) float32: 1 for each known gold label of texts `index`."""
        out = np.zeros((len(index), len(self.labels)), dtype=np.float32)
        for row, i in enumerate(index):
            known = split.gold.get(i)
            out[row, known[known < len(self.labels)]] = 1.0
        return out

    # ------------------------------------------------------------------ loss and evaluation (single-label: LabelTask)
    def training_loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.multi:
            return super().training_loss(model, batch)
        logits = model(*batch.inputs)  # (B, C)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch.labels, reduction="sum") / len(logits)
        hit = batch.labels.gather(1, logits.argmax(1, keepdim=True)).sum()  # the best label is a gold one
        loss_value, correct = torch.stack([loss.detach(), hit]).tolist()
        n = len(logits)
        return loss, {"loss": loss_value * n, "correct": correct, "n": n}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        out = super().summarize(sums)
        return {"loss": out["loss"], "p@1": out["accuracy"]} if self.multi else out

    @torch.no_grad()
    def probabilities(self, model: nn.Module, split: str) -> tuple[np.ndarray, float]:
        """(N, C) the model's probabilities on `split` (softmax, or a sigmoid per label) and its mean loss
        (over the texts with a known label)."""
        sp, C = self.splits[split], len(self.labels)
        out, loss_sum = [], 0.0
        for index in sequential_batches(len(sp), self.cfg.train.eval_batch_size):
            logits = model(*self.collate(sp.data, index)).float()
            if self.multi:
                targets = torch.from_numpy(self.multi_hot(sp, index)).to(logits.device)
                loss_sum += F.binary_cross_entropy_with_logits(logits, targets, reduction="sum").item()
                out.append(torch.sigmoid(logits).cpu().numpy())
            else:
                labels = torch.from_numpy(sp.labels[index]).to(logits.device)
                loss_sum += F.cross_entropy(logits, labels.masked_fill(labels >= C, IGNORE), reduction="sum",
                                            ignore_index=IGNORE).item()
                out.append(torch.softmax(logits, -1).cpu().numpy())
        known = int(sum(1 for i in range(len(sp)) if (sp.gold.get(i) < C).any()))
        return (np.concatenate(out) if out else np.zeros((0, C), np.float32)), loss_sum / max(known, 1)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        return self._scores(model, split)[0]

    def report(self, model: nn.Module, split: str) -> dict:
        """Full evaluation for `seqlab evaluate`: metrics, per-label table (single-label: and the confusion
        matrix)."""
        scores, extra = self._scores(model, split)
        return {**scores, "examples": len(self.splits[split]), **extra}

    def _scores(self, model: nn.Module, split: str) -> tuple[dict[str, float], dict]:
        sp = self.splits[split]
        probs, loss = self.probabilities(model, split)
        gold = [sp.gold.get(i).tolist() for i in range(len(sp))]
        p1, r1, _ = M.precision_recall_at_k(probs, gold, 1)
        K = len(self.labels) + len(self.extra_labels)
        names = list(self.labels.itos) + self.extra_labels
        if not self.multi:
            cm = M.confusion_matrix(sp.labels, probs.argmax(1) if len(probs) else np.zeros(0, np.int64), K)
            full = M.report(cm, names)
            summary = {k: full.pop(k) for k in ("accuracy", "macro_f1")}
            return {"loss": loss, **summary, "p@1": p1, "r@1": r1}, full
        thresholds = self.thresholds if self.thresholds is not None else np.full(len(self.labels), 0.5)
        decided = probs >= thresholds[None, :]
        f1 = M.multilabel_f1(decided, gold, K)
        return {"loss": loss, "p@1": p1, "r@1": r1, **f1}, {"thresholds": dict(zip(self.labels.itos,
                                                                                   thresholds.tolist(), strict=True))}

    def before_test(self, model: nn.Module) -> None:
        """Multi-label: each label's threshold, tuned on the valid split for F1 with the kept weights."""
        if self.multi and self.has_split("valid"):
            probs, _ = self.probabilities(model, "valid")
            sp = self.splits["valid"]
            self.thresholds = M.tune_thresholds(probs, [sp.gold.get(i).tolist() for i in range(len(sp))])


class ClassifierPredictor(LabelPredictor):
    """What `seqlab.load(run_dir)` returns for a classification run."""

    inputs = Inputs("text", "texts", "the texts to classify")
    options: ClassVar[dict[str, Option]] = {
        "top_k": TOP_K,
        "threshold": Option(float, None, "also return `labels`: those whose probability reaches it (multi-label "
                                         "runs: each label's threshold tuned on valid, when not given)",
                            Range(0.0, 1.0), optional=True),
        "attention": Option(bool, False, "also return each token's attention weight (models that attend: "
                                         "rnn with pooling=attention, transformer with cls/attention pooling)"),
    }
    attention = "tokens"

    def run(self, texts: list[str], top_k: int, threshold: float | None, attention: bool) -> list[dict]:
        """For each text: `label`, `probability` and `top_k` [(label, probability), ...] best first; with a
        threshold (or for a multi-label run) `labels` [(label, probability), ...]: every label whose probability
        reaches it, best first (none, possibly); with `attention`, also `attention` [(token, weight), ...] over
        the tokens the model read."""
        if attention and not self.attends():
            raise ConfigError(f"attention (--explain) needs a model with attention over its tokens; this run's "
                              f"model {self.task.cfg.model!r} has none (train model=rnn model.pooling=attention, "
                              f"or model=transformer)")
        task, labels = self.task, self.labels()
        data, out = task.encode(texts), []
        for index in sequential_batches(len(texts), task.cfg.train.eval_batch_size):
            inputs = task.collate(data, index)
            if attention:
                logits, weights = self.model(*inputs, return_attention=True)
                weights = weights.float().cpu().tolist()  # (B, T)
            else:
                logits = self.model(*inputs)
            probs = (torch.sigmoid if task.multi else lambda x: torch.softmax(x, dim=-1))(logits.float()).cpu()
            cut = self.thresholds(threshold)
            for j, result in enumerate(top_k_labels(probs, labels, top_k)):
                if cut is not None:
                    above = [i for i in probs[j].argsort(descending=True).tolist() if probs[j, i] >= cut[i]]
                    result["labels"] = [(labels[i], float(probs[j, i])) for i in above]
                if attention:
                    tokens = task.tokenize(texts[index[j]])[: task.opt.max_len]
                    result["attention"] = list(zip(tokens, weights[j], strict=False))
                out.append(result)
        return out

    def thresholds(self, threshold: float | None) -> np.ndarray | None:
        """(C,) the probability each label needs to be among `labels`: the one given, else a multi-label run's
        tuned ones (0.5 where none were tuned); None: single-label without a threshold."""
        C = len(self.task.labels)
        if threshold is not None:
            return np.full(C, threshold)
        if self.task.multi:
            return self.task.thresholds if self.task.thresholds is not None else np.full(C, 0.5)
        return None

    def format_text(self, result: dict) -> str:
        """The predicted `labels` (`label probability` TAB-separated; `-` for none), else as LabelPredictor."""
        if "labels" in result:
            return "\t".join(f"{lab} {p:.4f}" for lab, p in result["labels"]) or "-"
        return super().format_text(result)

    def attends(self) -> bool:
        return bool(getattr(self.model, "attends", False))  # the bag and the CNN do not

    def split_items(self, split: str) -> list[str]:
        return list(self.task.splits[split].texts)

    def synthetic_inputs(self, n: int) -> list[str]:
        words = [w for w in self.task.vocab.itos if not w.startswith("<") and " " not in w] or ["x"]
        rng = random.Random(0)
        return [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(n)]

    def export_spec(self) -> ExportSpec:
        f = self.task.features
        return ExportSpec(f.names, f.axes, lambda texts: self.task.collate(self.task.encode(texts),
                                                                           np.arange(len(texts))),
                          size=lambda text: len(text.split()),
                          longer=lambda text, n: " ".join(text.split() * -(-n // max(1, len(text.split())))))


ClassifyTask.Predictor = ClassifierPredictor
