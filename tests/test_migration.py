"""Run directories written by an older seqlab (config format_version 1, tests/fixtures/v1) load, predict,
evaluate and resume with today's: one fixture per model of every task, compared with what those runs
predicted and scored when they were written (expected.json)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

import seqlab
from seqlab.config import FORMAT_VERSION, make_config, migrate
from seqlab.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
RUNS = sorted(EXPECTED)


@pytest.fixture(scope="module")
def v1(tmp_path_factory) -> Path:
    """A copy of the fixtures (resuming writes into a run directory); tests chdir into it, since the
    configs name their data relative to it."""
    root = tmp_path_factory.mktemp("v1") / "v1"
    shutil.copytree(FIXTURES, root)
    return root


def close(a, b, tol: float = 1e-5) -> bool:
    """Equal structures, floats within `tol` (a run predicts what it did, up to float summation order)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=tol,
                                                                                              abs_tol=tol)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    return a == b


def predictions(predictor, expected: dict) -> dict:
    """The fixture's inputs through today's predictor, in the shape expected.json keeps."""
    if "texts" in expected and "results" in expected:
        return {"texts": expected["texts"], "results": predictor.predict(expected["texts"], top_k=2)}
    if "sentences" in expected:
        return {"sentences": expected["sentences"], "results": predictor.predict(expected["sentences"], top_k=2)}
    if "prompt" in expected:
        p = expected["prompt"]
        return {"prompt": p, "greedy": predictor.predict([p], max_new_tokens=20, temperature=0)[0]["text"],
                "sampled": predictor.predict([p], max_new_tokens=20, seed=3)[0]["text"]}
    if "results" in expected:  # images
        return {"images": expected["images"], "results": predictor.predict(expected["images"], top_k=3)}
    items = expected.get("texts") or expected["images"]
    key = "texts" if "texts" in expected else "images"
    return {key: items, "beam": predictor.predict(items), "greedy": predictor.predict(items, beam=1)}


@pytest.mark.parametrize("name", RUNS)
def test_a_v1_run_predicts_and_scores_as_it_did(v1: Path, name: str, monkeypatch) -> None:
    monkeypatch.chdir(v1)
    raw = yaml.safe_load((v1 / name / "config.yaml").read_text(encoding="utf-8"))
    assert raw["format_version"] == 1
    expected = EXPECTED[name]
    got = predictions(seqlab.load(name), expected["predict"])
    for key, want in expected["predict"].items():
        have = got[key]
        if isinstance(want, list) and want and isinstance(want[0], dict):
            have = [{k: h[k] for k in w} for h, w in zip(have, want, strict=True)]  # keys added since are fine
        assert close(have, want), (name, key, have, want)
    split = "valid" if name.startswith(("tag", "lm")) else "test"
    scores = seqlab.evaluate(name, split=split)
    for key, want in expected["evaluate"].items():
        if key.endswith("_per_s"):
            continue  # a speed
        assert close(scores[key], want, 1e-4), (name, key, scores[key], want)


@pytest.mark.parametrize("name", ["classify-rnn", "lm-transformer", "translate-rnn", "caption-transformer"])
def test_a_v1_run_resumes_for_more_epochs(v1: Path, name: str, monkeypatch) -> None:
    monkeypatch.chdir(v1)
    run = seqlab.train(resume=name, overrides=["train.epochs=3"], quiet=True, log=None)
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["format_version"] == FORMAT_VERSION  # rewritten in today's format
    assert cfg["train"]["epochs"] == 3
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train_epoch"]
    assert epochs == [1, 2, 3]


def test_migrate_renames_the_options_of_format_1() -> None:
    old = {"format_version": 1, "task": {"name": "translate"},
           "model": {"name": "transformer", "d_model": 32, "n_heads": 2, "enc_layers": 1, "dec_layers": 2,
                     "d_ff": 64}, "data": {"workers": 0}}
    new = migrate(old)
    assert new["format_version"] == FORMAT_VERSION
    assert new["model"] == {"name": "transformer", "dim": 32, "heads": 2, "layers": 1, "decoder_layers": 2,
                            "ff_dim": 64}
    assert new["data"] == {}
    assert old["model"]["d_model"] == 32  # the tree given is left as it was


def test_an_old_option_name_in_todays_format_says_what_it_is_called_now() -> None:
    with pytest.raises(ConfigError, match="model.embed_dim: it is called model.dim"):
        make_config(None, ["model=cnn", "model.embed_dim=8"])


def test_an_unknown_format_version_is_refused() -> None:
    with pytest.raises(ConfigError, match="format_version 7"):
        make_config({"format_version": 7})
