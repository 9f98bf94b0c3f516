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

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import sacrebleu
import torch
from torch import nn

from seqlab.data import ReadStats
from seqlab.data.batching import Packed, pad_batch
from seqlab.data.datasets import DatasetSpec
from seqlab.data.parallel import Pair, read_parallel, read_parallel_tsv
from seqlab.data.subword import TextTokenizer
from seqlab.errors import ConfigError, DataError
from seqlab.options import Dropout, NonNegativeFloat, NonNegativeFloats, Positive, PositiveFloat, PositiveInts
from seqlab.tasks.base import SPLITS, Inputs, Option, Predictor
from seqlab.tasks.sequence import BEAM, SequenceTask, teacher_forcing


@dataclass
class TranslateConfig:
    src: str = "de"  # source language: the file suffix of `PATH.<src>[.gz]`, the side of a named dataset
    tgt: str = "en"  # target language (as task.src)
    tokenizer: Literal["bpe", "word"] = "bpe"  # bpe: byte-level, for raw text; word: for pre-tokenised text
    vocab_size: Positive | None = 10000  # per tokenizer, specials included (word: None keeps every word)
    joint_vocab: bool = True  # one tokenizer for both sides (needed by model.share_embeddings)
    min_freq: Positive = 1  # word: rarer words are <unk>; bpe: rarer merges are not learnt
    lowercase: bool = False  # lowercase every sentence first
    max_src_len: Positive = 128  # tokens; longer training pairs are dropped (counted), longer inputs truncated
    max_tgt_len: Positive = 128  # tokens, eos included
    label_smoothing: Dropout = 0.1  # the share of each target's probability spread over the vocabulary
    beam: Positive = 5  # beam size for test and `seqlab translate` (1: greedy)
    length_penalty: NonNegativeFloat = 1.0  # beam ranks by log-prob / length ** length_penalty
    beam_choices: PositiveInts | None = None  # after training: the beam sizes tried on valid (the best becomes `beam`)
    length_penalty_choices: NonNegativeFloats | None = None  # ... and the length penalties (see tasks.sequence)
    max_len_ratio: PositiveFloat = 1.5  # a translation may have max_len_ratio * source tokens + max_len_offset
    max_len_offset: Positive = 10  # see max_len_ratio

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

    def __len__(self) -> int:
        return len(self.sources)


@dataclass
class TranslateBatch:
    src: torch.Tensor  # (B, S)
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, T) <bos> y_1 .. y_{T-1}, padded
    tgt_out: torch.Tensor  # (B, T) y_1 .. y_{T-1} <eos>, padded

    def __len__(self) -> int:
        return len(self.src)


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """sacrebleu's corpus BLEU (13a tokenisation) and chrF of detokenised sentences, 0..100."""
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}


