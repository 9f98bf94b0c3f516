"""Starting a model from another run, `init_from=RUN_DIR`: pretrain once (a language model on unlabeled text),
fine-tune any classifier or tagger from it, or train a language model on further text.

1. `Source.open(run_dir, cfg)` (the API reads the config) reads the rest: its vocabulary or tokenizer, its weights.
   Only runs of tasks with a token embedding (lm, classify, tag: `Task.vocabulary`) can be started from.
2. The new run's task adopts the source's words before it builds anything (`Task.adopt`): it cuts text as the
   source did, and its vocabulary is the source's followed by the words of its own training data the source
   lacks, which get fresh rows (counted). A language model keeps the source's tokenizer as it is.
3. `load_matching(model, task, source)` copies every parameter whose name (up to `ALIASES`: a classifier's
   `WordEmbedding` wraps its table, a decoder's layers are an encoder's) and shape match. Rows indexed by
   the vocabulary (the token embedding, a language model's output layer) are copied token by token. The rest
   (the new head, a backward direction the source never had, layers of another width) keeps its fresh
   initialisation. What was loaded and what was not is returned, logged and kept in the run's counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqlab.errors import CheckpointError, ConfigError

ALIASES = (("embedding.embedding.", "embedding."), ("decoder.layers.", "encoder.layers."))
VOCAB_ROWS = ("embedding.weight", "head.weight", "head.bias")  # canonical names of parameters with a row per token


def canonical(name: str) -> str:
    """A parameter's name as the runs of every task spell it (see ALIASES)."""
    for old, new in ALIASES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


@dataclass
class Source:
    """A run to start from: its directory, task (artifacts loaded), weights and the token of each embedding row."""

    run_dir: Path
    task: Any
    state: dict[str, Tensor]
    tokens: list[str]
    specials: int  # the first `specials` tokens are the source's specials (<unk>, <pad>...)

    @classmethod
    def open(cls, run_dir: str | Path, cfg: Any) -> Source:
        """Read a finished run whose resolved config is `cfg` (`seqlab.api.read_run_config`); CheckpointError when it
        is unfinished or corrupt, ConfigError when its task has no token embedding to start from."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from seqlab.tasks import TASKS
        from seqlab.tasks.base import Task

        run = Path(run_dir)
        task = TASKS[cfg.task](cfg, torch.device("cpu"), log=None)
        if type(task).vocabulary is Task.vocabulary:
            raise ConfigError(f"init_from: {run} is a {cfg.task} run, which has no token embedding to start from "
                              "(start from a run of task lm, classify or tag)")
        task.load_artifacts(run)
        weights = run / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError("init_from: the run has no finished weights (model.safetensors)", path=weights)
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"init_from: cannot read the run's weights ({e})", path=weights) from None
        tokens, specials = task.vocabulary()
        return cls(run, task, {canonical(k): v for k, v in state.items()}, tokens, specials)

    @property
    def words(self) -> list[str]:
        """The source's tokens but its specials."""
        return self.tokens[self.specials:]


def load_matching(model: nn.Module, tokens: list[str], source: Source) -> dict:
    """Copy into `model` (whose token embedding rows are `tokens`) the source's parameters of the same name and
    shape, vocabulary rows token by token. Returns {"run", "loaded", "not_loaded": {name: why}, "rows_from_run",
    "new_rows"}; ConfigError when nothing matches."""
    index = {t: i for i, t in enumerate(source.tokens)}
    pairs = [(i, index[t]) for i, t in enumerate(tokens) if t in index]
    dst_rows = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    src_rows = torch.tensor([j for _, j in pairs], dtype=torch.long)
    loaded, not_loaded = [], {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            key = canonical(name)
            theirs = source.state.get(key)
            if theirs is None:
                not_loaded[name] = "new"
                continue
            by_token = key in VOCAB_ROWS and param.size(0) >= len(tokens) and theirs.size(0) >= len(source.tokens)
            if (param.shape[1:] if by_token else param.shape) != (theirs.shape[1:] if by_token else theirs.shape):
                not_loaded[name] = f"shape {tuple(theirs.shape)} in the run, {tuple(param.shape)} here"
                continue
            if by_token:
                param[dst_rows] = theirs[src_rows].to(param.dtype)
            else:
                param.copy_(theirs)
            loaded.append(name)
        for m in model.modules():  # a padding row stays zero, whatever the source held there
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
    if not loaded:
        mine = ", ".join(f"{n} {tuple(p.shape)}" for n, p in list(model.named_parameters())[:3])
        theirs = ", ".join(f"{n} {tuple(p.shape)}" for n, p in list(source.state.items())[:3])
        raise ConfigError(f"init_from: no layer of {source.run_dir} fits this model (here: {mine}; the run's: "
                          f"{theirs}); give the model the run's sizes (model.dim, model.hidden, model.layers)")
    return {"run": str(source.run_dir), "loaded": loaded, "not_loaded": not_loaded,
            "rows_from_run": len(pairs), "new_rows": len(tokens) - len(pairs)}
