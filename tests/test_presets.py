"""The presets shipped in the package: each resolves, is found by name and by path, and states only what
differs from the dataclasses' defaults (one source of defaults), except the lecture's preset, which spells
out the lecture's recipe on purpose."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from seqlab.config import PRESETS, Config, DataConfig, find_preset, make_config, model_recipe, preset_names
from seqlab.errors import ConfigError
from seqlab.models import MODELS
from seqlab.tasks import TASKS
from seqlab.train.config import TrainConfig

SPELLED_OUT = {"lecture/ag_news_bag"}  # the lecture's recipe, stated in full


def restated_defaults(tree: dict) -> list[str]:
    """The keys of a preset whose value is the default (a section's `name` selects; it is not a default)."""
    cfg = make_config(tree)
    recipe = model_recipe(MODELS[cfg.task][cfg.model])  # the model's own defaults for train.* / task.*
    sections = {"task": TASKS[cfg.task].Config(), "model": MODELS[cfg.task][cfg.model].Config(),
                "data": DataConfig(), "train": TrainConfig()}
    out = []
    for section, defaults in sections.items():
        raw = tree.get(section)
        for key, value in (raw.items() if isinstance(raw, dict) else ()):
            default = recipe.get(section, {}).get(key, getattr(defaults, key, None))
            if key != "name" and default == value:
                out.append(f"{section}.{key}")
    out += [k for k in ("seed", "device", "precision", "threads") if k in tree and getattr(Config(), k) == tree[k]]
    return out


@pytest.mark.parametrize("name", preset_names())
def test_a_preset_resolves_and_states_only_what_differs_from_the_defaults(name: str) -> None:
    tree = yaml.safe_load(find_preset(name).read_text(encoding="utf-8"))
    make_config(tree)
    if name not in SPELLED_OUT:
        assert restated_defaults(tree) == []


def test_the_check_catches_a_restated_default() -> None:
    assert restated_defaults({"model": {"name": "cnn", "dim": 300, "filters": 50}, "train": {"epochs": 3}}) == [
        "model.dim", "train.epochs"]  # the CNN's recipe trains for 3 epochs


def test_a_models_recipe_comes_between_the_defaults_and_the_preset() -> None:
    assert make_config(None, ["model=cnn"]).train.optimizer == "adam"  # the CNN's recipe
    assert make_config(None, ["model=cnn", "train.optimizer=sgd"]).train.optimizer == "sgd"
    assert make_config(None, ["task=tag"]).train.optimizer == "sgd"  # no recipe: TrainConfig's default


def test_presets_are_found_by_name_by_path_and_by_the_old_checkout_path(tmp_path, monkeypatch) -> None:
    assert "sst2/bag" in preset_names() and len(preset_names()) >= 20
    by_name = make_config("sst2/bag")
    assert make_config(PRESETS / "sst2" / "bag.yaml").to_dict() == by_name.to_dict()
    monkeypatch.chdir(tmp_path)  # outside a checkout
    assert make_config("sst2/bag.yaml").to_dict() == by_name.to_dict()
    assert make_config("configs/sst2/bag.yaml").to_dict() == by_name.to_dict()
    mine = tmp_path / "sst2" / "bag.yaml"  # a file of the user's wins over the shipped preset of that name
    mine.parent.mkdir()
    mine.write_text("dataset: trec\n", encoding="utf-8")
    assert make_config("sst2/bag.yaml").dataset == "trec"


def test_an_unknown_preset_suggests_the_nearest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'sst2/bag'"):
        make_config("sst2/bagg")


def test_models_use_one_name_per_option() -> None:
    """Config format 2's names: none of the names it replaced is left on a model."""
    names = {f.name for cls in (c.Config for m in MODELS.values() for c in m.values()) for f in dataclasses.fields(cls)}
    for old in ("embed_dim", "hidden_dim", "d_model", "n_heads", "n_layers", "num_layers", "d_ff", "emb_dim",
                "enc_layers", "dec_layers", "tie_weights", "positional"):
        assert old not in names


def test_the_seed_check_fails_when_the_seed_is_ignored() -> None:
    import torch

    from tests.helpers import assert_seeded

    assert_seeded(lambda seed: torch.randn(3, generator=torch.Generator().manual_seed(seed)))
    with pytest.raises(AssertionError, match="another seed"):
        assert_seeded(lambda seed: torch.ones(3))
