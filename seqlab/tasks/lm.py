"""Task `lm`: text -> the next token, and generation (the lecture's "one to many", truncated BPTT).

Data: each split is one stream of token ids (`seqlab.data.lm`) made of texts: a plain text file's lines, or
the texts of any format classify reads, from one file or several, with the leak guard `task.exclude` (see
`seqlab.tasks.corpus`). Character level keeps the newline as a token (one after each text), word level (PTB;
`basic_english` for raw English text, cut as classify cuts it) ends every text with `<eos>`, BPE (byte level)
keeps the newline in its bytes.
A dataset without a valid split holds out the last `data.valid_fraction` of the training stream (nanoGPT's
90/10 split of Tiny Shakespeare). The tokenizer is trained on the training file and saved with the run.

Training, one epoch:
- `task.steps_per_epoch=0` (truncated BPTT): the training stream cut into `train.batch_size` parallel
  streams, walked left to right in windows of `task.bptt` tokens, each window once per epoch. The model's
  state (an RNN's hidden state) is carried from one window to the next and detached, so gradients stop at
  the window edge; it restarts from zeros at each epoch, and is saved in checkpoints for exact resume.
- `task.steps_per_epoch=N` (nanoGPT): N batches of random windows of `task.bptt` tokens, each drawn from
  a generator seeded by (seed, epoch, step); every window starts from a fresh state.
The Transformer returns no state in training, so it sees each window on its own, with the causal mask;
its context length (positions) is `task.bptt`.

Metrics on the whole valid/test stream (every token but the first is predicted exactly once): `loss`
(nats per token) and `bits_per_char` (char level) or `perplexity` (word, BPE). The stream is cut into
`train.eval_batch_size` rows read in windows of `task.bptt`, the state carried across windows as in
training.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data.cache import cached_token_ids, cached_tokenizer
from seqlab.data.lm import (
    batchify,
    bptt_windows,
    encode_texts,
    random_windows,
    split_corpus,
)
from seqlab.data.subword import WORD_KINDS, TextTokenizer
from seqlab.errors import CheckpointError, ConfigError, DataError
from seqlab.options import NonNegative, Positive, Range
from seqlab.tasks.base import Inputs, Option, Predictor
from seqlab.tasks.corpus import CorpusTask
from seqlab.tasks.generate import generate_ids
from seqlab.tasks.sequence import perplexity
from seqlab.train import distributed as D

ARTIFACT = "tokenizer.json"
IGNORE = -100  # target id of padding in evaluation rows (ignored by the loss)


@dataclass
class LMConfig:
    tokenizer: Literal["char", "word", "basic_english", "bpe"] = "char"  # word: PTB's; basic_english: as classify
    vocab_size: Positive | None = None  # bpe: the size to learn (required); char/word: a cap (None keeps all)
    min_freq: Positive = 1  # rarer training tokens are <unk>
    lowercase: bool = False  # lowercase every text first
    bptt: Positive = 64  # window length T: truncated-BPTT length, and the Transformer's context
    steps_per_epoch: NonNegative = 0  # 0: one pass of bptt windows over the parallel streams; N: N random windows
    token_cache: str | None = None  # directory of tokenised corpora reused across runs (None: tokenise each run)
    exclude: list[str] = field(default_factory=list)  # files or NAME:SPLIT whose texts are never trained on

    def validate(self) -> None:
        if self.tokenizer == "bpe" and self.vocab_size is None:
            raise ConfigError("task.tokenizer=bpe needs task.vocab_size (e.g. task.vocab_size=2000)")


@dataclass
class Batch:
    x: Tensor  # (B, T) input tokens
    y: Tensor  # (B, T) next tokens
    carry: bool  # continues the previous window of the same streams (truncated BPTT)


State = Tensor | tuple[Tensor, ...] | None


def detach_state(state: Any) -> State:
    """The state without its graph (and in fp32, whatever autocast made of it): gradients stop here."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach().float()
    return tuple(s.detach().float() for s in state)


