"""Task `translate`: a sentence in one language -> its translation (the lecture's "many to many",
sequence-to-sequence with attention).

Data: parallel text. `data.train=PATH` (and valid/test) names either a `source<TAB>target` file or the
common prefix of two line-aligned files `PATH.<src>` and `PATH.<tgt>` (each optionally `.gz`), the
languages being `task.src` / `task.tgt`; without files, the named dataset (`dataset=multi30k`, German
-> English by default). Tokens: byte-level BPE or words (for pre-tokenised text), one tokenizer trained
on both sides (`task.joint_vocab`) or one per side, saved with the run.

Training: teacher forcing (the decoder reads `<bos> y_1 .. y_{T-1}` and predicts `y_1 .. y_T <eos>`),
label-smoothed cross-entropy averaged over the target tokens of the batch, padding masked everywhere.
Evaluation: per-token loss and perplexity by teacher forcing; BLEU and chrF (sacrebleu) of the decoded
and detokenised output against the original target sentences: greedy decoding on `valid` (its BLEU
picks the best checkpoint), beam search on other splits (the greedy scores reported beside).
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sacrebleu
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data import ReadStats, get_dataset
from seqlab.data.batching import Packed, bucketed_batches, pad_batch, sequential_batches, shuffled_batches
from seqlab.data.parallel import Pair, read_parallel, read_parallel_tsv
from seqlab.data.subword import TextTokenizer
from seqlab.errors import ConfigError, DataError
from seqlab.models import MODELS
from seqlab.options import Dropout, NonNegativeFloat, Positive, PositiveFloat
from seqlab.tasks.common import hold_out
from seqlab.tasks.decoding import Hypothesis, beam_search, greedy_search

DEFAULT_DATASET = "multi30k"
SPLITS = ("train", "valid", "test")


@dataclass
class TranslateConfig:
    src: str = "de"  # source language: the file suffix of `PATH.<src>[.gz]`, the side of a named dataset
    tgt: str = "en"
    tokenizer: Literal["bpe", "word"] = "bpe"  # bpe: byte-level, for raw text; word: for pre-tokenised text
    vocab_size: Positive | None = 10000  # per tokenizer, specials included (word: None keeps every word)
    joint_vocab: bool = True  # one tokenizer for both sides (needed by model.share_embeddings)
    min_freq: Positive = 1  # word: rarer words are <unk>; bpe: rarer merges are not learnt
    lowercase: bool = False
    max_src_len: Positive = 128  # tokens; longer training pairs are dropped (counted), longer inputs truncated
    max_tgt_len: Positive = 128  # tokens, eos included
    label_smoothing: Dropout = 0.1  # the share of each target's probability spread over the vocabulary
    beam: Positive = 5  # beam size for test and `seqlab translate` (1: greedy)
    length_penalty: NonNegativeFloat = 1.0  # beam ranks by log-prob / length ** length_penalty
    max_len_ratio: PositiveFloat = 1.5  # a translation may have max_len_ratio * source tokens + max_len_offset
    max_len_offset: Positive = 10

    def validate(self) -> None:
        if self.src == self.tgt:
            raise ConfigError(f"task.src and task.tgt must differ, both are {self.src!r}")


@dataclass
class ParallelSplit:
    sources: list[str]  # the sentences as read
    targets: list[str]  # the references BLEU compares with
    src: Packed  # source token ids
    tgt: Packed  # target token ids, without bos/eos
    path: str


@dataclass
class TranslateBatch:
    src: torch.Tensor  # (B, S)
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, T) <bos> y_1 .. y_{T-1}, padded
    tgt_out: torch.Tensor  # (B, T) y_1 .. y_{T-1} <eos>, padded


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """sacrebleu's corpus BLEU (13a tokenisation) and chrF of detokenised sentences, 0..100."""
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}


