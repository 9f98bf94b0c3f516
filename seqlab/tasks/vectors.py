"""Task `vectors`: word vectors learnt from raw text, as word2vec and fastText learn them (`models/vectors.py`).

Data: the texts of a corpus (`seqlab.tasks.corpus`: any classify format, labels ignored; `task.exclude`), cut
into words (`task.tokenizer`), words seen fewer than `task.min_count` times dropped, as one stream of word
ids. A dataset without a valid split holds out the stream's last `data.valid_fraction`.

Training, one epoch (word2vec's): frequent words are subsampled (a word of frequency f is kept with
probability sqrt(t/f) + t/f, t = `task.sample`), drawn afresh each epoch from (seed, epoch); each step takes
`train.batch_size` words of the kept stream as centres, each with a window of b words either side, b drawn
from 1..`task.window`; each (centre, context) pair adds `task.negative` negative words drawn from the unigram
distribution to the 3/4 power. Skip-gram predicts each context word from the centre's bag (its row and its
character n-grams: those of "<word>" of `task.minn`..`task.maxn` characters, hashed into `model.buckets`
rows); CBOW predicts the centre from the bag of its whole window. The loss is the negative-sampling logistic
loss, summed over pairs (the model's recipe: row-wise Adagrad, see `models/vectors.py`). Valid metric: the same
loss per pair on the valid stream (no subsampling, a fixed draw).

After training the vocabulary's vectors are written as `RUN/vectors.vec` (word2vec's text format: gensim's
`KeyedVectors.load_word2vec_format` and `task.pretrained=` read it); `seqlab nearest RUN WORD...` answers
neighbours and analogies (`king - man + woman`), a word never seen taking the vector of its n-grams.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data import Vocab, get_tokenizer
from seqlab.data.io import atomic_write_text
from seqlab.data.lm import split_corpus
from seqlab.errors import ConfigError, DataError
from seqlab.options import NonNegative, NonNegativeFloat, Positive, Range
from seqlab.tasks.base import Inputs, Option, Predictor
from seqlab.tasks.corpus import CorpusTask

EVAL_CENTRES = 200_000  # valid loss: on at most this many centre words of the valid stream
VECTORS = "vectors.vec"


@dataclass
class VectorsConfig:
    tokenizer: Literal["basic_english", "whitespace"] = "basic_english"  # text -> words
    min_count: Positive = 5  # rarer words are dropped from the stream (and have no row of their own)
    max_vocab: Positive | None = None  # keep the most frequent words (None: all)
    window: Positive = 5  # the widest context either side (each centre draws 1..window)
    negative: Positive = 5  # negative words per (centre, context) pair
    sample: NonNegativeFloat = 1e-4  # subsampling threshold t of frequent words (0: none)
    minn: NonNegative = 3  # character n-grams of "<word>" from minn...
    maxn: NonNegative = 6  # ...to maxn characters (maxn 0 or model.buckets 0: words only, word2vec)
    exclude: list[str] = field(default_factory=list)  # files or NAME:SPLIT whose texts are never trained on

    def validate(self) -> None:
        if self.maxn and self.minn > self.maxn:
            raise ConfigError(f"task.minn ({self.minn}) must not exceed task.maxn ({self.maxn})")


def char_ngrams(word: str, minn: int, maxn: int) -> list[str]:
    """fastText's subwords of `word`: the substrings of "<word>" of minn..maxn characters."""
    w = f"<{word}>"
    return [w[i:i + n] for n in range(max(1, minn), maxn + 1) for i in range(len(w) - n + 1)]


@dataclass
class Batch:
    ids: Tensor  # (N,) rows of the input bags
    offsets: Tensor  # (C,) where each bag starts
    targets: Tensor  # (B, 1 + K) each pair's true output word, then its negatives
    bag_of: Tensor | None = None  # (B,) the bag of each pair (skip-gram: a centre's bag serves all its pairs)