class TranslateTask(SequenceTask):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    name = "translate"
    intended_use = "Translating short sentences of the training corpus's domain between its two languages."
    Config = TranslateConfig
    default_model = "transformer"
    default_dataset = "multi30k"
    formats = ("parallel", "tsv")
    artifact = None  # the tokenizer files

    def __init__(self, cfg: Any, device: torch.device, log=print):
        super().__init__(cfg, device, log)
        self.src_tok: TextTokenizer | None = None
        self.tgt_tok: TextTokenizer | None = None

    @property
    def target(self) -> TextTokenizer:
        return self.tgt_tok

    # ------------------------------------------------------------------ files
    def files(self, path: str) -> tuple[str, ...]:
        """(tsv,) for a `source<TAB>target` file, else (source file, target file) of the prefix `path`."""
        if self.format_of(path) == "tsv":
            return (path,)
        pair = []
        for lang in (self.opt.src, self.opt.tgt):
            found = [f"{path}.{lang}{gz}" for gz in ("", ".gz") if Path(f"{path}.{lang}{gz}").is_file()]
            if not found:
                raise DataError(f"neither a source<TAB>target file nor the prefix of {path}.{lang}[.gz] "
                                f"(task.src={self.opt.src}, task.tgt={self.opt.tgt})", path=path)
            pair.append(found[0])
        return tuple(pair)

    def dataset_sources(self, spec: DatasetSpec) -> dict[str, tuple[str, str]]:
        """A named dataset's line-aligned (source, target) files of each split."""
        super().dataset_sources(spec)
        langs = spec.reader_options["languages"]
        for lang in (self.opt.src, self.opt.tgt):
            if lang not in langs:
                raise ConfigError(f"dataset {spec.name!r} has the languages {', '.join(langs)}, not {lang!r} "
                                  "(task.src / task.tgt)")
        side = (langs.index(self.opt.src), langs.index(self.opt.tgt))
        return {s: tuple(str(getattr(spec, s)[i]) for i in side) for s in SPLITS if getattr(spec, s) is not None}

    def read(self, source: str | tuple[str, ...]) -> list[Pair]:
        files = source if isinstance(source, tuple) else self.files(source)
        stats = ReadStats()
        d = self.cfg.data
        reader = read_parallel_tsv if len(files) == 1 else read_parallel
        pairs = list(reader(*files, encoding=d.encoding, skip_bad_rows=d.skip_bad_rows, stats=stats))
        self.note_skipped(files[0], stats, "pairs")
        return pairs

    # ------------------------------------------------------------------ tokenizers
    def build(self, pairs: list[Pair]) -> None:
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
        super().save_artifacts(run_dir)

    def load_artifacts(self, run_dir: str | Path) -> None:
        src_file, tgt_file = self._artifact_files(run_dir)
        self.src_tok = TextTokenizer.load(src_file)
        self.tgt_tok = self.src_tok if tgt_file == src_file else TextTokenizer.load(tgt_file)
        super().load_artifacts(run_dir)

    # ------------------------------------------------------------------ preparation
    def make_split(self, pairs: list[Pair], path: str, split: str) -> ParallelSplit:
        """The encoded pairs; training pairs longer than task.max_src_len / max_tgt_len (eos included) are
        left out (counted)."""
        o = self.opt
        sources, targets = [p.src for p in pairs], [p.tgt for p in pairs]
        sp = ParallelSplit(sources, targets, Packed.from_lists(self.src_tok.encode_batch(sources)),
                           Packed.from_lists(self.tgt_tok.encode_batch(targets)), path)
        if split != "train":
            return sp
        keep = np.flatnonzero((sp.src.lengths <= o.max_src_len) & (sp.tgt.lengths < o.max_tgt_len))
        dropped = len(sp) - len(keep)
        self.counts["dropped_long_pairs"] = dropped
        if dropped == 0:
            return sp
        self.log(f"left out {dropped} training pairs longer than task.max_src_len / task.max_tgt_len")
        return ParallelSplit([sp.sources[i] for i in keep], [sp.targets[i] for i in keep],
                             sp.src.subset(keep), sp.tgt.subset(keep), sp.path)

    def count(self) -> None:
        for k, v in self.splits.items():
            self.counts.update({f"{k}_src_tokens": int(v.src.lengths.sum()),
                                f"{k}_tgt_tokens": int(v.tgt.lengths.sum())})
        self.counts.update(vocab_size=self.src_tok.vocab_size, tgt_vocab_size=self.tgt_tok.vocab_size)

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        if self.src_tok.pad_id != self.tgt_tok.pad_id:
            raise ConfigError("the source and target tokenizers disagree on the padding id")
        return self.model_cls(self.cfg.model_options, src_vocab_size=self.src_tok.vocab_size,
                              tgt_vocab_size=self.tgt_tok.vocab_size, padding_idx=self.src_tok.pad_id,
                              shared_vocab=self.opt.joint_vocab)

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def lengths(self, split: ParallelSplit) -> np.ndarray:
        return np.maximum(split.src.lengths, split.tgt.lengths)

    def source_batch(self, src: Packed, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, lengths = pad_batch(src, index, self.src_tok.pad_id, self.opt.max_src_len)
        return tokens.to(self.device), lengths.to(self.device)

    def make_batch(self, index: np.ndarray, split: str = "train") -> TranslateBatch:
        sp = self.splits[split]
        src, src_lengths = self.source_batch(sp.src, index)
        tgt_in, tgt_out = teacher_forcing(sp.tgt, index, self.tgt_tok, self.opt.max_tgt_len)
        return TranslateBatch(src, src_lengths, tgt_in.to(self.device), tgt_out.to(self.device))

    def forward(self, model: nn.Module, batch: TranslateBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
        return logits, batch.tgt_out, logits.new_zeros((), dtype=torch.float)

    # ------------------------------------------------------------------ decoding and evaluation
    def max_lengths(self, src_lengths: torch.Tensor) -> torch.Tensor:
        """How many tokens (eos included) the translation of each source may have."""
        longest = (src_lengths.float() * self.opt.max_len_ratio).long() + self.opt.max_len_offset
        return longest.clamp(max=self.opt.max_tgt_len)

    def encode_inputs(self, model: nn.Module, split: ParallelSplit, index: np.ndarray):
        tokens, lengths = self.source_batch(split.src, index)
        return model.encode(tokens, lengths), self.max_lengths(lengths), lengths.tolist()

    def decode_order(self, split: ParallelSplit) -> np.ndarray:
        """Sources of similar length decoded together."""
        return np.argsort(split.src.lengths, kind="stable")

    def translate(self, model: nn.Module, src: Packed, beam: int, need_weights: bool = False):
        """Hypotheses for every source of `src` (token ids)."""
        return self.decode(model, ParallelSplit([""] * len(src), [""] * len(src), src, src, ""), beam, need_weights)

    def scores(self, outputs: list[str], split: str) -> dict[str, float]:
        return corpus_scores(outputs, self.splits[split].targets)

    def describe_scores(self, scores: dict[str, float]) -> str:
        return f"BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}"

    def report(self, model: nn.Module, split: str) -> dict:
        """`seqlab evaluate`: the metrics of `evaluate` and the size of the split."""
        sp = self.splits[split]
        return {**self.evaluate(model, split), "examples": len(sp), "src_tokens": int(sp.src.lengths.sum()),
                "tgt_tokens": int(sp.tgt.lengths.sum())}


class Translator(Predictor):
    """What `seqlab.load(run_dir)` returns for a translation run."""

    inputs = Inputs("text", "texts", "sentences in the source language")
    options: ClassVar[dict[str, Option]] = {
        "beam": BEAM,
        "attention": Option(bool, False, "also return the tokens and the attention of each output token over "
                                         "the source tokens"),
    }
    verb = "translate"
    attention = "alignment"

    def run(self, texts: list[str], beam: int | None, attention: bool) -> list[dict]:
        """For each text: `translation`, `log_prob` (of its tokens and eos), and with `attention` the
        `src_tokens`, `tgt_tokens` (as text pieces) and `attention` [[weight per source token] per target
        token]."""
        task = self.task
        beam = task.opt.beam if beam is None else beam
        src_ids = task.src_tok.encode_batch([t.strip() for t in texts])
        hyps = task.translate(self.model, Packed.from_lists(src_ids), beam, need_weights=attention)
        out = []
        for ids, h, text in zip(src_ids, hyps, task.detokenize(hyps), strict=True):
            r = {"translation": text, "log_prob": h.log_prob}
            if attention:
                r["src_tokens"] = [task.src_tok.decode([i], skip_specials=False) for i in ids]
                r["tgt_tokens"] = [task.tgt_tok.decode([i], skip_specials=False) for i in h.tokens]
                r["attention"] = h.attention.tolist()
            out.append(r)
        return out

    def format_text(self, result: dict) -> str:
        return result["translation"]

    def split_items(self, split: str) -> list[str]:
        return list(self.task.splits[split].sources)

    def split_references(self, split: str) -> list[str]:
        return list(self.task.splits[split].targets)

    def synthetic_inputs(self, n: int) -> list[str]:
        tok = self.task.src_tok
        pieces = [tok.decode([i]).strip() for i in range(len(tok.specials), tok.vocab_size)]
        words = [w for w in pieces if w.isalpha()] or ["x"]
        rng = random.Random(0)
        return [" ".join(rng.choices(words, k=rng.randint(2, 8))) for _ in range(n)]


TranslateTask.Predictor = Translator