class TranslateTask:
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    Config = TranslateConfig
    default_model = "transformer"
    default_dataset = DEFAULT_DATASET
    default_metric = "bleu"
    headline = "perplexity"  # the per-epoch lines show train and valid perplexity; valid BLEU is logged

    def __init__(self, cfg: Any, device: torch.device, log=print):
        self.cfg = cfg
        self.opt: TranslateConfig = cfg.task_options
        self.device = device
        self.log = log or (lambda _m: None)
        self.model_cls = MODELS["translate"][cfg.model]
        self.src_tok: TextTokenizer | None = None
        self.tgt_tok: TextTokenizer | None = None
        self.splits: dict[str, ParallelSplit] = {}
        self.counts: dict[str, Any] = {}

    # ------------------------------------------------------------------ files
    def _files(self, path: str) -> tuple[str, ...]:
        """(tsv,) for a `source<TAB>target` file, else (source file, target file) of the prefix `path`."""
        fmt = self.cfg.data.format
        if fmt not in ("auto", "parallel", "tsv"):
            raise ConfigError(f"data.format must be auto, parallel or tsv for translation, got {fmt!r}")
        if fmt == "tsv" or (fmt == "auto" and Path(path).is_file()):
            return (path,)
        pair = []
        for lang in (self.opt.src, self.opt.tgt):
            found = [f"{path}.{lang}{gz}" for gz in ("", ".gz") if Path(f"{path}.{lang}{gz}").is_file()]
            if not found:
                raise DataError(f"neither a source<TAB>target file nor the prefix of {path}.{lang}[.gz] "
                                f"(task.src={self.opt.src}, task.tgt={self.opt.tgt})", path=path)
            pair.append(found[0])
        return tuple(pair)

    def _sources(self) -> dict[str, tuple | None]:
        """The files of each split: (tsv,) or (source, target)."""
        d = self.cfg.data
        if d.train or d.valid or d.test:
            return {s: self._files(getattr(d, s)) if getattr(d, s) else None for s in SPLITS}
        spec = get_dataset(self.cfg.dataset or DEFAULT_DATASET)
        if spec.format != "parallel":
            raise ConfigError(f"dataset {spec.name!r} is not parallel text")
        langs = spec.reader_options["languages"]
        for lang in (self.opt.src, self.opt.tgt):
            if lang not in langs:
                raise ConfigError(f"dataset {spec.name!r} has the languages {', '.join(langs)}, not {lang!r} "
                                  "(task.src / task.tgt)")
        side = (langs.index(self.opt.src), langs.index(self.opt.tgt))
        return {s: None if getattr(spec, s) is None else tuple(str(getattr(spec, s)[i]) for i in side)
                for s in SPLITS}

    def read_files(self, files: tuple) -> list[Pair]:
        stats = ReadStats()
        d = self.cfg.data
        reader = read_parallel_tsv if len(files) == 1 else read_parallel
        pairs = list(reader(*files, encoding=d.encoding, skip_bad_rows=d.skip_bad_rows, stats=stats))
        if stats.skipped:
            first = "; ".join(stats.first_errors[:2])
            self.log(f"{files[0]}: skipped {stats.skipped} bad pairs (first: {first})")
        return pairs

    # ------------------------------------------------------------------ tokenizers
    def _train_tokenizers(self, pairs: list[Pair]) -> None:
        o = self.opt

        def train(texts: list[str]) -> TextTokenizer:
            return TextTokenizer.train(o.tokenizer, texts, vocab_size=o.vocab_size, min_freq=o.min_freq,
                                       lowercase=o.lowercase)

        src, tgt = [p.src for p in pairs], [p.tgt for p in pairs]
        if o.joint_vocab:
            self.src_tok = self.tgt_tok = train(src + tgt)
        else:
            self.src_tok, self.tgt_tok = train(src), train(tgt)

    def _artifact_files(self, run_dir: str | Path) -> tuple[Path, Path]:
        run = Path(run_dir)
        if self.opt.joint_vocab:
            return run / "tokenizer.json", run / "tokenizer.json"
        return run / "tokenizer.src.json", run / "tokenizer.tgt.json"

    def save_artifacts(self, run_dir: str | Path) -> None:
        src_file, tgt_file = self._artifact_files(run_dir)
        self.src_tok.save(src_file)
        if tgt_file != src_file:
            self.tgt_tok.save(tgt_file)

    def load_artifacts(self, run_dir: str | Path) -> None:
        src_file, tgt_file = self._artifact_files(run_dir)
        self.src_tok = TextTokenizer.load(src_file)
        self.tgt_tok = self.src_tok if tgt_file == src_file else TextTokenizer.load(tgt_file)

    # ------------------------------------------------------------------ preparation
    def prepare(self, artifacts: str | Path | None = None) -> None:
        """Read and encode every split. With `artifacts` (a run directory) the tokenizers are loaded from
        it (resume, evaluation); otherwise they are trained on the training split."""
        sources = self._sources()
        if not sources["train"] and artifacts is None:
            raise ConfigError("no training data: set data.train=PATH or dataset=NAME")
        raw = {s: (self.read_files(files), files[0]) for s, files in sources.items() if files}
        if "train" in raw and "valid" not in raw and self.cfg.data.valid_fraction > 0:
            pairs, path = raw["train"]
            keep, held = hold_out(len(pairs), self.cfg.data.valid_fraction, self.cfg.seed)
            raw["train"], raw["valid"] = ([pairs[i] for i in keep], path), ([pairs[i] for i in held], path)
        if artifacts is None:
            self._train_tokenizers(raw["train"][0])
        else:
            self.load_artifacts(artifacts)
        for split, (pairs, path) in raw.items():
            self.splits[split] = self._make_split(pairs, path)
        if "train" in self.splits:
            self.splits["train"] = self._drop_long(self.splits["train"])
        for k, v in self.splits.items():
            self.counts.update({f"{k}_examples": len(v.sources), f"{k}_src_tokens": int(v.src.lengths.sum()),
                                f"{k}_tgt_tokens": int(v.tgt.lengths.sum())})
        self.counts.update(vocab_size=self.src_tok.vocab_size, tgt_vocab_size=self.tgt_tok.vocab_size)

    def _make_split(self, pairs: list[Pair], path: str) -> ParallelSplit:
        sources, targets = [p.src for p in pairs], [p.tgt for p in pairs]
        return ParallelSplit(sources, targets, Packed.from_lists(self.src_tok.encode_batch(sources)),
                             Packed.from_lists(self.tgt_tok.encode_batch(targets)), path)

    def _drop_long(self, sp: ParallelSplit) -> ParallelSplit:
        """Training pairs longer than task.max_src_len / max_tgt_len (eos included) are left out."""
        o = self.opt
        keep = np.flatnonzero((sp.src.lengths <= o.max_src_len) & (sp.tgt.lengths < o.max_tgt_len))
        dropped = len(sp.sources) - len(keep)
        self.counts["dropped_long_pairs"] = dropped
        if dropped == 0:
            return sp
        self.log(f"left out {dropped} training pairs longer than task.max_src_len / task.max_tgt_len")
        return ParallelSplit([sp.sources[i] for i in keep], [sp.targets[i] for i in keep],
                             sp.src.subset(keep), sp.tgt.subset(keep), sp.path)

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        if self.src_tok.pad_id != self.tgt_tok.pad_id:
            raise ConfigError("the source and target tokenizers disagree on the padding id")
        return self.model_cls(self.cfg.model_options, src_vocab_size=self.src_tok.vocab_size,
                              tgt_vocab_size=self.tgt_tok.vocab_size, padding_idx=self.src_tok.pad_id,
                              shared_vocab=self.opt.joint_vocab)

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split].sources) > 0

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        train = self.splits["train"]
        bs, seed = self.cfg.train.batch_size, self.cfg.seed * 1_000_003 + epoch
        if self.cfg.train.bucket:
            return bucketed_batches(np.maximum(train.src.lengths, train.tgt.lengths), bs, seed)
        return shuffled_batches(len(train.sources), bs, seed)

    def start_epoch(self, epoch: int) -> None:
        pass

    def _sources_batch(self, src: Packed, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, lengths = pad_batch(src, index, self.src_tok.pad_id, self.opt.max_src_len)
        return tokens.to(self.device), lengths.to(self.device)

    def make_batch(self, index: np.ndarray, split: str = "train") -> TranslateBatch:
        sp = self.splits[split]
        src, src_lengths = self._sources_batch(sp.src, index)
        tgt, lengths = pad_batch(sp.tgt, index, self.tgt_tok.pad_id, self.opt.max_tgt_len - 1)  # (B, T - 1)
        B = len(index)
        tgt_in = torch.cat([torch.full((B, 1), self.tgt_tok.bos_id), tgt], dim=1)
        tgt_out = torch.cat([tgt, torch.full((B, 1), self.tgt_tok.pad_id)], dim=1)
        tgt_out[torch.arange(B), lengths] = self.tgt_tok.eos_id
        return TranslateBatch(src, src_lengths, tgt_in.to(self.device), tgt_out.to(self.device))

    def _loss_sums(self, model: nn.Module, batch: TranslateBatch) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(label-smoothed loss summed over target tokens, NLL summed, number of target tokens)."""
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
        real = batch.tgt_out != self.tgt_tok.pad_id
        logp = F.log_softmax(logits[real].float(), dim=-1)  # (N, V) the real target positions only
        nll = -logp.gather(1, batch.tgt_out[real][:, None]).squeeze(1)  # (N,)
        eps = self.opt.label_smoothing
        smoothed = (1 - eps) * nll - eps * logp.mean(dim=-1)  # eps spread uniformly over the vocabulary
        return smoothed.sum(), nll.sum(), int(real.sum())

    def training_loss(self, model: nn.Module, batch: TranslateBatch) -> tuple[torch.Tensor, dict[str, float]]:
        loss_sum, nll_sum, n = self._loss_sums(model, batch)
        return loss_sum / n, {"nll": nll_sum.item(), "n": n, "examples": len(batch.src)}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums.get("nll", 0.0) / max(sums.get("n", 0.0), 1.0)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------------ decoding and evaluation
    def max_lengths(self, src_lengths: torch.Tensor) -> torch.Tensor:
        """How many tokens (eos included) the translation of each source may have."""
        longest = (src_lengths.float() * self.opt.max_len_ratio).long() + self.opt.max_len_offset
        return longest.clamp(max=self.opt.max_tgt_len)

    def decode(self, model: nn.Module, src: Packed, beam: int, need_weights: bool = False
               ) -> list[Hypothesis]:
        """Translate every sequence of `src` (token ids), in batches of similar length; beam 1 is greedy."""
        hyps: list[Hypothesis | None] = [None] * len(src)
        order = np.argsort(src.lengths, kind="stable")
        eos, bos = self.tgt_tok.eos_id, self.tgt_tok.bos_id
        for index in sequential_batches(len(order), max(1, self.cfg.train.eval_batch_size // beam)):
            index = order[index]
            tokens, lengths = self._sources_batch(src, index)
            state = model.encode(tokens, lengths)
            max_lengths = self.max_lengths(lengths)
            if beam == 1:
                out = greedy_search(model, state, bos, eos, max_lengths, need_weights)
            else:
                out = beam_search(model, state, bos, eos, max_lengths, beam, self.opt.length_penalty,
                                  need_weights)
            for i, n, h in zip(index, lengths.tolist(), out, strict=True):
                if h.attention is not None:
                    h.attention = h.attention[:, :n].cpu()
                hyps[i] = h
        return hyps

    def detokenize(self, hyps: list[Hypothesis]) -> list[str]:
        return [self.tgt_tok.decode(h.tokens).strip() for h in hyps]

    def _teacher_forced_loss(self, model: nn.Module, split: str) -> float:
        sp = self.splits[split]
        nll, n = 0.0, 0
        for index in sequential_batches(len(sp.sources), self.cfg.train.eval_batch_size):
            _, nll_sum, count = self._loss_sums(model, self.make_batch(index, split))
            nll, n = nll + nll_sum.item(), n + count
        return nll / max(n, 1)

    def _bleu(self, model: nn.Module, split: str, beam: int) -> tuple[dict[str, float], float]:
        """Scores of the decoded split and the sentences per second of decoding."""
        sp = self.splits[split]
        t0 = time.perf_counter()
        hyps = self.detokenize(self.decode(model, sp.src, beam))
        speed = len(hyps) / max(time.perf_counter() - t0, 1e-9)
        return corpus_scores(hyps, sp.targets), speed

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """loss and perplexity (teacher forcing); BLEU and chrF of greedy decoding on `valid`, of beam
        search elsewhere (with the greedy scores as greedy_bleu / greedy_chrf)."""
        loss = self._teacher_forced_loss(model, split)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        greedy, speed = self._bleu(model, split, 1)
        if split == "valid" or self.opt.beam == 1:
            out.update(greedy, sentences_per_s=speed)
        else:
            beam, beam_speed = self._bleu(model, split, self.opt.beam)
            out.update(beam, sentences_per_s=beam_speed, greedy_bleu=greedy["bleu"],
                       greedy_chrf=greedy["chrf"], greedy_sentences_per_s=speed)
        self.log(f"{split}: BLEU {out['bleu']:.2f}  chrF {out['chrf']:.2f}  "
                 f"({'greedy' if split == 'valid' or self.opt.beam == 1 else f'beam {self.opt.beam}'}, "
                 f"{len(self.splits[split].sources)} sentences, {out['sentences_per_s']:.0f}/s)")
        return out

    def report(self, model: nn.Module, split: str) -> dict:
        """`seqlab evaluate`: the metrics of `evaluate` and the size of the split."""
        sp = self.splits[split]
        return {**self.evaluate(model, split), "examples": len(sp.sources),
                "src_tokens": int(sp.src.lengths.sum()), "tgt_tokens": int(sp.tgt.lengths.sum())}

    def add_eval_file(self, path: str, split: str = "test") -> None:
        """Read another parallel file (or prefix) for evaluation with the run's tokenizers."""
        self.splits[split] = self._make_split(self.read_files(self._files(path)), path)

    def example_command(self, run_dir: str | Path) -> str:
        """The `seqlab translate` line printed after training, on a real source sentence."""
        split = next((self.splits[s] for s in ("test", "valid") if self.has_split(s)), self.splits["train"])
        return f"seqlab translate {shlex.quote(str(run_dir))} {shlex.quote(split.sources[0])}"

    def predictor(self, model: nn.Module) -> Translator:
        return Translator(self, model)


class Translator:
    """What `seqlab.load(run_dir)` returns for a translation run."""

    task_name = "translate"

    def __init__(self, task: TranslateTask, model: nn.Module):
        self.task, self.model = task, model.eval()

    @torch.no_grad()
    def translate(self, texts: list[str] | str, beam: int | None = None, attention: bool = False
                  ) -> list[dict]:
        """For each text: `translation`, `log_prob` (of its tokens and eos), and with `attention` the
        `src_tokens`, `tgt_tokens` (as text pieces) and `attention` [[weight per source token] per target
        token]. `beam`: the beam size (default task.beam; 1 is greedy)."""
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts, 1):
            if not t.strip():
                raise DataError(f"text {i} is empty")
        if not texts:
            return []
        task = self.task
        beam = task.opt.beam if beam is None else beam
        if beam < 1:
            raise ConfigError(f"beam must be at least 1, got {beam}")
        src_ids = task.src_tok.encode_batch([t.strip() for t in texts])
        hyps = task.decode(self.model, Packed.from_lists(src_ids), beam, need_weights=attention)
        out = []
        for ids, h, text in zip(src_ids, hyps, task.detokenize(hyps), strict=True):
            r = {"translation": text, "log_prob": h.log_prob}
            if attention:
                r["src_tokens"] = [task.src_tok.decode([i], skip_specials=False) for i in ids]
                r["tgt_tokens"] = [task.tgt_tok.decode([i], skip_specials=False) for i in h.tokens]
                r["attention"] = h.attention.tolist()
            out.append(r)
        return out