class VectorsTask(CorpusTask):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    name = "vectors"
    intended_use = ("Word vectors of the language of its corpus: similar words, analogies, and the embedding of "
                    "another model (`task.pretrained=RUN/vectors.vec`).")
    Config = VectorsConfig
    default_model = "fasttext"
    default_dataset = "imdb_text"
    default_metric = "loss"
    headline = "loss"
    unit = "words"

    def __init__(self, cfg: Any, device: torch.device, log=print):
        super().__init__(cfg, device, log)
        self.tokenize = get_tokenizer(self.opt.tokenizer)
        self.vocab: Vocab | None = None
        self.frequencies: np.ndarray | None = None  # (V,) each word's count in the training stream
        self.bag_offsets: np.ndarray | None = None  # (V + 1,) word i's input rows are bag_ids[offsets[i]:offsets[i+1]]
        self.bag_ids: np.ndarray | None = None
        self.noise: np.ndarray | None = None  # (V,) the cumulative unigram^0.75 distribution
        self.kept: tuple[int, np.ndarray] | None = None  # (epoch, its subsampled training stream)
        self.word_vectors: np.ndarray | None = None  # (V, D) after training

    @property
    def buckets(self) -> int:
        return self.cfg.model_options.buckets if self.opt.maxn else 0

    # ------------------------------------------------------------------ data
    def words(self, source: Any, split: str) -> np.ndarray:
        """A split's in-vocabulary words as one stream of ids, (L,) int64."""
        stoi, chunks, part = self.vocab.stoi, [], []
        for text in self.corpus(source, split):
            part.extend(i for i in map(stoi.get, self.tokenize(text)) if i is not None)
            if len(part) > 1_000_000:
                chunks.append(np.asarray(part, dtype=np.int64))
                part = []
        ids = np.concatenate([*chunks, np.asarray(part, dtype=np.int64)])
        if split == "train" and len(ids) < 2:
            raise DataError(f"no word of the corpus occurs task.min_count={self.opt.min_count} times", path=source)
        return ids

    def prepare(self, artifacts: str | Path | None = None) -> None:
        """Count the training words (or load the vocabulary of a run), then encode every split."""
        sources = self.sources()
        if "train" not in sources and artifacts is None:
            raise ConfigError("no training data: set data.train=PATH or dataset=NAME")
        if artifacts is None:
            counter: Counter = Counter()
            for text in self.corpus(sources["train"], "train"):
                counter.update(self.tokenize(text))
            kept = sorted((w for w, c in counter.items() if c >= self.opt.min_count), key=lambda w: (-counter[w], w))
            self.vocab = Vocab(["<unk>", *kept[: self.opt.max_vocab]], specials=("<unk>",), pad_token=None)
            self.frequencies = np.asarray([0] + [counter[w] for w in self.vocab.itos[1:]], dtype=np.int64)
        else:
            self.load_artifacts(artifacts)
        self.build_bags()
        self.splits = {split: self.words(source, split) for split, source in sources.items()}
        if "valid" not in self.splits and self.cfg.data.valid_fraction > 0 and "train" in self.splits:
            self.splits["train"], self.splits["valid"] = split_corpus(self.splits["train"],
                                                                      self.cfg.data.valid_fraction)
        self.counts.update({f"{k}_examples": len(v) for k, v in self.splits.items()})  # words
        self.counts.update(vocab_size=len(self.vocab))

    def build_bags(self) -> None:
        """Each word's input rows (itself, then its hashed n-grams) and the noise distribution."""
        V, B = len(self.vocab), self.buckets
        bags = [[i] + ([V + zlib.crc32(g.encode("utf-8")) % B for g in char_ngrams(w, self.opt.minn, self.opt.maxn)]
                       if B and i else []) for i, w in enumerate(self.vocab.itos)]
        self.bag_offsets = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
        self.bag_ids = np.fromiter((j for b in bags for j in b), dtype=np.int64, count=int(self.bag_offsets[-1]))
        p = self.frequencies.astype(np.float64) ** 0.75
        self.noise = np.cumsum(p / p.sum())

    def bags_of(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The input bags of word ids (B,): (rows (N,), offsets (B,))."""
        starts, ends = self.bag_offsets[words], self.bag_offsets[words + 1]
        lengths = ends - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        rows = self.bag_ids[np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))]
        return rows, offsets

    # ------------------------------------------------------------------ artifacts
    def artifacts(self) -> dict:
        return {"vocab": self.vocab.to_dict(), "frequencies": self.frequencies.tolist()}

    def restore(self, blob: dict, path) -> None:
        self.vocab = Vocab.from_dict(blob["vocab"])
        self.frequencies = np.asarray(blob["frequencies"], dtype=np.int64)
        if len(self.frequencies) != len(self.vocab):
            raise ValueError("one frequency per word")

    def save_artifacts(self, run_dir: str | Path) -> None:
        """vocab.json, and after training the vectors as RUN/vectors.vec (word2vec's text format)."""
        super().save_artifacts(run_dir)
        if self.word_vectors is not None:
            words, vectors = self.vocab.itos[1:], self.word_vectors[1:]
            lines = [f"{len(words)} {vectors.shape[1]}"]
            lines += [w + " " + " ".join(f"{x:.5g}" for x in v) for w, v in zip(words, vectors.tolist(), strict=True)]
            atomic_write_text(Path(run_dir) / VECTORS, "\n".join(lines) + "\n")

    def vocabulary(self) -> tuple[list[str], int]:
        return self.vocab.itos, 1

    def text_tokenizer(self) -> str:
        return self.opt.tokenizer

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        return self.model_cls(self.cfg.model_options, vocab_size=len(self.vocab))

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def subsampled(self, epoch: int) -> np.ndarray:
        """The training stream of `epoch` with frequent words dropped (a pure function of seed and epoch)."""
        if self.kept is None or self.kept[0] != epoch:
            stream, t = self.splits["train"], self.opt.sample
            if t:
                f = self.frequencies / max(1, int(self.frequencies.sum()))
                keep = np.minimum(1.0, np.sqrt(t / np.maximum(f, 1e-12)) + t / np.maximum(f, 1e-12))
                rng = np.random.default_rng([self.cfg.seed, epoch])
                stream = stream[rng.random(len(stream)) < keep[stream]]
            self.kept = (epoch, stream)
        return self.kept[1]

    def epoch_plan(self, epoch: int) -> list[tuple[int, int]]:
        """(epoch, first centre) per step: train.batch_size centre words of the epoch's kept stream each."""
        return [(epoch, start) for start in range(0, len(self.subsampled(epoch)), self.cfg.train.batch_size)]

    def pairs(self, stream: np.ndarray, start: int, count: int, rng: np.random.Generator) -> Batch:
        """The batch of the centres stream[start:start+count] (see the module docstring)."""
        W, K = self.opt.window, self.opt.negative
        centres = np.arange(start, min(start + count, len(stream)))
        reach = rng.integers(1, W + 1, size=len(centres))
        pos, ctx = [], []
        for d in range(1, W + 1):
            for c in (centres - d, centres + d):
                ok = (reach >= d) & (c >= 0) & (c < len(stream))
                pos.append(centres[ok])
                ctx.append(c[ok])
        pos, ctx = np.concatenate(pos), np.concatenate(ctx)
        bag_of = None
        if self.cfg.model_options.mode == "skipgram":  # each centre's bag once, shared by its pairs
            rows, offsets = self.bags_of(stream[centres])
            bag_of = torch.from_numpy(pos - start).to(self.device)
            true = stream[ctx]
        else:  # CBOW: one bag per centre, of its whole window
            order = np.argsort(pos, kind="stable")
            pos, ctx = pos[order], ctx[order]
            rows, word_offsets = self.bags_of(stream[ctx])
            first = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]]) if len(pos) else np.zeros(0, np.int64)
            offsets = word_offsets[first]
            true = stream[pos[first]]
        negatives = np.searchsorted(self.noise, rng.random((len(true), K)), side="right").clip(max=len(self.noise) - 1)
        targets = np.concatenate([true[:, None], negatives], axis=1)
        dev = self.device
        return Batch(torch.from_numpy(rows).to(dev), torch.from_numpy(offsets).to(dev),
                     torch.from_numpy(targets).to(dev), bag_of)

    def make_batch(self, item: tuple[int, int], split: str = "train") -> Batch:
        epoch, start = item
        rng = np.random.default_rng([self.cfg.seed, epoch, start])
        return self.pairs(self.subsampled(epoch), start, self.cfg.train.batch_size, rng)

    @staticmethod
    def pair_loss(model: nn.Module, batch: Batch) -> Tensor:
        """The negative-sampling loss of each pair, (B,): -log σ(target) - Σ log σ(-negative)."""
        logits = model(batch.ids, batch.offsets, batch.targets, batch.bag_of).float()  # (B, 1 + K)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(1)

    def training_loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        loss = self.pair_loss(model, batch).sum()  # summed over pairs, as word2vec's updates add up
        n = len(batch.targets)
        return loss, {"loss": loss.item(), "n": n}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums.get("loss", 0.0) / max(sums.get("n", 0.0), 1.0)}

    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split]) > 1

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        stream = self.splits[split][:EVAL_CENTRES]
        rng = np.random.default_rng([self.cfg.seed, 7])
        total, n = 0.0, 0
        for start in range(0, len(stream), 4096):
            batch = self.pairs(stream, start, 4096, rng)
            total += self.pair_loss(model, batch).sum().item()
            n += len(batch.targets)
        return {"loss": total / max(n, 1)}

    def before_test(self, model: nn.Module) -> None:
        """The vocabulary's vectors from the kept weights (written as vectors.vec with the artifacts)."""
        words = np.arange(len(self.vocab))
        rows, offsets = self.bags_of(words)
        model = model.to(self.device)
        self.word_vectors = model.vectors(torch.from_numpy(rows).to(self.device),
                                          torch.from_numpy(offsets).to(self.device)).float().cpu().numpy()


