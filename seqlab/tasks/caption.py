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
attend. Evaluation: loss and perplexity by teacher forcing; corpus BLEU-1..4 (sacrebleu, all references,
lowercased) and CIDEr-D of the decoded captions: greedy on `valid` (CIDEr-D picks the best checkpoint), beam
search on the other splits, with the greedy scores beside.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU
from torch import nn

from seqlab.data import ReadStats, get_dataset
from seqlab.data.batching import Packed, pad_batch, sequential_batches, shuffled_batches
from seqlab.data.captions import (
    CaptionedImage,
    ImageSource,
    load_images,
    read_captions_jsonl,
    read_flickr8k_tokens,
)
from seqlab.data.datasets import cache_dir
from seqlab.data.images import load_image
from seqlab.data.io import atomic_write_text
from seqlab.data.subword import TextTokenizer
from seqlab.errors import CheckpointError, ConfigError, DataError
from seqlab.models import MODELS
from seqlab.options import Dropout, NonNegative, NonNegativeFloat, Positive, Range
from seqlab.tasks.cider import cider_d
from seqlab.tasks.common import hold_out
from seqlab.tasks.decoding import Hypothesis, beam_search, greedy_search
from seqlab.tasks.image import ImageTask

DEFAULT_DATASET = "flickr8k"
SPLITS = {"train": "train", "valid": "val", "test": "test"}  # trainer's split -> the name in caption files
ARTIFACT = "captions.json"
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
    beam: Positive = 3  # beam size for test and `seqlab caption` (1: greedy)
    length_penalty: NonNegativeFloat = 1.0  # beam ranks by log-prob / length ** length_penalty (1: per word)


@dataclass
class CaptionSplit:
    names: list[str]  # image file names
    images: np.ndarray  # (N, 3, S, S) uint8 (memory-mapped from the cache)
    references: list[list[str]]  # the captions as read, per image
    tokens: Packed  # word ids of every caption (no bos/eos), the captions of image i contiguous
    first: np.ndarray  # (N,) index in `tokens` of image i's first caption
    count: np.ndarray  # (N,) its number of captions
    path: str


@dataclass
class CaptionBatch:
    images: torch.Tensor  # (B, 3, S, S) float, normalised
    image_index: torch.Tensor  # (N,) the image of each caption
    tgt_in: torch.Tensor  # (N, T) <bos> y_1 .. y_{T-1}
    tgt_out: torch.Tensor  # (N, T) y_1 .. y_{T-1} <eos>, padded


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


