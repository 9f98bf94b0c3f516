"""MODEL_CARD.md for a run: what it is, what it was trained on, how well it does on each split, what it
cost, and what it is (not) for. Everything comes from the run directory (config.yaml, summary.json,
metrics.jsonl); nothing is re-measured."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

LIMITS = [
    "It knows only its training data: other domains, languages, spellings and lengths (texts are cut at "
    "`task.max_len` where set) are not covered, and its scores there are unknown.",
    "The metrics above are those of the test split, not a guarantee on other data; a confident prediction "
    "can still be wrong.",
    "Biases of the training data (who wrote it, about what) carry over to its predictions; do not use it "
    "alone for decisions about people.",
]


@dataclass
class RunFacts:
    """What a report knows about one run, read from its directory."""

    name: str
    run_dir: Path
    task: str
    model: str
    dataset: str | None
    config_yaml: str
    summary: dict
    records: list[dict]  # metrics.jsonl
    metric: str  # the metric plotted and compared (the one that picks the checkpoint, or the headline)
    headline: str  # the task's main test metric
    intended_use: str  # what the task's models are for
    status: str  # finished, or how to finish it
    split_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> scalar metrics


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def hardware() -> str:
    """This machine: "CPU model, N cores (OS)"."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores ({platform.system()})"


def model_card(run: RunFacts) -> str:
    """The Markdown text of MODEL_CARD.md."""
    s = run.summary
    counts = s.get("counts", {})
    examples = ", ".join(f"{k.removesuffix('_examples')} {v:,}" for k, v in counts.items()
                         if k.endswith("_examples"))
    sizes = ", ".join(f"{k} {v:,}" for k, v in counts.items()
                      if isinstance(v, int) and not k.endswith("_examples"))
    epochs = max((r.get("epoch", 0) for r in run.records if r.get("split") == "train_epoch"), default=0)
    test = run.split_metrics.get("test", {})
    lines = [
        f"# Model card: {run.name}",
        "",
        f"- **Task**: `{run.task}`",
        f"- **Status**: {run.status}",
        f"- **Model**: `{run.model}`" + (f", {s['parameters']:,} parameters" if "parameters" in s else ""),
        f"- **Data**: {run.dataset or 'unknown'} ({examples or 'counts not recorded'})"
        + (f"; {sizes}" if sizes else ""),
    ]
    if "init_from" in counts:  # pretrained: what it started from
        f = counts["init_from"]
        lines.append(f"- **Started from**: `{f['run']}` ({len(f['loaded'])} tensors loaded, {len(f['not_loaded'])} "
                     f"fresh; vocabulary rows {f['rows_from_run']:,} from it, {f['new_rows']:,} new)")
    if counts.get("excluded_texts"):
        lines.append(f"- **Leak guard**: texts of task.exclude left out of training: {counts['excluded_texts']}")
    lines += [
        f"- **Headline test metric**: {run.headline} "
        + (f"{test[run.headline]:.4f}" if run.headline in test else "(no test split)"),
        "",
        "## Metrics",
        "",
    ]
    names = sorted({k for m in run.split_metrics.values() for k in m})
    if names:
        lines += ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for split, m in run.split_metrics.items():
            lines.append(f"| {split} | " + " | ".join(_cell(m[k]) if k in m else "" for k in names) + " |")
        lines += ["", "train: the last epoch's running means; valid: the epoch that was kept; test: the kept "
                      "model on the test split.", ""]
    else:
        lines += ["No metrics recorded (metrics.jsonl is empty or missing).", ""]
    lines += [
        "## Training",
        "",
        f"- epochs run: {epochs}" + (f"; wall time {s['wall_seconds']:.1f} s" if "wall_seconds" in s else "")
        + (f"; {s['skipped_steps']} skipped steps" if s.get("skipped_steps") else ""),
        f"- torch {s.get('torch', '?')}, {s.get('threads', '?')} threads",
        f"- hardware: not recorded by the run; this card was written on {hardware()}",
        "",
        "## Intended use",
        "",
        run.intended_use,
        "",
        "## Limits",
        "",
        *[f"- {x}" for x in LIMITS],
        "",
        "## Config",
        "",
        "```yaml",
        run.config_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
