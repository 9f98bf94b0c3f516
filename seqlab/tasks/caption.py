"""Task `caption`: an image -> a sentence describing it (the lecture's "one to many", image captioning).

Data: captions from JSONL (`{"image", "captions": [...], "split"}`) or the Flickr8k token file with its
split lists (`data.format=jsonl|flickr8k`, auto by the file name), pictures from a folder or a .tar of JPEGs
(`task.images=PATH`); without files, the named dataset (`dataset=flickr8k`). `data.train` may hold every
split (rows tagged val/test fill the valid/test splits unless `data.valid` / `data.test` name files).
Pictures are decoded once, resized to `task.size` pixels square and cached as uint8 arrays
(`task.cache`: in `$SEQLAB_CACHE/captions/`); they are standardised per channel with the training
images' mean and standard deviation; training may flip them (`task.augment_flip`) and shift them
(`task.augment_shift` pixels).

Words: captions are lowercased, their final period dropped and punctuation split off (`caption_words`);
the vocabulary keeps training words seen `task.min_freq` times.

Training: teacher forcing over every caption of each image in the batch (the image is encoded once), the
token-level cross-entropy with padding masked, plus `task.attention_reg` x the doubly-stochastic penalty
of Show, Attend and Tell, mean over captions and grid cells of (1 - sum_t alpha_t,cell)^2, for models that
attend; for models with a visual-concept head (`model.concepts`), plus `task.concept_loss` x its multi-label
loss: per training image, the binary cross-entropy of each vocabulary word's logit against "one of the
image's captions uses the word" (specials and <unk> are no concepts), summed over the words and averaged
over the images. With `task.concept_epochs`, a new run first trains the encoder and the concept head alone
on that loss for as many passes over the training pictures (Adam at train.lr, cosine to 0, train.batch_size
pictures, the same augmentation; a line per pass with the valid pictures' concept loss; its seconds count
against train.budget_seconds), then trains the captioner as above. With `task.scst_epochs=N`, the last N
epochs of the run (of those planned when each starts) train by self-critical sequence training instead
(Rennie et al. 2017, with the baseline of Luo 2020): for each picture `task.scst_samples` captions are drawn
from the model as it decodes (eval mode), each rewarded by its CIDEr-D against the picture's references
(document frequencies of all the training captions), and the loss is -(reward - the mean reward of the
picture's other samples) x the caption's log-probability (teacher-forced, in training mode), summed and
divided by the drawn tokens; its epochs log the mean reward, and the train perplexity is that of the drawn
captions.

Evaluation: loss and perplexity by teacher forcing; corpus BLEU-1..4 (sacrebleu, all references, lowercased)
and CIDEr-D of the decoded captions: greedy on `valid` (CIDEr-D picks the best checkpoint), beam search on the
other splits, with the greedy scores beside.

`captions.txt`: after the test evaluation, the run directory gets the test captions the test metrics scored
(beam search with `task.beam` and `task.length_penalty`, greedy when beam is 1), as UTF-8 tab-separated values:
a header line `image  generated  reference_1 .. reference_K` (K: the most references an image has, 5 on
Flickr8k), then one line per test image in the test split's order: its file name (as the captions file names
it), the generated caption, its references as read (an image with fewer has empty fields at the end). Tabs
and line breaks inside a field become spaces. Written atomically; the same run gives the same file.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from sacrebleu.metrics import BLEU
from torch import nn
from torch.nn import functional as F

from seqlab.data import ReadStats
from seqlab.data.batching import Packed, sequential_batches, shuffled_batches
from seqlab.data.captions import CaptionedImage, ImageSource, load_images, read_captions_jsonl, read_flickr8k_tokens
from seqlab.data.datasets import DatasetSpec, cache_dir
from seqlab.data.images import channel_stats, load_image
from seqlab.data.io import atomic_write_text
from seqlab.data.subword import TextTokenizer
from seqlab.errors import ConfigError, DataError
from seqlab.options import Dropout, NonNegative, NonNegativeFloat, NonNegativeFloats, Positive, PositiveInts, Range
from seqlab.tasks.base import Inputs, Option, Predictor
from seqlab.tasks.cider import CiderD, cider_d
from seqlab.tasks.decoding import sample_search
from seqlab.tasks.image import random_shift, standardize
from seqlab.tasks.sequence import BEAM, SequenceTask, teacher_forcing

CAPTIONS_FILE = "captions.txt"  # the test captions of a run (see the module docstring)
SPLIT_NAMES = {"train": "train", "valid": "val", "test": "test"}  # trainer's split -> the name in caption files
_WORDS = re.compile(r"[\w']+|[^\w\s]")


def caption_words(text: str) -> list[str]:
    """`A dog runs, fast .` -> ['a', 'dog', 'runs', ',', 'fast']: lowercased, final period dropped,
    punctuation split off."""
    words = _WORDS.findall(text.lower())
    while words and words[-1] == ".":
        words.pop()
    return words


@dataclass
class CaptionConfig:
    images: str | None = None  # folder or .tar of the pictures (default: the named dataset's)
    size: Annotated[int, Range(min=8)] = 64  # pictures are resized to size x size pixels
    cache: bool = True  # keep decoded pictures as uint8 arrays in $SEQLAB_CACHE/captions/
    augment_flip: bool = False  # training: mirror half of the pictures left-right
    augment_shift: NonNegative = 0  # training: shift each picture by up to this many pixels
    min_freq: Positive = 5  # rarer training words are <unk>
    max_len: Positive = 32  # words per caption, eos included (longer training captions are cut)
    label_smoothing: Dropout = 0.0  # the share of each target's probability spread over the vocabulary
    attention_reg: NonNegativeFloat = 0.0  # weight of Show, Attend and Tell's doubly-stochastic attention penalty
    concept_loss: NonNegativeFloat = 0.1  # weight of the visual-concept loss (models with model.concepts)
    concept_epochs: NonNegative = 0  # new runs: passes training the encoder on visual concepts alone first
    scst_epochs: NonNegative = 0  # the last N epochs train by self-critical sequence training (CIDEr-D reward)
    scst_samples: Annotated[int, Range(min=2)] = 5  # captions drawn per picture in those epochs
    beam: Positive = 3  # beam size for test and `seqlab caption` (1: greedy)
    length_penalty: NonNegativeFloat = 1.0  # beam ranks by log-prob / length ** length_penalty (1: per word)
    beam_choices: PositiveInts | None = None  # after training: the beam sizes tried on valid (the best becomes `beam`)
    length_penalty_choices: NonNegativeFloats | None = None  # ... and the length penalties (see tasks.sequence)


@dataclass
class CaptionSplit:
    names: list[str]  # image file names
    images: np.ndarray  # (N, 3, S, S) uint8 (memory-mapped from the cache)
    references: list[list[str]]  # the captions as read, per image
    tokens: Packed  # word ids of every caption (no bos/eos), the captions of image i contiguous
    first: np.ndarray  # (N,) index in `tokens` of image i's first caption
    count: np.ndarray  # (N,) its number of captions
    path: str

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class CaptionBatch:
    images: torch.Tensor  # (B, 3, S, S) float, normalised
    image_index: torch.Tensor  # (N,) the image of each caption
    tgt_in: torch.Tensor  # (N, T) <bos> y_1 .. y_{T-1}
    tgt_out: torch.Tensor  # (N, T) y_1 .. y_{T-1} <eos>, padded
    concepts: torch.Tensor | None = None  # (B, V) 1.0 where one of the image's captions uses the word (training
    # batches of models with model.concepts)
    index: np.ndarray | None = None  # (B,) the images' positions in their split

    def __len__(self) -> int:
        return len(self.images)


def bleu_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (sacrebleu, 13a tokens, lowercased) of one hypothesis per image against all of its
    references (an image with fewer references than the most has None in the missing streams)."""
    k = max((len(r) for r in references), default=1)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(k)]
    return {f"bleu{n}": BLEU(lowercase=True, max_ngram_order=n).corpus_score(hypotheses, streams).score
            for n in range(1, 5)}


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D of captions against the raw references, both as `caption_words` (lowercased,
    punctuation split off, final periods dropped)."""
    hyps = [" ".join(caption_words(h)) for h in hypotheses]
    refs = [[" ".join(caption_words(r)) for r in rs] for rs in references]
    return {**bleu_scores(hyps, refs), "cider": cider_d(hyps, references)[0]}


def _field(text: str) -> str:
    """One TSV field: tabs and line breaks become spaces."""
    return re.sub(r"[\t\r\n\v\f\x1c-\x1e\x85\u2028\u2029]", " ", text)


def captions_table(names: list[str], generated: list[str], references: list[list[str]]) -> str:
    """The text of `captions.txt` (see the module docstring): a header, then per image its name, its generated
    caption and its references, tab-separated, padded with empty fields to the most references."""
    k = max((len(r) for r in references), default=0)
    lines = ["\t".join(["image", "generated", *(f"reference_{j}" for j in range(1, k + 1))])]
    for name, gen, refs in zip(names, generated, references, strict=True):
        lines.append("\t".join(_field(x) for x in [name, gen, *refs, *[""] * (k - len(refs))]))
    return "\n".join(lines) + "\n"


class CaptionTask(SequenceTask):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    name = "caption"
    intended_use = ("Describing pictures like its training pictures in a short sentence of its training captions' "
                    "vocabulary and style.")
    Config = CaptionConfig
    default_model = "rnn"
    default_dataset = "flickr8k"
    formats = ("flickr8k", "jsonl")
    artifact = "captions.json"
    default_metric = "cider"
    unit = "images"

    def __init__(self, cfg: Any, device: torch.device, log=print):
        super().__init__(cfg, device, log)
        self.tok: TextTokenizer | None = None
        self.mean: np.ndarray | None = None  # (3,) per-channel mean and std of the training pixels in [0, 1]
        self.std: np.ndarray | None = None
        self.images = self.opt.images  # where the pictures are (a named dataset's, without task.images)
        self._source: ImageSource | None = None
        self.test_captions: list[str] | None = None  # the test split's captions as the test metrics decoded them
        self.scst = False  # this epoch trains by self-critical sequence training (task.scst_epochs)
        self._reward: CiderD | None = None  # CIDEr-D with the training captions' document frequencies

    @property
    def target(self) -> TextTokenizer:
        return self.tok

    # ------------------------------------------------------------------ files
    def read(self, path: str | os.PathLike) -> list[CaptionedImage]:
        """Every captioned image of a file (of every split it tags), those whose picture is known."""
        d = self.cfg.data
        stats = ReadStats()
        reader = read_captions_jsonl if self.format_of(path) == "jsonl" else read_flickr8k_tokens
        rows = reader(path, encoding=d.encoding, skip_bad_rows=d.skip_bad_rows, stats=stats)
        self.note_skipped(path, stats)
        return self._known(rows, path)

    def dataset_sources(self, spec: DatasetSpec) -> dict[str, str]:
        if spec.format != "captions":
            raise ConfigError(f"dataset {spec.name!r} is not a captioning dataset")
        self.images = self.images or str(Path(spec.train).with_name(spec.reader_options["images"]))
        return {s: str(getattr(spec, s)) for s in SPLIT_NAMES if getattr(spec, s) is not None}

    def source(self) -> ImageSource:
        if self.images is None:
            raise ConfigError("set task.images=PATH: the folder or .tar of the pictures")
        if self._source is None or str(self._source.path) != str(self.images):
            self._source = ImageSource(self.images)
        return self._source

    def read_all(self) -> dict[str, tuple[list[CaptionedImage], str]]:
        """Rows of each split: the file named for it gives its rows tagged with it or untagged; the train
        file also gives the rows tagged val/test when those splits have no file of their own."""
        files = self.sources()
        read: dict[str, list[CaptionedImage]] = {}
        out: dict[str, tuple[list[CaptionedImage], str]] = {}
        own = set(files)
        for split, name in SPLIT_NAMES.items():
            path = files.get(split) or (files.get("train") if split != "train" else None)
            if path is None:
                continue
            if path not in read:
                read[path] = self.read(path)
            rows = [r for r in read[path] if r.split == name or (r.split is None and split in own)]
            if rows:
                out[split] = (rows, path)
        return out

    def _known(self, rows: list[CaptionedImage], path: str) -> list[CaptionedImage]:
        """Rows whose picture the source holds; a caption for an unknown picture is an error (or skipped)."""
        source, kept = self.source(), []
        for r in rows:
            if r.image in source:
                kept.append(r)
            elif self.cfg.data.skip_bad_rows:
                self.counts["skipped_rows"][str(path)] = self.counts["skipped_rows"].get(str(path), 0) + 1
            else:
                raise DataError(f"caption for an unknown image {r.image} (not in {source.path})", path=path)
        return kept

    # ------------------------------------------------------------------ preparation
    def build(self, rows: list[CaptionedImage]) -> None:
        self.tok = TextTokenizer.train("word", (" ".join(caption_words(c)) for r in rows for c in r.captions),
                                       min_freq=self.opt.min_freq)

    def make_split(self, rows: list[CaptionedImage], path: str, split: str) -> CaptionSplit:
        source = self.source()
        names = [r.image for r in rows]
        cache = cache_dir() / "captions" if self.opt.cache else None
        images, ok = load_images(source, names, self.opt.size, cache, skip_bad=self.cfg.data.skip_bad_rows,
                                 stats=ReadStats())
        if not ok.all():
            self.log(f"{source.path}: skipped {int((~ok).sum())} unreadable images")
            self.counts["skipped_images"] = self.counts.get("skipped_images", 0) + int((~ok).sum())
            keep = np.flatnonzero(ok)
            rows, names, images = [rows[i] for i in keep], [names[i] for i in keep], images[keep]
        count = np.array([len(r.captions) for r in rows], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64) if len(rows) else count
        texts = [" ".join(caption_words(c)) for r in rows for c in r.captions]
        return CaptionSplit(names, images, [r.captions for r in rows], Packed.from_lists(self.tok.encode_batch(texts)),
                            first, count, path)

    def count(self) -> None:
        if self.mean is None:  # a new run: the training pictures' statistics
            self.mean, self.std = channel_stats(self.splits["train"].images)
        self.counts.update({f"{k}_captions": len(v.tokens) for k, v in self.splits.items()})
        self.counts.update(vocab_size=self.tok.vocab_size)

    # ------------------------------------------------------------------ artifacts
    def save_artifacts(self, run_dir: str | Path) -> None:
        self.tok.save(Path(run_dir) / "tokenizer.json")
        super().save_artifacts(run_dir)
        if self.test_captions is not None and "test" in self.splits:  # after the test evaluation
            sp = self.splits["test"]
            atomic_write_text(Path(run_dir) / CAPTIONS_FILE, captions_table(sp.names, self.test_captions,
                                                                            sp.references))

    def load_artifacts(self, run_dir: str | Path) -> None:
        self.tok = TextTokenizer.load(Path(run_dir) / "tokenizer.json")
        super().load_artifacts(run_dir)

    def artifacts(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def restore(self, blob: dict, path: Path) -> None:
        self.mean, self.std = np.asarray(blob["mean"], float), np.asarray(blob["std"], float)
        if self.mean.shape != (3,) or self.std.shape != (3,):
            raise ValueError("normalisation is not per RGB channel")

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        return self.model_cls(self.cfg.model_options, vocab_size=self.tok.vocab_size, padding_idx=self.tok.pad_id,
                              in_channels=3, image_size=self.opt.size)

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def to_input(self, images: np.ndarray, augment: bool = False) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> float (B, 3, S, S): in [0, 1], flipped / shifted (augment), standardised."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
        if augment and self.opt.augment_flip:
            flip = torch.rand(len(x)) < 0.5
            x[flip] = x[flip].flip(-1)
        if augment and self.opt.augment_shift:
            x = random_shift(x, self.opt.augment_shift)
        return standardize(x, self.mean, self.std).to(self.device)

    def make_batch(self, index: np.ndarray, split: str = "train") -> CaptionBatch:
        """The images `index` (in sorted order, for faster reads) and every caption of each."""
        sp = self.splits[split]
        index = np.sort(np.asarray(index, dtype=np.int64))
        captions = self._captions(sp, index)
        image_index = torch.from_numpy(np.repeat(np.arange(len(index)), sp.count[index]))
        tgt_in, tgt_out = teacher_forcing(sp.tokens, captions, self.tok, self.opt.max_len)
        concepts = None
        if split == "train" and getattr(self.cfg.model_options, "concepts", False):
            concepts = self.concept_targets(sp, index).to(self.device)
        return CaptionBatch(self.to_input(sp.images[index], augment=split == "train"), image_index.to(self.device),
                            tgt_in.to(self.device), tgt_out.to(self.device), concepts, index)

    @staticmethod
    def _captions(sp: CaptionSplit, index: np.ndarray) -> np.ndarray:
        """The indices in `sp.tokens` of every caption of images `index`, image by image."""
        if not len(index):
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(f, f + c) for f, c in zip(sp.first[index], sp.count[index], strict=True)])

    def concept_targets(self, sp: CaptionSplit, index: np.ndarray) -> torch.Tensor:
        """(len(index), V) float: 1.0 where one of image index[i]'s captions holds the word (every word of a
        caption counts, not only the first max_len; specials and <unk> do not)."""
        captions = self._captions(sp, index)
        target = np.zeros((len(index), self.tok.vocab_size), dtype=np.float32)
        rows = np.repeat(np.repeat(np.arange(len(index)), sp.count[index]), sp.tokens.lengths[captions])
        cols = np.concatenate([sp.tokens.get(c) for c in captions]) if len(captions) else np.zeros(0, np.int64)
        target[rows, cols] = 1.0
        target[:, : len(self.tok.specials)] = 0.0
        target[:, self.tok.unk_id] = 0.0
        return torch.from_numpy(target)

    @staticmethod
    def concept_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits, targets (B, V) -> the binary cross-entropy summed over the words, mean over the images."""
        return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum") / len(targets)

    def before_training(self, model: nn.Module) -> None:
        """`task.concept_epochs` passes training the encoder and concept head alone (see the module docstring)."""
        epochs = self.opt.concept_epochs
        if not epochs:
            return
        head = getattr(model, "concepts", None)
        if head is None:
            raise ConfigError("task.concept_epochs needs a concept head to pretrain: set model.concepts=true")
        sp, bs = self.splits["train"], self.cfg.train.batch_size
        params = [p for p in [*model.encoder.parameters(), *head.parameters()] if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.cfg.train.lr)
        steps = epochs * math.ceil(len(sp) / bs)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        record = []
        for epoch in range(1, epochs + 1):
            t0, total = time.perf_counter(), 0.0
            model.train()
            for index in shuffled_batches(len(sp), bs, self.cfg.seed + epoch):
                index = np.sort(index)
                loss = self.concept_loss(head(model.encoder(self.to_input(sp.images[index], augment=True))),
                                         self.concept_targets(sp, index).to(self.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(index)
            row = {"epoch": epoch, "loss": total / len(sp)}
            if self.has_split("valid"):
                row["valid_loss"] = self.valid_concept_loss(model)
            row["seconds"] = time.perf_counter() - t0  # the pass and its valid loss
            record.append(row)
            valid = f", valid {row['valid_loss']:.2f}" if "valid_loss" in row else ""
            self.log(f"concepts {epoch}/{epochs}: loss {row['loss']:.2f}{valid} ({row['seconds']:.0f} s)")
        model.zero_grad(set_to_none=True)
        self.counts["concept_pretraining"] = record

    def pretraining_seconds(self) -> float:
        return sum(row["seconds"] for row in self.counts.get("concept_pretraining", []))

    @torch.no_grad()
    def valid_concept_loss(self, model: nn.Module) -> float:
        """The concept loss of the valid pictures (mean over the images), the model in eval mode."""
        sp, total = self.splits["valid"], 0.0
        model.eval()
        for index in sequential_batches(len(sp), self.cfg.train.eval_batch_size):
            logits = model.concepts(model.encoder(self.to_input(sp.images[index])))
            total += self.concept_loss(logits, self.concept_targets(sp, index).to(self.device)).item() * len(index)
        model.train()
        return total / len(sp)

    def forward(self, model: nn.Module, batch: CaptionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The logits and the extra terms (see the module docstring): for models that attend, task.attention_reg
        x Show, Attend and Tell's doubly-stochastic penalty (every grid cell gets attention ~1 over the
        caption); for training batches of models with concepts, task.concept_loss x the concepts' loss."""
        out = model.forward_train(batch.images, batch.tgt_in, batch.image_index,
                                  need_weights=self.opt.attention_reg > 0)
        penalty = out.logits.new_zeros((), dtype=torch.float)
        if out.attention is not None:
            real = batch.tgt_out != self.tok.pad_id  # (N, T)
            per_cell = (out.attention.float() * real.unsqueeze(-1)).sum(dim=1)  # (N, G)
            penalty = self.opt.attention_reg * ((1.0 - per_cell) ** 2).mean()
        if out.concepts is not None and batch.concepts is not None:
            penalty = penalty + self.opt.concept_loss * self.concept_loss(out.concepts, batch.concepts)
        return out.logits, batch.tgt_out, penalty

    # ------------------------------------------------------------------ self-critical sequence training
    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.scst = epoch >= epochs - self.opt.scst_epochs

    def training_loss(self, model: nn.Module, batch: CaptionBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.self_critical_loss(model, batch) if self.scst else super().training_loss(model, batch)

    def self_critical_loss(self, model: nn.Module, batch: CaptionBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The self-critical loss of a training batch (see the module docstring) and its sums: nll and n of the
        drawn captions' tokens, their summed reward and number of samples."""
        if self._reward is None:
            self._reward = CiderD(self.splits["train"].references)
        K, B = self.opt.scst_samples, len(batch)
        rows = torch.arange(B, device=self.device).repeat_interleave(K)  # (B * K,) the picture of each sample
        training = model.training
        model.eval()  # the captions are drawn from the model as it decodes (no dropout)
        with torch.no_grad():
            state = model.reorder_state(model.encode(batch.images), rows)
            max_lengths = torch.full((B * K,), self.opt.max_len, device=self.device)
            tokens, steps = sample_search(model, state, self.tok.bos_id, self.tok.eos_id, max_lengths)
        model.train(training)
        real = torch.arange(tokens.size(1), device=self.device) < steps[:, None]  # (B * K, T) drawn positions
        tokens = tokens.masked_fill(~real, self.tok.pad_id)
        tgt_in = torch.cat([torch.full_like(tokens[:, :1], self.tok.bos_id), tokens[:, :-1]], dim=1)
        logits = model.forward_train(batch.images, tgt_in, rows, need_weights=False).logits
        log_prob = (F.log_softmax(logits.float(), dim=-1).gather(2, tokens[:, :, None]).squeeze(2) * real).sum(1)
        drawn = [self.tok.decode([t for t in seq[:n] if t != self.tok.eos_id]).strip()
                 for seq, n in zip(tokens.tolist(), steps.tolist(), strict=True)]
        reward = torch.tensor(self._reward.scores([" ".join(caption_words(c)) for c in drawn],
                                                  np.repeat(batch.index, K)), device=self.device).view(B, K)
        baseline = (reward.sum(dim=1, keepdim=True) - reward) / (K - 1)  # the mean of the picture's other samples
        n = int(steps.sum())
        loss = -((reward - baseline).view(-1) * log_prob).sum() / n
        return loss, {"nll": -float(log_prob.detach().sum()), "n": n, "examples": B, "reward": float(reward.sum()),
                      "samples": B * K}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        out = super().summarize(sums)
        if sums.get("samples"):
            out["reward"] = sums["reward"] / sums["samples"]
        return out

    # ------------------------------------------------------------------ decoding and evaluation
    def encode_inputs(self, model: nn.Module, split: CaptionSplit, index: np.ndarray):
        state = model.encode(self.to_input(split.images[index]))
        return state, torch.full((len(index),), self.opt.max_len, device=self.device), None

    def decoded_scores(self, model: nn.Module, split: str, beam: int) -> tuple[dict[str, float], float]:
        """As SequenceTask's; the test captions decoded as the test metrics use them (`task.beam`) are kept
        for `captions.txt`."""
        t0 = time.perf_counter()
        outputs = self.detokenize(self.decode(model, self.splits[split], beam))
        speed = len(outputs) / max(time.perf_counter() - t0, 1e-9)
        if split == "test" and beam == self.opt.beam:
            self.test_captions = outputs
        return self.scores(outputs, split), speed

    def scores(self, outputs: list[str], split: str) -> dict[str, float]:
        return caption_scores(outputs, self.splits[split].references)

    def describe_scores(self, scores: dict[str, float]) -> str:
        return f"BLEU-4 {scores['bleu4']:.2f}  CIDEr-D {scores['cider']:.3f}"

    def report(self, model: nn.Module, split: str) -> dict:
        """`seqlab evaluate`: the metrics of `evaluate` and the size of the split."""
        sp = self.splits[split]
        return {**self.evaluate(model, split), "examples": len(sp), "captions": len(sp.tokens)}


class Captioner(Predictor):
    """What `seqlab.load(run_dir)` returns for a captioning run."""

    inputs = Inputs("image", "image", "a picture: a file (any size and mode), its bytes, or an (H, W, 3) uint8 "
                                      "array")
    options: ClassVar[dict[str, Option]] = {
        "beam": BEAM,
        "attention": Option(bool, False, "also return the words and each word's attention over the image grid"),
    }
    verb = "caption"
    attention = "image"
    outputs_file = CAPTIONS_FILE  # every test caption with its references

    def load_input(self, image: str | os.PathLike | bytes | np.ndarray) -> np.ndarray:
        """An image file or its bytes (any size), or an RGB (H, W, 3) uint8 array -> (H, W, 3) uint8 at the
        model's size."""
        size = self.task.opt.size
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise DataError(f"an image array must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
            if image.shape[:2] != (size, size):
                from PIL import Image

                image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
            return image
        return load_image(image, size, name="uploaded image" if isinstance(image, bytes) else None,
                          max_pixels=self.max_pixels, draft=True)

    def run(self, images: list, beam: int | None, attention: bool) -> list[dict]:
        """For each image: `caption`, `log_prob`, and with `attention` the `words` and `attention` [[weight per
        grid cell, row by row] per word] with the `grid` (h, w)."""
        task = self.task
        beam = task.opt.beam if beam is None else beam
        pixels = np.stack([self.load_input(im).transpose(2, 0, 1) for im in images])  # (B, 3, S, S)
        split = CaptionSplit([""] * len(pixels), pixels, [], Packed.from_lists([]), np.zeros(0), np.zeros(0), "")
        hyps = task.decode(self.model, split, beam, need_weights=attention)
        out = []
        for h, text in zip(hyps, task.detokenize(hyps), strict=True):
            r = {"caption": text, "log_prob": h.log_prob}
            if attention:
                if h.attention is None:
                    raise ConfigError("this model does not attend over the image (model.attention=false)")
                cells = h.attention.size(-1)
                side = math.isqrt(cells)
                r.update(words=[task.tok.id_to_token(i) for i in h.tokens], attention=h.attention.tolist(),
                         grid=[side, cells // side])
            out.append(r)
        return out

    def format_text(self, result: dict) -> str:
        return result["caption"]

    def split_items(self, split: str) -> list[np.ndarray]:
        return [np.asarray(im).transpose(1, 2, 0) for im in self.task.splits[split].images]  # (3, S, S) -> (S, S, 3)

    def split_references(self, split: str) -> list[list[str]]:
        return list(self.task.splits[split].references)

    def synthetic_inputs(self, n: int) -> list[np.ndarray]:
        rng = np.random.default_rng(random.Random(0).randrange(2**32))
        return [rng.integers(0, 256, (self.task.opt.size, self.task.opt.size, 3), dtype=np.uint8) for _ in range(n)]

    def attends(self) -> bool:
        return bool(getattr(self.model.cfg, "attention", True))


CaptionTask.Predictor = Captioner
