"""`metrics.jsonl`, the run's record of every log step and evaluation (and, optionally, TensorBoard's events)."""

from __future__ import annotations

import json
from pathlib import Path

from seqlab.errors import ConfigError


class MetricsLog:
    """`metrics.jsonl`: one JSON object per log step or evaluation, appended and flushed. With `tensorboard` (a
    folder: `train.tensorboard=true`), each record's numbers also go to TensorBoard event files there, as
    `SPLIT/NAME` scalars at the record's step (torch's SummaryWriter; `tensorboard --logdir runs` shows them)."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard: Path | None = None):
        self.path, self.enabled = path, enabled
        self.lines = 0
        self.tensorboard, self.purge_step, self.writer = tensorboard if enabled else None, None, None
        if path.exists():
            with open(path, encoding="utf-8") as f:
                self.lines = sum(1 for _ in f)

    def truncate(self, lines: int, step: int | None = None) -> None:
        """Drop lines written after the checkpoint a run resumes from (and TensorBoard's events from `step`)."""
        self.purge_step = step
        if not self.enabled or not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            kept = [line for _, line in zip(range(lines), f, strict=False)]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(kept)
        self.lines = len(kept)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.lines += 1
        if self.tensorboard is not None:
            if self.writer is None:
                self.writer = summary_writer()(str(self.tensorboard), purge_step=self.purge_step, flush_secs=10)
            for name, value in record.items():
                if name not in ("split", "epoch", "step") and isinstance(value, (int, float)) and \
                        not isinstance(value, bool):
                    self.writer.add_scalar(f"{record['split']}/{name}", value, global_step=record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def summary_writer() -> type:
    """torch's SummaryWriter, or a ConfigError when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package (pip install 'seqlab[tensorboard]')"
                          ) from None
    return SummaryWriter
