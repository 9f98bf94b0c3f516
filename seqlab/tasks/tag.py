"""Task `tag`: tokens -> one tag per token (the lecture's aligned "many to many"; POS tagging).

Data: CoNLL-U (`data.format=conllu`; the UPOS or XPOS column, `task.column`) or two-column
`token<TAB>tag` files (`data.format=tagged`); `auto` picks conllu for `*.conllu[.gz]`. The tagger sees
syntactic words: a multiword token (`1-2 don't` over `do` + `n't`) contributes its words, never its
surface form, so predictions align one-to-one with the words read.

Inputs of every tagger (`MODELS["tag"]`): word ids (lowercased forms with `task.lowercase`), the
characters of each word as written between begin/end-of-word marks (a long word keeps its first and last
`task.max_word_len / 2` characters), and the sentence lengths. Loss: cross-entropy per word. Metrics:
token accuracy (named after the column: `upos_accuracy`, `xpos_accuracy`; `accuracy` for two-column
files), `unseen_accuracy` on words whose form never occurs in the training data, macro-F1 over tags, and
in `report` per-tag P/R/F1 and the confusion matrix. A gold tag never seen in training cannot be
predicted: it counts as an error and gets its own row in the report.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data import LabelVocab, ReadStats, Vocab
from seqlab.data.batching import Packed, sequential_batches
from seqlab.data.conllu import Sentence, read_conllu, read_tagged
from seqlab.errors import DataError
from seqlab.options import Positive, Range
from seqlab.tasks import metrics as M
from seqlab.tasks.base import ExportSpec, Inputs, Option, Predictor, Task

IGNORE = -100  # target of padded positions (and of gold tags unknown to the model) in the loss
CHAR_SPECIALS = ("<unk>", "<pad>", "<w>", "</w>")  # <w> and </w> mark where a word begins and ends


@dataclass
class TagConfig:
    column: Literal["upos", "xpos"] = "upos"  # the CoNLL-U column to tag (two-column files have only one)
    lowercase: bool = True  # word embeddings index lowercased forms (the char features see the case)
    min_freq: Positive = 1  # training words seen fewer times share <unk>
    max_vocab: Positive | None = None  # keep the most frequent words (None: all)
    max_word_len: Annotated[int, Range(min=2)] = 20  # characters per word for the char features: the first and last


@dataclass
class TagSplit:
    """One split, flat: token i of sentence s is `words.ids[words.starts[s] + i]`, and the same flat
    position indexes `chars`, `char_lengths`, `tags` and `unseen`."""

    sentences: list[list[str]]
    words: Packed  # word ids, one sequence per sentence
    chars: np.ndarray  # (n_tokens, max_word_len + 2) char ids with the word marks, padded
    char_lengths: np.ndarray  # (n_tokens,)
    tags: np.ndarray  # (n_tokens,) gold tag ids; ids >= the model's tag count are tags unseen in training
    unseen: np.ndarray  # (n_tokens,) bool: the form never occurs in the training data
    path: str | None

    def __len__(self) -> int:
        return len(self.sentences)


@dataclass
class TagBatch:
    words: torch.Tensor  # (B, T)
    chars: torch.Tensor  # (B, T, L)
    lengths: torch.Tensor  # (B,)
    tags: torch.Tensor  # (B, T) gold ids, IGNORE at padding
    unseen: torch.Tensor  # (B, T) bool, False at padding


class TagTask(Task):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    name = "tag"
    intended_use = ("Tagging each word of a tokenised sentence of the training treebank's language and genre "
                    "(e.g. part of speech), as input to further analysis.")
    Config = TagConfig
    default_model = "rnn"
    default_dataset = "ud_english"
    formats = ("conllu", "tagged")

    def __init__(self, cfg: Any, device: torch.device, log=print):
        super().__init__(cfg, device, log)
        tagged = bool(cfg.data.train) and self.format_of(cfg.data.train) == "tagged"
        self.headline = "accuracy" if tagged else f"{self.opt.column}_accuracy"
        self.default_metric = self.headline
        self.words: Vocab | None = None
        self.chars: Vocab | None = None
        self.tags: LabelVocab | None = None
        self.train_forms: set[str] = set()
        self.extra_tags: list[str] = []  # gold tags of evaluation data that training never saw

    # ------------------------------------------------------------------ files
    def read(self, path: str | Path) -> list[Sentence]:
        stats = ReadStats()
        kw = {"encoding": self.cfg.data.encoding, "skip_bad_rows": self.cfg.data.skip_bad_rows, "stats": stats}
        if self.format_of(path) == "conllu":
            sentences = list(read_conllu(path, column=self.opt.column, **kw))
        else:
            sentences = list(read_tagged(path, **kw))
        self.note_skipped(path, stats, "sentences")
        return sentences

    # ------------------------------------------------------------------ features
    def word_key(self, form: str) -> str:
        return form.lower() if self.opt.lowercase else form

    def char_sequence(self, form: str) -> str:
        """The characters the char features see: all of them, or the first and last max_word_len / 2."""
        n = self.opt.max_word_len
        return form if len(form) <= n else form[: n // 2] + form[len(form) - (n - n // 2) :]

    def encode(self, sentences: list[list[str]]) -> tuple[Packed, np.ndarray, np.ndarray]:
        """Word ids (one sequence per sentence), char ids (n_tokens, max_word_len + 2) with the word marks,
        and char lengths."""
        words = Packed.from_lists([self.words.encode(self.word_key(w) for w in s) for s in sentences])
        n_tokens = len(words.ids)
        chars = np.full((n_tokens, self.opt.max_word_len + 2), self.chars.pad_index, dtype=np.int64)
        bow, eow = self.chars.stoi["<w>"], self.chars.stoi["</w>"]
        char_lengths = np.zeros(n_tokens, dtype=np.int64)
        rows: dict[str, tuple[list[int], int]] = {}  # form -> (char ids, length), each form encoded once
        i = 0
        for s in sentences:
            for form in s:
                if form not in rows:
                    ids = [bow, *self.chars.encode(self.char_sequence(form)), eow]
                    rows[form] = (ids, len(ids))
                ids, n = rows[form]
                chars[i, :n] = ids
                char_lengths[i] = n
                i += 1
        return words, chars, char_lengths

    # ------------------------------------------------------------------ preparation
    def build(self, train: list[Sentence]) -> None:
        self.words = Vocab.build((map(self.word_key, s.tokens) for s in train), min_freq=self.opt.min_freq,
                                 max_size=self.opt.max_vocab)
        if self.init_source is not None:
            self.words = self.words.led_by([self.word_key(w) for w in self.init_source.words])
        self.chars = Vocab.build((self.char_sequence(w) for s in train for w in s.tokens), specials=CHAR_SPECIALS)
        self.tags = LabelVocab.build(t for s in train for t in s.tags)
        self.train_forms = {w for s in train for w in s.tokens}

    def vocabulary(self) -> tuple[list[str], int]:
        return self.words.itos, len(self.words.specials)

    def adopt(self, source) -> None:
        """The source run's words come first in the word vocabulary (`build`)."""
        self.init_source = source

    def _tag_id(self, tag: str) -> int:
        """The id of a gold tag; a tag training never saw gets an id past the model's tags."""
        if tag in self.tags:
            return self.tags.index(tag)
        if tag not in self.extra_tags:
            self.extra_tags.append(tag)
            self.log(f"tag {tag!r} does not occur in the training data: its words count as errors")
        return len(self.tags) + self.extra_tags.index(tag)

    def make_split(self, sentences: list[Sentence], path: str, split: str) -> TagSplit:
        tokens = [s.tokens for s in sentences]
        words, chars, char_lengths = self.encode(tokens)
        tags = np.fromiter((self._tag_id(t) for s in sentences for t in s.tags), dtype=np.int64, count=len(words.ids))
        unseen = np.fromiter((w not in self.train_forms for s in tokens for w in s), dtype=bool, count=len(words.ids))
        return TagSplit(tokens, words, chars, char_lengths, tags, unseen, path)

    def count(self) -> None:
        self.counts.update({f"{k}_tokens": len(v.tags) for k, v in self.splits.items()})
        self.counts.update(vocab_size=len(self.words), chars=len(self.chars), num_tags=len(self.tags))

    # ------------------------------------------------------------------ artifacts
    def artifacts(self) -> dict:
        return {"words": self.words.to_dict(), "chars": self.chars.to_dict(), "tags": self.tags.to_dict(),
                "train_forms": sorted(self.train_forms)}

    def restore(self, blob: dict, path: Path) -> None:
        self.words = Vocab.from_dict(blob["words"], path)
        self.chars = Vocab.from_dict(blob["chars"], path)
        self.tags = LabelVocab.from_dict(blob["tags"], path)
        self.train_forms = set(blob["train_forms"])

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        return self.model_cls(self.cfg.model_options, vocab_size=len(self.words), num_tags=len(self.tags),
                              n_chars=len(self.chars), padding_idx=self.words.pad_index,
                              unk_idx=self.words.unk_index, char_padding_idx=self.chars.pad_index)

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def lengths(self, split: TagSplit) -> np.ndarray:
        return split.words.lengths

    def collate(self, words: Packed, chars: np.ndarray, char_lengths: np.ndarray, index: np.ndarray
                ) -> tuple[tuple[torch.Tensor, ...], np.ndarray, np.ndarray]:
        """Model inputs (words (B, T), chars (B, T, L), lengths (B,)) for sentences `index`, plus the flat
        token position of each (B, T) slot and which slots are real words."""
        index = np.asarray(index, dtype=np.int64)
        lengths = words.lengths[index]  # (B,)
        T = max(1, int(lengths.max()))
        real = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
        pos = np.where(real, words.starts[index][:, None] + np.arange(T)[None, :], 0)  # (B, T)
        L = max(1, int(char_lengths[pos[real]].max()) if real.any() else 1)
        w = np.where(real, words.ids[pos], self.words.pad_index)
        c = np.where(real[..., None], chars[pos, :L], self.chars.pad_index)  # (B, T, L)
        inputs = (torch.from_numpy(w), torch.from_numpy(c), torch.from_numpy(np.maximum(lengths, 1)))
        return tuple(t.to(self.device) for t in inputs), pos, real

    def make_batch(self, index: np.ndarray, split: str = "train") -> TagBatch:
        sp = self.splits[split]
        (words, chars, lengths), pos, real = self.collate(sp.words, sp.chars, sp.char_lengths, index)
        tags = torch.from_numpy(np.where(real, sp.tags[pos], IGNORE)).to(self.device)
        unseen = torch.from_numpy(real & sp.unseen[pos]).to(self.device)
        return TagBatch(words, chars, lengths, tags, unseen)

    def _loss_targets(self, tags: torch.Tensor) -> torch.Tensor:
        """Gold ids for the loss: padding and tags unknown to the model are ignored."""
        return tags.masked_fill(tags >= len(self.tags), IGNORE)

    def training_loss(self, model: nn.Module, batch: TagBatch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch.words, batch.chars, batch.lengths)  # (B, T, K)
        loss = F.cross_entropy(logits.float().flatten(0, 1), self._loss_targets(batch.tags).flatten(),
                               ignore_index=IGNORE)
        real = batch.tags != IGNORE
        n = int(real.sum())
        correct = int(((logits.argmax(-1) == batch.tags) & real).sum())
        return loss, {"loss": loss.item() * n, "correct": correct, "n": n}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums.get("n", 0.0), 1.0)
        return {"loss": sums.get("loss", 0.0) / n, self.headline: sums.get("correct", 0.0) / n}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------------ evaluation
    def _score(self, model: nn.Module, split: str) -> tuple[np.ndarray, dict[str, float]]:
        """The confusion matrix over all gold and predicted tags of `split`, and the scalar metrics."""
        sp = self.splits[split]
        K = len(self.tags) + len(self.extra_tags)
        cm = np.zeros((K, K), dtype=np.int64)
        loss_sum = unseen_correct = 0.0
        order = np.argsort(sp.words.lengths, kind="stable")  # similar lengths together: little padding
        for index in sequential_batches(len(order), self.cfg.train.eval_batch_size):
            batch = self.make_batch(order[index], split)
            logits = model(batch.words, batch.chars, batch.lengths).float()
            loss_sum += F.cross_entropy(logits.flatten(0, 1), self._loss_targets(batch.tags).flatten(),
                                        ignore_index=IGNORE, reduction="sum").item()
            real = batch.tags != IGNORE
            pred = logits.argmax(-1)
            cm += M.confusion_matrix(batch.tags[real].cpu().numpy(), pred[real].cpu().numpy(), K)
            unseen_correct += int(((pred == batch.tags) & batch.unseen).sum())
        n, n_unseen = len(sp.tags), int(sp.unseen.sum())
        summary = M.summary(cm)
        return cm, {
            "loss": loss_sum / max(1, n),
            self.headline: summary["accuracy"],
            "unseen_accuracy": unseen_correct / n_unseen if n_unseen else 0.0,
            "macro_f1": summary["macro_f1"],
        }

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        return self._score(model, split)[1]

    def report(self, model: nn.Module, split: str) -> dict:
        """Full evaluation for `seqlab evaluate`: metrics, counts, per-tag table, confusion matrix."""
        cm, scores = self._score(model, split)
        sp = self.splits[split]
        full = M.report(cm, list(self.tags.itos) + self.extra_tags)
        del full["accuracy"], full["macro_f1"]
        return {**scores, "sentences": len(sp.sentences), "tokens": len(sp.tags),
                "unseen_tokens": int(sp.unseen.sum()), **full}



