"""Run reports (seqlab.report.runs, seqlab.report.card): the files exist and are pictures, the model card
holds the run's test metric, several runs get a comparison, translate runs get decoded examples."""

from __future__ import annotations

import json
import shutil

import pytest

from seqlab.cli import main
from seqlab.report.runs import read_metrics, write_report
from tests.test_serve_runs import train_caption, train_classify, train_tag, train_translate

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    return {"bag": train_classify(root, "bag"), "cnn": train_classify(root, "cnn"), "tag": train_tag(root)}


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 2_000


def test_one_run_curves_confusion_table_and_a_model_card_with_its_test_metric(runs, tmp_path):
    page = write_report([runs["bag"]], tmp_path)
    assert page == tmp_path / "report.md"
    folder = tmp_path / runs["bag"].name
    assert is_png(folder / "curves.png") and is_png(folder / "confusion.png")
    text = page.read_text()
    assert "![learning curves](classify-bag/curves.png)" in text and "| label | precision |" in text
    test = json.loads((runs["bag"] / "metrics.jsonl").read_text().splitlines()[-1])
    assert test["split"] == "test"
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"**Headline test metric**: accuracy {test['accuracy']:.4f}" in card
    assert f"| test | {test['accuracy']:.4f} |" in card
    assert "## Intended use" in card and "## Limits" in card and "```yaml" in card and "wall time" in card
    assert not (tmp_path / "compare.png").exists()


def test_several_runs_get_a_comparison_table_and_overlaid_curves(runs, tmp_path):
    write_report(list(runs.values()), tmp_path)
    assert is_png(tmp_path / "compare.png")
    text = (tmp_path / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| classify-") or line.startswith("| tag-")]
    assert [r.split(" | ")[0] for r in rows[:3]] == ["| classify-bag", "| classify-cnn", "| tag-rnn"]
    for run in runs.values():
        folder = tmp_path / run.name
        assert (folder / "MODEL_CARD.md").is_file() and is_png(folder / "confusion.png")
    tag_card = (tmp_path / "tag-rnn" / "MODEL_CARD.md").read_text()
    assert "**Task**: `tag`" in tag_card and "(no test split)" in tag_card  # the tiny tag run has none
    assert "on the valid split" in text  # so its confusion matrix is on valid


def test_translate_runs_show_decoded_examples_with_attention(tmp_path):
    run = train_translate(tmp_path)
    write_report([run], tmp_path / "out", examples=2)
    text = (tmp_path / "out" / "report.md").read_text()
    assert text.count("   - reference: ") == 2 and "![attention 1](translate/attention-1.png)" in text
    assert is_png(tmp_path / "out" / "translate" / "attention-2.png")
    assert not (tmp_path / "out" / "translate" / "confusion.png").exists()


def test_caption_runs_show_captioned_pictures_with_attention(tmp_path):
    run = train_caption(tmp_path)
    write_report([run], tmp_path / "out", examples=2)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "1. input: (a picture)" in text and "   - reference: a red square on grey ." in text
    assert is_png(tmp_path / "out" / "caption" / "attention-2.png")


def test_without_evaluation_or_metrics_the_report_says_what_is_missing(runs, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(runs["cnn"], bare)
    (bare / "metrics.jsonl").write_text('{"split": "train_epoch", "epoch": 1, "loss": 0.5}\nnot json\n')
    assert read_metrics(bare / "metrics.jsonl") == [{"split": "train_epoch", "epoch": 1, "loss": 0.5}]
    (bare / "metrics.jsonl").unlink()
    assert main(["report", str(bare), "--no-eval"]) == 0
    text = (bare / "report" / "report.md").read_text()
    assert "No learning curves" in text and not (bare / "report" / "bare" / "confusion.png").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
