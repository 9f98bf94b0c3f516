import pytest

from seqlab.config import DataConfig, load_yaml, make_config, resolve
from seqlab.errors import ConfigError


def test_defaults_are_the_bags_recipe_with_bigrams():
    cfg = make_config()
    assert (cfg.task, cfg.model) == ("classify", "bag")
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.schedule, cfg.train.epochs) == ("adagrad", 0.3, "linear", 10)
    assert cfg.train.early_stopping == 3 and cfg.task_options.min_freq == 2 and cfg.task_options.ngrams == 2
    assert cfg.model_options.dim == 32 and cfg.model_options.mode == "mean"
    assert cfg.data == DataConfig()
    lecture = make_config("lecture/ag_news_bag")  # the lecture's recipe, spelled out
    assert (lecture.train.optimizer, lecture.train.lr, lecture.train.schedule) == ("sgd", 4.0, "step")


def test_overrides_dotted_and_typed():
    cfg = make_config(None, ["train.epochs=3", "model.dim=64", "train.lr=0.5", "seed=7", "data.header=true"])
    assert cfg.train.epochs == 3 and cfg.model_options.dim == 64 and cfg.train.lr == 0.5
    assert cfg.seed == 7 and cfg.data.header is True


def test_preset_then_overrides(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("model: {name: bag, dim: 16}\ntrain: {epochs: 2}\n")
    cfg = make_config(p, {"train.epochs": 4})
    assert cfg.model_options.dim == 16 and cfg.train.epochs == 4


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match="train.epoch.*did you mean 'epochs'"):
        make_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        make_config(None, ["trian.epochs=3"])


def test_exponent_numbers_without_a_dot(tmp_path):
    assert make_config(None, ["train.lr=1e-3"]).train.lr == 0.001
    p = tmp_path / "p.yaml"
    p.write_text("train: {lr: 5e-4}\n")
    assert make_config(p).train.lr == 0.0005


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        make_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="train.lr must be positive"):
        make_config(None, ["train.lr=-1"])
    with pytest.raises(ConfigError, match="precision must be one of"):
        make_config(None, ["precision=fp8"])


def test_selecting_another_model_drops_the_old_options():
    cfg = make_config({"model": {"name": "bag", "dim": 8}})
    assert cfg.model_options.dim == 8
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        make_config({"model": {"name": "bag", "dim": 8}}, ["model=nope"])


def test_round_trip_through_yaml(tmp_path):
    cfg = make_config(None, ["train.epochs=2", "model.dim=12", "task.ngrams=1"])
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    again = resolve(load_yaml(tmp_path / "c.yaml"))
    assert again.to_dict() == cfg.to_dict()


def test_other_format_version_is_refused():
    with pytest.raises(ConfigError, match="format_version 99"):
        make_config({"format_version": 99})


def test_bad_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(p)
    assert str(p) in str(e.value) and ":3:" in str(e.value)


def test_key_value_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        make_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        make_config(None, ["seed=1", "seed.x=1"])