class CaptionTask:
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    Config = CaptionConfig
    default_model = "rnn"
    default_dataset = DEFAULT_DATASET
    default_metric = "cider"
    headline = "perplexity"

    def __init__(self, cfg: Any, device: torch.device, log=print):
        self.cfg = cfg
        self.opt: CaptionConfig = cfg.task_options
        self.device = device
        self.log = log or (lambda _m: None)
        self.model_cls = MODELS["caption"][cfg.model]
        self.tok: TextTokenizer | None = None
        self.mean: np.ndarray | None = None  # (3,) per-channel mean and std of the training pixels in [0, 1]
        self.std: np.ndarray | None = None
        self.splits: dict[str, CaptionSplit] = {}
        self.counts: dict[str, Any] = {}
        self._source: ImageSource | None = None

    # ------------------------------------------------------------------ files
    def read_file(self, path: str | os.PathLike) -> list[CaptionedImage]:
        d = self.cfg.data
        fmt = d.format
        if fmt == "auto":
            fmt = "flickr8k" if str(path).endswith(".token.txt") else "jsonl"
        if fmt not in ("jsonl", "flickr8k"):
            raise ConfigError(f"data.format must be auto, jsonl or flickr8k for captioning, got {fmt!r}")
        stats = ReadStats()
        reader = read_captions_jsonl if fmt == "jsonl" else read_flickr8k_tokens
        rows = reader(path, encoding=d.encoding, skip_bad_rows=d.skip_bad_rows, stats=stats)
        if stats.skipped:
            self.log(f"{path}: skipped {stats.skipped} bad rows (first: {'; '.join(stats.first_errors[:2])})")
            self.counts["skipped_rows"] = self.counts.get("skipped_rows", 0) + stats.skipped
        return rows

    def _sources(self) -> tuple[dict[str, str | None], str]:
        """The captions file of each split and the images path."""
        d = self.cfg.data
        if d.train or d.valid or d.test:
            files, images = {s: getattr(d, s) for s in SPLITS}, self.opt.images
        else:
            spec = get_dataset(self.cfg.dataset or DEFAULT_DATASET)
            if spec.format != "captions":
                raise ConfigError(f"dataset {spec.name!r} is not a captioning dataset")
            files = {s: None if getattr(spec, s) is None else str(getattr(spec, s)) for s in SPLITS}
            images = self.opt.images or str(Path(spec.train).with_name(spec.reader_options["images"]))
        if images is None:
            raise ConfigError("set task.images=PATH: the folder or .tar of the pictures")
        return files, images

    def source(self, images: str) -> ImageSource:
        if self._source is None or str(self._source.path) != str(images):
            self._source = ImageSource(images)
        return self._source

    def _read_all(self) -> tuple[dict[str, tuple[list[CaptionedImage], str]], str]:
        """Rows of each split: the file named for it gives its rows tagged with it or untagged; the train
        file also gives the rows tagged val/test when those splits have no file of their own."""
        files, images = self._sources()
        read: dict[str, list[CaptionedImage]] = {}
        out: dict[str, tuple[list[CaptionedImage], str]] = {}
        train_file = files["train"]
        for split, name in SPLITS.items():
            path = files[split] or (train_file if split != "train" else None)
            if path is None:
                continue
            if path not in read:
                read[path] = self.read_file(path)
            rows = [r for r in read[path] if r.split == name or (r.split is None and files[split] is not None)]
            if rows:
                out[split] = (rows, path)
        return out, images

    # ------------------------------------------------------------------ preparation
    def prepare(self, artifacts: str | Path | None = None) -> None:
        """Read every split and decode (or map from the cache) its pictures. With `artifacts` (a run
        directory) vocabulary and normalisation come from it; otherwise from the training split."""
        raw, images = self._read_all()
        if "train" not in raw and artifacts is None:
            raise ConfigError("no training captions: set data.train=PATH or dataset=flickr8k")
        if "train" in raw and "valid" not in raw and self.cfg.data.valid_fraction > 0:
            rows, path = raw["train"]
            keep, held = hold_out(len(rows), self.cfg.data.valid_fraction, self.cfg.seed)
            raw["train"], raw["valid"] = ([rows[i] for i in keep], path), ([rows[i] for i in held], path)
        source = self.source(images)
        for split, (rows, path) in raw.items():
            raw[split] = (self._known(rows, source, path), path)
        if artifacts is None:
            rows = raw["train"][0]
            self.tok = TextTokenizer.train("word", (" ".join(caption_words(c)) for r in rows for c in r.captions),
                                           min_freq=self.opt.min_freq)
        else:
            self.load_artifacts(artifacts)
        for split, (rows, path) in raw.items():
            self.splits[split] = self._make_split(rows, source, path)
        if artifacts is None:
            x = self.splits["train"].images
            sums = np.zeros((2, 3))
            for i in range(0, len(x), 512):  # chunks: the array may be memory-mapped
                chunk = np.asarray(x[i: i + 512], dtype=np.float64) / 255.0
                sums += [chunk.sum(axis=(0, 2, 3)), (chunk**2).sum(axis=(0, 2, 3))]
            n = len(x) * x.shape[2] * x.shape[3]
            self.mean = sums[0] / n
            self.std = np.sqrt(np.maximum(sums[1] / n - self.mean**2, 1e-12))
        for k, v in self.splits.items():
            self.counts.update({f"{k}_examples": len(v.names), f"{k}_captions": len(v.tokens)})
        self.counts.update(vocab_size=self.tok.vocab_size)

    def _known(self, rows: list[CaptionedImage], source: ImageSource, path: str) -> list[CaptionedImage]:
        """Rows whose picture the source holds; a caption for an unknown picture is an error (or skipped)."""
        kept = []
        for r in rows:
            if r.image in source:
                kept.append(r)
            elif self.cfg.data.skip_bad_rows:
                self.counts["skipped_rows"] = self.counts.get("skipped_rows", 0) + 1
            else:
                raise DataError(f"caption for an unknown image {r.image} (not in {source.path})", path=path)
        return kept

    def _make_split(self, rows: list[CaptionedImage], source: ImageSource, path: str) -> CaptionSplit:
        names = [r.image for r in rows]
        stats = ReadStats()
        cache = cache_dir() / "captions" if self.opt.cache else None
        images, ok = load_images(source, names, self.opt.size, cache, skip_bad=self.cfg.data.skip_bad_rows,
                                 stats=stats)
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

    # ------------------------------------------------------------------ artifacts
    def save_artifacts(self, run_dir: str | Path) -> None:
        self.tok.save(Path(run_dir) / "tokenizer.json")
        atomic_write_text(Path(run_dir) / ARTIFACT, json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist(),
                                                                "counts": self.counts}))

    def load_artifacts(self, run_dir: str | Path) -> None:
        self.tok = TextTokenizer.load(Path(run_dir) / "tokenizer.json")
        path = Path(run_dir) / ARTIFACT
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            self.mean, self.std = np.asarray(blob["mean"], float), np.asarray(blob["std"], float)
            if self.mean.shape != (3,) or self.std.shape != (3,):
                raise ValueError("normalisation is not per RGB channel")
        except FileNotFoundError:
            raise CheckpointError("captions.json missing", path=path) from None
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"captions.json is corrupt ({e.__class__.__name__})", path=path) from None
        self.counts = blob.get("counts", {})

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        return self.model_cls(self.cfg.model_options, vocab_size=self.tok.vocab_size, padding_idx=self.tok.pad_id,
                              in_channels=3, image_size=self.opt.size)

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split].names) > 0

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        return shuffled_batches(len(self.splits["train"].names), self.cfg.train.batch_size,
                                self.cfg.seed * 1_000_003 + epoch)

    def start_epoch(self, epoch: int) -> None:
        pass

    def to_input(self, images: np.ndarray, augment: bool = False) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> float (B, 3, S, S): in [0, 1], flipped / shifted (augment), standardised."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
        if augment and self.opt.augment_flip:
            flip = torch.rand(len(x)) < 0.5
            x[flip] = x[flip].flip(-1)
        if augment and self.opt.augment_shift:
            x = ImageTask.shift(x, self.opt.augment_shift)
        mean = torch.as_tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    def make_batch(self, index: np.ndarray, split: str = "train") -> CaptionBatch:
        """The images `index` (in sorted order, for faster reads) and every caption of each."""
        sp = self.splits[split]
        index = np.sort(np.asarray(index, dtype=np.int64))
        captions = np.concatenate([np.arange(f, f + c) for f, c in zip(sp.first[index], sp.count[index],
                                                                        strict=True)])
        image_index = torch.from_numpy(np.repeat(np.arange(len(index)), sp.count[index]))
        tgt, lengths = pad_batch(sp.tokens, captions, self.tok.pad_id, self.opt.max_len - 1)  # (N, T - 1)
        N = len(captions)
        tgt_in = torch.cat([torch.full((N, 1), self.tok.bos_id), tgt], dim=1)
        tgt_out = torch.cat([tgt, torch.full((N, 1), self.tok.pad_id)], dim=1)
        tgt_out[torch.arange(N), lengths] = self.tok.eos_id
        return CaptionBatch(self.to_input(sp.images[index], augment=split == "train"), image_index.to(self.device),
                            tgt_in.to(self.device), tgt_out.to(self.device))

    def _loss_sums(self, model: nn.Module, batch: CaptionBatch) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        """(smoothed loss summed over target tokens, NLL summed, number of tokens, attention penalty)."""
        if self.opt.attention_reg > 0:
            logits, attn = model.forward_with_attention(batch.images, batch.tgt_in, batch.image_index)
        else:
            logits, attn = model(batch.images, batch.tgt_in, batch.image_index), None
        real = batch.tgt_out != self.tok.pad_id  # (N, T)
        logp = F.log_softmax(logits[real].float(), dim=-1)  # (n, V)
        nll = -logp.gather(1, batch.tgt_out[real][:, None]).squeeze(1)
        eps = self.opt.label_smoothing
        smoothed = (1 - eps) * nll - eps * logp.mean(dim=-1)
        penalty = logits.new_zeros((), dtype=torch.float)
        if attn is not None:  # Show, Attend and Tell: every grid cell gets attention ~1 over the caption
            per_cell = (attn.float() * real.unsqueeze(-1)).sum(dim=1)  # (N, G)
            penalty = ((1.0 - per_cell) ** 2).mean()
        return smoothed.sum(), nll.sum(), int(real.sum()), penalty

    def training_loss(self, model: nn.Module, batch: CaptionBatch) -> tuple[torch.Tensor, dict[str, float]]:
        loss_sum, nll_sum, n, penalty = self._loss_sums(model, batch)
        loss = loss_sum / n + self.opt.attention_reg * penalty
        return loss, {"nll": nll_sum.item(), "n": n, "examples": len(batch.images)}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums.get("nll", 0.0) / max(sums.get("n", 0.0), 1.0)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------------ decoding and evaluation
    def decode(self, model: nn.Module, images: np.ndarray, beam: int, need_weights: bool = False
               ) -> list[Hypothesis]:
        """Caption every picture of `images` (N, 3, S, S) uint8, in batches; beam 1 is greedy."""
        hyps: list[Hypothesis] = []
        for index in sequential_batches(len(images), max(1, self.cfg.train.eval_batch_size // beam)):
            state = model.encode(self.to_input(images[index]))
            max_lengths = torch.full((len(index),), self.opt.max_len, device=self.device)
            if beam == 1:
                hyps += greedy_search(model, state, self.tok.bos_id, self.tok.eos_id, max_lengths, need_weights)
            else:
                hyps += beam_search(model, state, self.tok.bos_id, self.tok.eos_id, max_lengths, beam,
                                    self.opt.length_penalty, need_weights)
        return hyps

    def detokenize(self, hyps: list[Hypothesis]) -> list[str]:
        return [self.tok.decode(h.tokens).strip() for h in hyps]

    def _teacher_forced_loss(self, model: nn.Module, split: str) -> float:
        nll, n = 0.0, 0
        for index in sequential_batches(len(self.splits[split].names), self.cfg.train.eval_batch_size):
            _, nll_sum, count, _ = self._loss_sums(model, self.make_batch(index, split))
            nll, n = nll + nll_sum.item(), n + count
        return nll / max(n, 1)

    def _scores(self, model: nn.Module, split: str, beam: int) -> tuple[dict[str, float], float]:
        """Scores of the captioned split and the images per second of captioning."""
        sp = self.splits[split]
        t0 = time.perf_counter()
        hyps = self.detokenize(self.decode(model, sp.images, beam))
        speed = len(hyps) / max(time.perf_counter() - t0, 1e-9)
        return caption_scores(hyps, sp.references), speed

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """loss, perplexity; BLEU-1..4 and CIDEr-D of greedy captions on `valid`, of beam search elsewhere
        (the greedy scores beside as greedy_*)."""
        loss = self._teacher_forced_loss(model, split)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        greedy, speed = self._scores(model, split, 1)
        beam = split != "valid" and self.opt.beam > 1
        if not beam:
            out.update(greedy, images_per_s=speed)
        else:
            scores, beam_speed = self._scores(model, split, self.opt.beam)
            out.update(scores, images_per_s=beam_speed, **{f"greedy_{k}": v for k, v in greedy.items()},
                       greedy_images_per_s=speed)
        self.log(f"{split}: BLEU-4 {out['bleu4']:.2f}  CIDEr-D {out['cider']:.3f}  "
                 f"({f'beam {self.opt.beam}' if beam else 'greedy'}, {len(self.splits[split].names)} images, "
                 f"{out['images_per_s']:.0f}/s)")
        return out

    def report(self, model: nn.Module, split: str) -> dict:
        """`seqlab evaluate`: the metrics of `evaluate` and the size of the split."""
        sp = self.splits[split]
        return {**self.evaluate(model, split), "examples": len(sp.names), "captions": len(sp.tokens)}

    def add_eval_file(self, path: str, split: str = "test") -> None:
        """Read another captions file (all of its rows) for evaluation, its pictures from task.images."""
        _, images = self._sources()
        source = self.source(images)
        self.splits[split] = self._make_split(self._known(self.read_file(path), source, path), source, path)

    def example_command(self, run_dir: str | Path) -> str:
        return f"seqlab caption {run_dir} IMAGE.jpg --plot-attention attention.png"

    def predictor(self, model: nn.Module) -> Captioner:
        return Captioner(self, model)


class Captioner:
    """What `seqlab.load(run_dir)` returns for a captioning run."""

    task_name = "caption"

    def __init__(self, task: CaptionTask, model: nn.Module):
        self.task, self.model = task, model.eval()

    def picture(self, image: str | os.PathLike | bytes | np.ndarray) -> np.ndarray:
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
        return load_image(image, size, name="uploaded image" if isinstance(image, bytes) else None)

    @torch.no_grad()
    def caption(self, images: list, beam: int | None = None, attention: bool = False) -> list[dict]:
        """For each image (a file or an (H, W, 3) uint8 array): `caption`, `log_prob`, and with `attention`
        the `words` and `attention` [[weight per grid cell, row by row] per word] with the `grid` (h, w)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            return []
        beam = self.task.opt.beam if beam is None else beam
        if beam < 1:
            raise ConfigError(f"beam must be at least 1, got {beam}")
        pixels = np.stack([self.picture(im).transpose(2, 0, 1) for im in images])  # (B, 3, S, S)
        hyps = self.task.decode(self.model, pixels, beam, need_weights=attention)
        out = []
        for h, text in zip(hyps, self.task.detokenize(hyps), strict=True):
            r = {"caption": text, "log_prob": h.log_prob}
            if attention:
                if h.attention is None:
                    raise ConfigError("this model does not attend over the image (model.attention=false)")
                cells = h.attention.size(-1)
                side = math.isqrt(cells)
                r.update(words=[self.task.tok.id_to_token(i) for i in h.tokens], attention=h.attention.tolist(),
                         grid=[side, cells // side])
            out.append(r)
        return out