def eval_rows(ids: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """Cut a stream ids: (L,) into x, y: (R, N), R = min(rows, L - 1), so that row r reads ids[r*N : (r+1)*N]
    and predicts the token after each: every token but the first is a target exactly once. The end of the
    last row is padding: input 0, target IGNORE."""
    targets = len(ids) - 1
    R = max(1, min(rows, targets))
    N = math.ceil(targets / R)
    pad = R * N - targets
    x = F.pad(ids[:-1], (0, pad), value=0).view(R, N)
    y = F.pad(ids[1:], (0, pad), value=IGNORE).view(R, N)
    return x, y


class LMTask(CorpusTask):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    name = "lm"
    intended_use = ("Scoring and generating text in the style of its training text; a teaching model, not a source of "
                    "facts.")
    Config = LMConfig
    default_model = "rnn"
    default_dataset = "tiny_shakespeare"
    artifact = None  # the tokenizer file
    default_metric = "loss"
    unit = "tokens"

    def __init__(self, cfg: Any, device: torch.device, log=print):
        super().__init__(cfg, device, log)
        self.tokenizer: TextTokenizer | None = None
        self.splits: dict[str, Tensor] = {}  # split -> token ids (L,)
        self.streams: Tensor | None = None  # the training stream as (train.batch_size, N) parallel streams
        self.state: State = None  # carried from window to window (truncated BPTT)
        self.state_epoch: int | None = None  # the epoch `state` belongs to

    # ------------------------------------------------------------------ data
    @property
    def headline(self) -> str:  # beside the loss in the per-epoch lines
        return "bits_per_char" if self.opt.tokenizer == "char" else "perplexity"

    @property
    def word_level(self) -> bool:
        return self.opt.tokenizer in WORD_KINDS

    def encode_source(self, source: Any, split: str) -> Tensor:
        """A split's texts as one stream of token ids, (L,) int64 (from `task.token_cache` when set)."""
        if self.opt.token_cache:
            cached = cached_token_ids(self.plain_file(source), self.tokenizer, self.opt.token_cache,
                                      add_eos_per_line=self.word_level, encoding=self.cfg.data.encoding)
            return torch.from_numpy(cached.astype(np.int64))
        where = source[0] if isinstance(source, tuple) else source
        texts = self.corpus(source, split, end="" if self.word_level else "\n")
        return torch.from_numpy(encode_texts(texts, self.tokenizer, self.word_level, where))

    def plain_file(self, source: Any) -> str:
        """`task.token_cache` caches one plain text file per split, read whole: the source, or a ConfigError."""
        if isinstance(source, tuple) or self.format_of(source) != "text" or self.opt.exclude:
            raise ConfigError("task.token_cache caches plain text files read whole; this run reads "
                              f"{source} (or excludes texts): unset task.token_cache")
        return str(source)

    def prepare(self, artifacts: str | Path | None = None) -> None:
        """Encode every split. With `artifacts` (a run directory) the tokenizer is loaded from it (resume,
        evaluate); otherwise it is trained on the training texts. Each split is one stream; without a valid
        split, the last `data.valid_fraction` of the training stream is held out (not a random share)."""
        sources = {"train": None, **self.sources()}
        if not sources["train"]:
            raise ConfigError("no training data: set data.train=PATH or dataset=NAME")
        if artifacts is None and self.init_source is not None:
            self.tokenizer = self.init_source.task.tokenizer
        elif artifacts is None and self.opt.token_cache:
            self.tokenizer = cached_tokenizer(self.plain_file(sources["train"]), self.opt.tokenizer,
                                              self.opt.token_cache, self.opt.vocab_size, self.opt.min_freq,
                                              self.opt.lowercase, self.cfg.data.encoding)
        elif artifacts is None:
            texts = self.corpus(sources["train"], "train", end="" if self.word_level else "\n")
            self.tokenizer = TextTokenizer.train(self.opt.tokenizer, texts, self.opt.vocab_size, self.opt.min_freq,
                                                 lowercase=self.opt.lowercase)
        else:
            self.load_artifacts(artifacts)
        self.splits = {split: self.encode_source(source, split) for split, source in sources.items() if source}
        if "valid" not in self.splits and self.cfg.data.valid_fraction > 0:
            self.splits["train"], self.splits["valid"] = (
                torch.from_numpy(part) for part in split_corpus(self.splits["train"].numpy(),
                                                                self.cfg.data.valid_fraction))
        # train.batch_size streams per process: under DDP each rank owns its own (see `shard_plan`)
        self.streams = batchify(self.splits["train"], self.cfg.train.batch_size * D.world_size())
        self.counts.update({f"{k}_examples": len(v) for k, v in self.splits.items()})  # tokens
        unk = self.tokenizer.unk_id
        self.counts.update(vocab_size=self.tokenizer.vocab_size, tokenizer=self.tokenizer.kind,
                           unk_tokens={k: int((v == unk).sum()) for k, v in self.splits.items()})

    def vocabulary(self) -> tuple[list[str], int]:
        tk = self.tokenizer
        return [tk.id_to_token(i) for i in range(tk.vocab_size)], len(tk.specials)

    def text_tokenizer(self) -> str | None:
        tk = self.tokenizer
        if tk.kind == "word":
            return None if tk.lowercase else "whitespace"
        return tk.kind if tk.kind in ("basic_english", "char") else None

    def adopt(self, source) -> None:
        """A language model goes on with the source language model's tokenizer (`prepare`)."""
        if source.task.name != "lm":
            raise ConfigError(f"init_from: a language model starts from a language model run (its tokenizer); "
                              f"{source.run_dir} is a {source.task.name} run")
        self.init_source = source
        self.opt.tokenizer = source.task.tokenizer.kind

    # ------------------------------------------------------------------ artifacts
    def save_artifacts(self, run_dir: str | Path) -> None:
        self.tokenizer.save(Path(run_dir) / ARTIFACT)

    def load_artifacts(self, run_dir: str | Path) -> None:
        path = Path(run_dir) / ARTIFACT
        tokenizer = TextTokenizer.load(path)
        if tokenizer.kind != self.opt.tokenizer:
            raise CheckpointError(f"the run's tokenizer is {tokenizer.kind!r} but its config says "
                                  f"task.tokenizer={self.opt.tokenizer}", path=path)
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        return self.model_cls(self.cfg.model_options, vocab_size=self.tokenizer.vocab_size,
                              max_len=self.opt.bptt)

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split]) > 1

    def epoch_plan(self, epoch: int) -> list:
        """Sequential: the (x, y) windows of the parallel streams, in order. Random: one seed per step."""
        if self.opt.steps_per_epoch:
            base = (self.cfg.seed * 1_000_003 + epoch) * 1_000_003
            return [base + i for i in range(self.opt.steps_per_epoch)]
        return list(bptt_windows(self.streams, self.opt.bptt))

    def shard_plan(self, plan: list, rank: int, world: int) -> list[tuple[Any, float]]:
        """Sequential: every rank takes every window, cut to its own train.batch_size streams, so that it carries
        its own hidden state from one window to the next, and one step of `world` ranks is one step of one
        process over all the streams (same gradient, as the ranks' shares are equal). Random windows: every
        world-th step, as for every task."""
        if self.opt.steps_per_epoch:
            return super().shard_plan(plan, rank, world)
        b = self.cfg.train.batch_size
        return [((x[rank * b:(rank + 1) * b], y[rank * b:(rank + 1) * b]), 1.0) for x, y in plan]

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """A new epoch starts from the zero state; a run resumed mid-epoch keeps the state it saved."""
        if self.state_epoch != epoch:
            self.state, self.state_epoch = None, epoch

    def make_batch(self, item: int | tuple[Tensor, Tensor]) -> Batch:
        if isinstance(item, int):
            g = torch.Generator().manual_seed(item)
            x, y = next(random_windows(self.splits["train"], self.opt.bptt, self.cfg.train.batch_size, g))
            return Batch(x.to(self.device), y.to(self.device), carry=False)
        x, y = item
        return Batch(x.to(self.device), y.to(self.device), carry=True)

    def training_loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        logits, state = model(batch.x, self.state if batch.carry else None)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.y.flatten())
        value = loss.item()
        if batch.carry:
            self.state = detach_state(state) if math.isfinite(value) else None
        n = batch.y.numel()
        return loss, {"loss": value * n, "n": n}

    def metrics(self, loss: float) -> dict[str, float]:
        """loss in nats per token, and the headline: bits per character or perplexity."""
        if self.headline == "bits_per_char":
            return {"loss": loss, "bits_per_char": loss / math.log(2)}
        return perplexity(loss)

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return self.metrics(sums.get("loss", 0.0) / max(sums.get("n", 0.0), 1.0))

    def state_dict(self) -> dict:
        state = self.state
        hidden = [] if state is None else [state] if isinstance(state, Tensor) else list(state)
        return {"epoch": self.state_epoch, "hidden": [h.cpu() for h in hidden]}

    def load_state_dict(self, state: dict) -> None:
        hidden = [h.to(self.device) for h in state["hidden"]]
        self.state = None if not hidden else hidden[0] if len(hidden) == 1 else tuple(hidden)
        self.state_epoch = state["epoch"]

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _loss_sum(self, model: nn.Module, split: str) -> tuple[float, int]:
        x, y = eval_rows(self.splits[split], self.cfg.train.eval_batch_size)
        total, state = 0.0, None
        for start in range(0, x.size(1), self.opt.bptt):
            window = slice(start, start + self.opt.bptt)
            logits, state = model(x[:, window].to(self.device), state)
            total += F.cross_entropy(logits.float().flatten(0, 1), y[:, window].flatten().to(self.device),
                                     ignore_index=IGNORE, reduction="sum").item()
        return total, len(self.splits[split]) - 1

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        total, n = self._loss_sum(model, split)
        return self.metrics(total / n)

    def report(self, model: nn.Module, split: str) -> dict:
        """`seqlab evaluate`: the metrics and the number of tokens predicted."""
        total, n = self._loss_sum(model, split)
        return {**self.metrics(total / n), "tokens": n}

    def add_eval_file(self, path: str, split: str = "test") -> None:
        """Another file to evaluate (any format the task reads), encoded with the run's tokenizer."""
        self.splits[split] = self.encode_source(path, split)

    # ------------------------------------------------------------------ generation
    def render(self, ids: list[int]) -> str:
        """Text of token ids; at word level every `<eos>` ends a line."""
        tk = self.tokenizer
        if not self.word_level:
            return tk.decode(ids)
        lines, line = [], []
        for i in ids:
            if i == tk.eos_id:
                lines.append(line)
                line = []
            else:
                line.append(i)
        return "\n".join(tk.decode(seg) for seg in [*lines, line])

    def prompts(self, split: str, n: int) -> tuple[list[str], list[str]]:
        """Up to n prompts made of the first words of lines of `split`'s text (3 words), and what followed
        each in the text (the rest of its line)."""
        text = self.render(self.splits[split][:4000].tolist())
        prompts, rest = [], []
        for line in text.split("\n"):
            words = line.split()
            if len(words) > 3 and len(prompts) < n:
                prompts.append(" ".join(words[:3]))
                rest.append(" ".join(words[3:]))
        return prompts, rest


