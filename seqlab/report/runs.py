"""`seqlab report RUN_DIR [RUN_DIR ...] [--out DIR]`: one Markdown page with PNGs on how runs went.

For each run, in `OUT/<run name>/`: `curves.png` (train vs valid loss and the run's metric per epoch, from
metrics.jsonl), for classify/tag/image `confusion.png` and a per-class table (the kept model evaluated on
the test split, else valid), for translate and caption a few decoded test examples with their attention
heatmaps (`attention-1.png`...), for runs on pictures (caption, image) `gallery.png`: a grid of the first
12 test pictures with the model's output and the references (and a link to the run's `captions.txt`, every
test caption), and `MODEL_CARD.md`. With several runs, `OUT/compare.png` overlays their
valid curves and the page opens with one comparison table. The page is `OUT/report.md`. matplotlib draws on
Agg canvases (no display, no global backend switched).
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from seqlab import api
from seqlab.errors import SeqlabError
from seqlab.report.attention import plot_result_attention
from seqlab.report.card import RunFacts, model_card


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl (lines that are not JSON objects are skipped)."""
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict):
            records.append(r)
    return records


def _scalars(record: dict) -> dict[str, float]:
    """The metrics of a metrics.jsonl record (without its bookkeeping: epoch, step, time, lr, speed)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("epoch", "step", "seconds", "lr", "examples_per_s")}


def run_facts(run_dir: str | os.PathLike, name: str) -> RunFacts:
    """Everything the report says about a run that needs no model: config, summary, metrics per split."""
    about = api.info(run_dir)
    cfg = api.read_run_config(run_dir)
    headline = about["headline"]
    metric = headline if about["metric"] == "loss" else about["metric"]
    records = read_metrics(Path(run_dir) / "metrics.jsonl")
    facts = RunFacts(name, Path(run_dir), cfg.task, cfg.model, about["dataset"], cfg.to_yaml(),
                     about["summary"], records, metric, headline, about["intended_use"], about["status"])
    train = [r for r in records if r.get("split") == "train_epoch"]
    if train:
        facts.split_metrics["train"] = _scalars(train[-1])
    kept_valid = about["summary"].get("results", {}).get("valid", {})
    kept, split = kept_valid.get("epoch"), "valid_average" if kept_valid.get("averaged_epochs") else "valid"
    valid = [r for r in records if r.get("split") == split and (kept is None or r.get("epoch") == kept)]
    if valid:
        facts.split_metrics["valid"] = _scalars(valid[-1])
    test = about["summary"].get("results", {}).get("test") or next(
        (r for r in reversed(records) if r.get("split") == "test"), None)
    if test:
        facts.split_metrics["test"] = _scalars(test)
    return facts


# ---------------------------------------------------------------------------------------------- plots
def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _series(records: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of `key` in the per-epoch records of `split` (the last record of each epoch)."""
    by_epoch = {r["epoch"]: r[key] for r in records
                if r.get("split") == split and isinstance(r.get(key), (int, float)) and "epoch" in r}
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


