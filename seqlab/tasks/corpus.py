"""What the tasks that learn from raw text share (`lm`, `vectors`): a split is the texts of one file or several
(a named dataset's tuple of files), in any format classify reads: a plain text file's lines, JSONL's
`data.text_key`, csv, tsv, fastText (their labels ignored). The leak guard: training texts equal (lowercased,
whitespace collapsed) to a text of `task.exclude` (files, or `NAME:SPLIT` of a named dataset: the test split a
model pretrained here is later evaluated on) are dropped and counted. The task's options have `exclude`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqlab.data import ReadStats, get_dataset, read
from seqlab.data.datasets import DatasetSpec
from seqlab.data.lm import read_corpus_lines
from seqlab.data.readers import detect_format, leak_key
from seqlab.errors import ConfigError
from seqlab.tasks.base import Task

CORPUS_FORMATS = ("jsonl", "csv", "tsv", "fasttext", "text")  # text (a .txt without fastText labels) last: it takes all


class CorpusTask(Task):
    """A task trained on the texts of its splits (see the module docstring)."""

    formats = CORPUS_FORMATS

    def __init__(self, cfg: Any, device, log=print):
        super().__init__(cfg, device, log)
        self.reader_options: dict[str, Any] = {}  # a named dataset's
        self.excluded: set[str] | None = None  # the leak keys of task.exclude's texts (read once)

    def dataset_sources(self, spec: DatasetSpec) -> dict[str, Any]:
        self.reader_options = dict(spec.reader_options)
        return super().dataset_sources(spec)

    def documents(self, source: Any, reader_options: dict | None = None, detect: bool = False) -> Iterator[str]:
        """The texts of `source` (a file, or a tuple of files): a plain text file's lines; else the text of each
        row (JSONL: `data.text_key`; csv, tsv, fastText: as classify reads them, labels ignored). `detect`: the
        format by the file, whatever data.format says (task.exclude's files)."""
        d = self.cfg.data
        options = self.reader_options if reader_options is None else reader_options
        for path in source if isinstance(source, tuple) else (source,):
            fmt = detect_format(path, self.formats, d.encoding) if detect else self.format_of(path)
            if fmt == "text":
                yield from read_corpus_lines(path, keep_newlines=False, encoding=d.encoding)
                continue
            if fmt == "jsonl":
                opts = {"text_key": options.get("text_key", d.text_key), "label_key": None}
            elif options:  # a named dataset's
                opts = dict(options)
            elif fmt in ("csv", "tsv"):
                opts = {"header": d.header, "label_column": d.label_column, "text_columns": d.text_columns}
            else:
                opts = {}
            stats = ReadStats()
            for ex in read(path, format=fmt, encoding=d.encoding, skip_bad_rows=d.skip_bad_rows, stats=stats, **opts):
                yield ex.text
            self.note_skipped(path, stats)

    def exclusions(self) -> set[str]:
        """The leak keys of the texts of `task.exclude`: paths, or NAME:SPLIT of a named dataset (read once)."""
        if self.excluded is None:
            self.excluded = set()
            for entry in self.opt.exclude:
                name, _, split = entry.rpartition(":")
                if Path(entry).exists() or not name:
                    if not Path(entry).exists():
                        raise ConfigError(f"task.exclude: {entry} is neither a file nor NAME:SPLIT of a named "
                                          "dataset (such as imdb:test)")
                    source, options = entry, {}
                else:
                    spec = get_dataset(name)
                    if split not in ("train", "valid", "test") or getattr(spec, split) is None:
                        raise ConfigError(f"task.exclude: dataset {name!r} has no split {split!r}")
                    source, options = getattr(spec, split), spec.reader_options
                self.excluded.update(leak_key(t) for t in self.documents(source, options, detect=True))
        return self.excluded

    def corpus(self, source: Any, split: str, end: str = "") -> Iterator[str]:
        """The texts a split is made of, each followed by `end`; the training split's without those of
        `task.exclude` (counted in counts["excluded_texts"])."""
        excluded = self.exclusions() if split == "train" else set()
        dropped = 0
        for text in self.documents(source):
            if excluded and leak_key(text) in excluded:
                dropped += 1
                continue
            yield text + end
        if excluded:
            self.counts.setdefault("excluded_texts", {})[split] = dropped