_TERM = re.compile(r"\s*([+-]?)\s*(\S+)")


class VectorsPredictor(Predictor):
    """What `seqlab.load(run_dir)` returns for a word-vectors run: the nearest words of a word or of a sum of
    words (`king - man + woman`: analogies), by cosine."""

    inputs = Inputs("text", "words", "a word, or words added and subtracted (king - man + woman)")
    options: ClassVar[dict[str, Option]] = {"top_k": Option(int, 10, "how many neighbours", Range(min=1))}
    verb = "nearest"

    def __init__(self, task: VectorsTask, model: nn.Module, run_dir=None):
        super().__init__(task, model, run_dir)
        if task.bag_offsets is None:
            task.build_bags()
        rows, offsets = task.bags_of(np.arange(len(task.vocab)))
        vectors = model.vectors(torch.from_numpy(rows), torch.from_numpy(offsets)).float()
        self.unit = F.normalize(vectors, dim=1)  # (V, D)
        self.unit[0] = 0.0  # <unk> is nobody's neighbour

    def vector(self, word: str) -> Tensor:
        """A word's vector, (D,): its own, else the mean of its n-grams' rows; DataError when it has neither."""
        task = self.task
        i = task.vocab.stoi.get(word)
        if i is not None and i > 0:
            return self.unit[i]
        if not task.buckets:
            raise DataError(f"{word!r} is not in the vocabulary (and this run has no character n-grams)")
        V, B = len(task.vocab), task.buckets
        ids = torch.tensor([V + zlib.crc32(g.encode("utf-8")) % B for g in char_ngrams(word, task.opt.minn,
                                                                                        task.opt.maxn)])
        return F.normalize(self.model.vectors(ids, torch.zeros(1, dtype=torch.long))[0].float(), dim=0)

    def run(self, queries: list[str], top_k: int) -> list[dict]:
        """For each query: `query`, `neighbours` [(word, cosine), ...] best first (the query's words left out)."""
        out = []
        for query in queries:
            terms = [(sign, self.task.tokenize(w)) for sign, w in _TERM.findall(query)]
            words = [(sign, w) for sign, ws in terms for w in ws]
            if not words:
                raise DataError(f"no word in the query {query!r}")
            total = sum((-1 if sign == "-" else 1) * self.vector(w) for sign, w in words)
            scores = self.unit @ F.normalize(total, dim=0)
            for _, w in words:
                if w in self.task.vocab.stoi:
                    scores[self.task.vocab.stoi[w]] = -2.0
            scores[0] = -2.0
            best = scores.topk(min(top_k, int((scores > -2.0).sum())))
            out.append({"query": query, "neighbours": [(self.task.vocab.itos[i], float(s))
                                                       for s, i in zip(best.values, best.indices.tolist(),
                                                                       strict=True)]})
        return out

    def format_text(self, result: dict) -> str:
        return "\t".join(f"{w} {s:.4f}" for w, s in result["neighbours"])

    def split_items(self, split: str) -> list[str]:
        return self.task.vocab.itos[1:11]

    def split_references(self, split: str) -> list[str]:
        return ["" for _ in self.split_items(split)]

    def synthetic_inputs(self, n: int) -> list[str]:
        return self.task.vocab.itos[1:n + 1]


VectorsTask.Predictor = VectorsPredictor