SAMPLING = {
    "max_new_tokens": Option(int, 200, "tokens to generate", Range(min=0)),
    "temperature": Option(float, 1.0, "0: always the most likely token; higher: more varied", Range(min=0.0)),
    "top_k": Option(int, None, "draw only from the K most likely tokens", Range(min=1), optional=True),
    "top_p": Option(float, None, "draw only from the smallest set of tokens with probability >= P",
                    Range(0.0, 1.0, min_open=True), optional=True),
    "seed": Option(int, None, "the same seed gives the same text (none: a fresh one)", optional=True),
    "use_cache": Option(bool, True, "feed only the new token and the model's state (KV cache, hidden state); "
                                    "false recomputes the whole context at every step"),
}


class LMPredictor(Predictor):
    """What `seqlab.load(run_dir)` returns for a language model: `predict(prompts)` and `stream(prompt)`."""

    inputs = Inputs("prompt", "prompt", "the text to continue")
    options: ClassVar[dict[str, Option]] = SAMPLING
    verb = "generate"

    def __init__(self, task: LMTask, model: nn.Module, run_dir=None):
        super().__init__(task, model, run_dir)
        tk = task.tokenizer
        # never drawn: padding and bos; below word level also eos and unk, which the training text never holds
        self.banned = [tk.pad_id, tk.bos_id] + ([] if task.word_level else [tk.eos_id, tk.unk_id])

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of `prompt`. Empty -> DataError. Characters a char model never saw -> DataError; words
        a word model never saw read as `<unk>` (with a warning)."""
        tk = self.task.tokenizer
        if not prompt:
            raise DataError("empty prompt: give the text to continue (--prompt TEXT)")
        ids = tk.encode(prompt)
        if not ids:
            raise DataError(f"the prompt {prompt!r} has no tokens")
        if tk.unk_id in ids and tk.kind == "char":
            unknown = sorted({c for c in prompt if tk.encode(c) == [tk.unk_id]})
            raise DataError(f"the prompt has characters this model never saw: {''.join(unknown)!r} "
                            f"(it knows {tk.vocab_size - len(tk.specials)} characters)")
        if tk.unk_id in ids:
            words = [w for w in prompt.split() if tk.encode(w) == [tk.unk_id]]
            warnings.warn(f"prompt words not in the vocabulary read as <unk>: {', '.join(words)}",
                          stacklevel=2)
        return ids

    def stream(self, prompt: str, **options) -> Iterator[str]:
        """Yield the text that continues `prompt`, piece by piece as tokens are drawn (options as `predict`;
        see `seqlab.tasks.generate.generate_ids`)."""
        o = self.check_options(options)
        prompt_ids = self.encode_prompt(prompt)
        ids = list(prompt_ids)
        emitted = self.task.render(ids)
        for token in generate_ids(self.model, prompt_ids, o["max_new_tokens"], o["temperature"], o["top_k"],
                                  o["top_p"], o["seed"], self.banned, o["use_cache"]):
            ids.append(token)
            text = self.task.render(ids)
            if text.endswith("\ufffd") or not text.startswith(emitted):
                continue  # an incomplete UTF-8 character (byte-level BPE): wait for its next byte
            if len(text) > len(emitted):
                yield text[len(emitted):]
                emitted = text
        text = self.task.render(ids)
        if text.startswith(emitted) and len(text) > len(emitted):
            yield text[len(emitted):]  # a last incomplete character, as the replacement character

    def run(self, prompts: list[str], **options) -> list[dict]:
        """For each prompt: `text`, its continuation."""
        return [{"text": "".join(self.stream(p, **options))} for p in prompts]

    def format_text(self, result: dict) -> str:
        return result["text"]

    def split_items(self, split: str) -> list[str]:
        return self.task.prompts(split, 10)[0]

    def split_references(self, split: str) -> list[str]:
        return self.task.prompts(split, 10)[1]

    def synthetic_inputs(self, n: int) -> list[str]:
        tk = self.task.tokenizer
        return [tk.decode([i]) for i in range(len(tk.specials), min(tk.vocab_size, len(tk.specials) + n))]


LMTask.Predictor = LMPredictor