class TagPredictor(Predictor):
    """What `seqlab.load(run_dir)` returns for a tagging run."""

    inputs = Inputs("tokens", "sentences", "sentences: a string (split at whitespace) or a list of tokens")
    options: ClassVar[dict[str, Option]] = {"top_k": Option(int, 1, "how many tags to return per token, best first",
                                                            Range(min=1))}

    def labels(self) -> list[str]:
        return list(self.task.tags.itos)

    def run(self, sentences: list[str | list[str]], top_k: int) -> list[dict]:
        """For each sentence (a string, split at whitespace, or a list of tokens): `tokens`, one tag per
        token in `tags`, its `probabilities`, and with top_k > 1 `top_k`: per token [(tag, p), ...]."""
        tokens = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        for i, s in enumerate(tokens, 1):
            if not s:
                raise DataError(f"sentence {i} has no tokens")
        task, tags = self.task, self.labels()
        words, chars, char_lengths = task.encode(tokens)
        out: list[dict] = []
        k = min(top_k, len(tags))
        for index in sequential_batches(len(tokens), task.cfg.train.eval_batch_size):
            inputs, _, _ = task.collate(words, chars, char_lengths, index)
            probs = torch.softmax(self.model(*inputs).float(), dim=-1).cpu()  # (B, T, K)
            p, idx = probs.topk(k, dim=-1)  # (B, T, k)
            for row, i in enumerate(index):
                n = len(tokens[i])
                r = {"tokens": tokens[i], "tags": [tags[j] for j in idx[row, :n, 0].tolist()],
                     "probabilities": p[row, :n, 0].tolist()}
                if top_k > 1:
                    r["top_k"] = [[(tags[j], pj) for j, pj in zip(ij, pp, strict=True)]
                                  for ij, pp in zip(idx[row, :n].tolist(), p[row, :n].tolist(), strict=True)]
                out.append(r)
        return out

    def format_text(self, result: dict) -> str:
        """`word/TAG word/TAG ...`, as the CLI prints a tagged sentence."""
        return " ".join(f"{w}/{t}" for w, t in zip(result["tokens"], result["tags"], strict=True))

    def split_items(self, split: str) -> list[list[str]]:
        return [list(s) for s in self.task.splits[split].sentences]

    def split_references(self, split: str) -> list[list[str]]:
        sp, names = self.task.splits[split], self.labels() + self.task.extra_tags
        return [[names[t] for t in sp.tags[sp.words.starts[i]: sp.words.starts[i] + sp.words.lengths[i]]]
                for i in range(len(sp))]

    def synthetic_inputs(self, n: int) -> list[list[str]]:
        words = [w for w in self.task.words.itos if not w.startswith("<")] or ["x"]
        rng = random.Random(0)
        return [rng.choices(words, k=rng.randint(1, 12)) for _ in range(n)]

    def export_spec(self) -> ExportSpec:
        task = self.task

        def inputs(sentences: list[list[str]]) -> tuple[torch.Tensor, ...]:
            words, chars, char_lengths = task.encode(sentences)
            return task.collate(words, chars, char_lengths, np.arange(len(sentences)))[0]

        return ExportSpec(("words", "chars", "lengths"),
                          {"words": {0: "batch", 1: "time"}, "chars": {0: "batch", 1: "time", 2: "letters"},
                           "lengths": {0: "batch"}, "logits": {0: "batch", 1: "time"}},
                          inputs, longer=lambda tokens, n: list(tokens) * -(-n // max(1, len(tokens))))


TagTask.Predictor = TagPredictor