def plot_curves(facts: RunFacts, path: str | os.PathLike) -> Path:
    """Loss (train vs valid) and the run's metric per epoch, side by side."""
    fig = _figure(10, 3.8)
    for ax, key in zip(fig.subplots(1, 2), ("loss", facts.metric), strict=True):
        for split, label in (("train_epoch", "train"), ("valid", "valid")):
            x, y = _series(facts.records, split, key)
            if x:
                ax.plot(x, y, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"{facts.name}: {facts.task} / {facts.model}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return Path(path)


def plot_compare(runs: list[RunFacts], path: str | os.PathLike) -> Path:
    """The valid loss and valid metric per epoch of several runs, overlaid."""
    fig = _figure(10, 3.8)
    ax_loss, ax_metric = fig.subplots(1, 2)
    metrics = {r.metric for r in runs}
    for r in runs:
        for ax, key in ((ax_loss, "loss"), (ax_metric, r.metric)):
            x, y = _series(r.records, "valid", key)
            if x:
                same = len(metrics) == 1 or key == "loss"
                ax.plot(x, y, marker="o", label=r.name if same else f"{r.name} ({key})")
    metric_title = "valid " + (next(iter(metrics)) if len(metrics) == 1 else "metric")
    for ax, title in ((ax_loss, "valid loss"), (ax_metric, metric_title)):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return Path(path)


def _picture(item: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image item, (H, W, 3) or (C, H, W) with C 1 or 3, -> what imshow draws: (H, W, 3), or (H, W) with the
    grey colour map to use."""
    a = np.asarray(item)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return a, ("gray" if a.ndim == 2 else None)


def plot_gallery(pictures: list[np.ndarray], outputs: list[str], references: list[list[str] | str],
                 path: str | os.PathLike, title: str = "", columns: int = 4, width: int = 40) -> Path:
    """A grid of pictures, each with the model's output (bold) and the references under it (each wrapped to
    `width` characters): the captions of test images, the labels of test digits. `pictures` are (H, W, 3) or
    (C, H, W) uint8 arrays."""
    n = len(pictures)
    cols = max(1, min(columns, n))
    rows = max(1, -(-n // cols))
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    texts = []
    for out, rs in zip(outputs, refs, strict=True):
        bold = textwrap.wrap(" ".join(out.split()), width) or ["(empty)"]
        rest = [line for r in rs for line in textwrap.wrap(f"- {' '.join(r.split())}", width, subsequent_indent="  ")]
        texts.append((bold, rest))
    line_h = 0.15  # inches per line of text
    text_h = 0.15 + line_h * max((len(b) + len(r) for b, r in texts), default=1)
    pic_h, title_h = 2.5, 0.5 if title else 0.1
    height = rows * (pic_h + text_h) + title_h
    fig = _figure(2.9 * cols, height)
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[pic_h, text_h] * rows, left=0.02, right=0.98,
                            bottom=0.01, top=1.0 - title_h / height, hspace=0.04, wspace=0.08)
    for i, (item, (bold, rest)) in enumerate(zip(pictures, texts, strict=True)):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        image, cmap = _picture(item)
        ax.imshow(image, cmap=cmap, vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        tx = fig.add_subplot(grid[2 * r + 1, c])
        tx.axis("off")
        tx.text(0.0, 1.0, "\n".join(bold), transform=tx.transAxes, va="top", ha="left", fontsize=8,
                fontweight="bold")
        tx.text(0.0, 1.0 - line_h * (len(bold) + 0.3) / text_h, "\n".join(rest), transform=tx.transAxes, va="top",
                ha="left", fontsize=7, color="#444444")
    if title:
        fig.suptitle(title, fontsize=11, y=1.0 - 0.1 / height)
    fig.savefig(path, dpi=90)
    return Path(path)


def plot_confusion(labels: list[str], matrix: list[list[int]], path: str | os.PathLike,
                   title: str = "") -> Path:
    """Rows gold, columns predicted; colour is the share of the gold row, the number the count."""
    m = np.asarray(matrix, dtype=np.int64)
    shares = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(labels)
    size = min(14.0, max(4.0, 1.5 + 0.45 * k))
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return Path(path)


# ---------------------------------------------------------------------------------------------- sections
def _evaluation(facts: RunFacts) -> tuple[str | None, dict | None, str | None]:
    """(split, the full evaluation of the kept model on it, or why there is none)."""
    reason = "the run has no test or valid split"
    for split in ("test", "valid"):
        try:
            with torch.no_grad():
                return split, api.evaluate(facts.run_dir, split=split), None
        except SeqlabError as e:
            reason = str(e)
            if "split" not in reason:  # the data cannot be read: the other split will not help
                return None, None, reason
    return None, None, reason


def _per_class_table(per_class: dict) -> list[str]:
    lines = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, r in per_class.items():
        lines.append(f"| {label} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} "
                     f"| {r['support']} |")
    return lines


GALLERY = 12  # pictures in the grid of an image run's report


def _samples(facts: RunFacts, predictor, folder: Path, n: int, gallery: int = GALLERY) -> list[str]:
    """A few predictions on the test (else valid) split with their references, and the attention of each
    where the model has it; for image inputs first a grid of `gallery` pictures with their predictions and
    references (`gallery.png`), all decoded once."""
    images = predictor.inputs.kind == "image"
    got = predictor.samples(max(n, gallery) if images else n)
    if got is None:
        return ["No examples: the run has no test or valid split, or its data cannot be read here."]
    split, samples = got
    beam = f" (beam {predictor.task.opt.beam})" if "beam" in predictor.options else ""
    lines = []
    if images and samples:
        shown = samples[:gallery]
        plot_gallery([s["input"] for s in shown], [predictor.format_text(s["result"]) for s in shown],
                     [s["reference"] for s in shown], folder / "gallery.png",
                     title=f"{facts.name}: the first {len(shown)} {split} pictures; bold: the model{beam}, "
                           "then the references")
        lines += [f"The first {len(shown)} pictures of the {split} split, the model's output{beam} in bold and "
                  "the references under it:", "", f"![{split} pictures]({facts.name}/gallery.png)", ""]
        saved = predictor.outputs_file  # the run's own file of every test output, if any
        table = facts.run_dir / saved if saved else None
        if table is not None and table.is_file():
            lines += [f"Every test output with its references: [{saved}]"
                      f"({Path(os.path.relpath(table.resolve(), folder.parent.resolve())).as_posix()}).", ""]
    samples = samples[:n]
    lines += [f"Predictions on the {split} split{beam}:", ""]
    for i, sample in enumerate(samples, 1):
        item, result = sample["input"], sample["result"]
        shown = item if isinstance(item, str) else " ".join(item) if isinstance(item, list) else "(a picture)"
        reference = sample["reference"]
        reference = " / ".join(reference) if isinstance(reference, list) else reference
        lines += [f"{i}. input: {shown}", f"   - output: {predictor.format_text(result)}",
                  f"   - reference: {reference}"]
        if predictor.attends() and predictor.attention in ("alignment", "image"):
            picture = predictor.load_input(item) if predictor.inputs.kind == "image" else None
            path = plot_result_attention(predictor.attention, result, picture, folder / f"attention-{i}.png",
                                         title=predictor.format_text(result))
            lines.append(f"   - ![attention {i}]({facts.name}/{path.name})")
        lines.append("")
    return lines


def _run_section(facts: RunFacts, out: Path, evaluate: bool, examples: int) -> list[str]:
    folder = out / facts.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MODEL_CARD.md").write_text(model_card(facts), encoding="utf-8")
    lines = [f"## {facts.name}", "",
             f"`{facts.task}` / `{facts.model}` on {facts.dataset}: "
             + (f"{facts.summary['parameters']:,} parameters, {facts.summary['wall_seconds']:.1f} s. "
                if facts.summary else f"{facts.status}. ")
             + f"[Model card]({facts.name}/MODEL_CARD.md)", ""]
    if facts.records:
        plot_curves(facts, folder / "curves.png")
        lines += [f"![learning curves]({facts.name}/curves.png)", ""]
    else:
        lines += ["No learning curves: metrics.jsonl is empty or missing.", ""]
    names = sorted({k for m in facts.split_metrics.values() for k in m})
    if names:
        lines += ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(f"{m[k]:.4f}" if k in m else "" for k in names) + " |"
                  for s, m in facts.split_metrics.items()]
        lines.append("")
    predictor = api.load(facts.run_dir) if evaluate else None
    if predictor is not None and predictor.labels() is not None:  # a confusion matrix to show
        split, rep, why = _evaluation(facts)
        if rep is None:
            lines += [f"No confusion matrix: {why}", ""]
        else:
            cm = rep["confusion_matrix"]
            plot_confusion(cm["labels"], cm["matrix"], folder / "confusion.png", f"{facts.name}: {split}")
            lines += [f"Confusion matrix and per-class scores on the {split} split:", "",
                      f"![confusion matrix]({facts.name}/confusion.png)", "",
                      *_per_class_table(rep["per_class"]), ""]
    if predictor is not None and examples:
        lines += _samples(facts, predictor, folder, examples)
    return lines


def _comparison(runs: list[RunFacts]) -> list[str]:
    lines = ["## Comparison", "", "| run | task | model | data | parameters | wall s | valid | test |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        valid = r.split_metrics.get("valid", {})
        test = r.split_metrics.get("test", {})
        v = f"{r.metric} {valid[r.metric]:.4f}" if r.metric in valid else ""
        t = f"{r.headline} {test[r.headline]:.4f}" if r.headline in test else ""
        size, wall = r.summary.get("parameters", 0), r.summary.get("wall_seconds", 0.0)
        lines.append(f"| {r.name} | {r.task} | {r.model} | {r.dataset or ''} | {size:,} | {wall:.1f} "
                     f"| {v} | {t} |")
    return [*lines, "", "![valid curves of every run](compare.png)", ""]


def run_names(run_dirs: list[Path]) -> list[str]:
    """A short unique name per run: its folder's name (URL- and file-safe), `-2`, `-3`... on a clash."""
    names: list[str] = []
    for run in run_dirs:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", run.resolve().name) or "run"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def write_report(run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None,
                 evaluate: bool = True, examples: int = 3) -> Path:
    """Write the report of `run_dirs` into `out` (default: RUN_DIR/report for one run, ./report for several)
    and return the path of its page, `report.md`. `evaluate=False` skips what needs the data (confusion
    matrices, decoded examples)."""
    if not run_dirs:
        raise SeqlabError("give at least one run directory to report on")
    runs = [Path(r) for r in run_dirs]
    out = Path(out) if out is not None else (runs[0] / "report" if len(runs) == 1 else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    facts = [run_facts(r, name) for r, name in zip(runs, run_names(runs), strict=True)]
    lines = ["# seqlab report", "", "Runs: " + ", ".join(f"`{r.run_dir}`" for r in facts), ""]
    if len(facts) > 1:
        plot_compare(facts, out / "compare.png")
        lines += _comparison(facts)
    for f in facts:
        lines += _run_section(f, out, evaluate, examples)
    page = out / "report.md"
    page.write_text("\n".join(lines), encoding="utf-8")
    return page
