"""Every experiment YAML loads; overrides and errors name their key; the packaging files agree."""

import re
from pathlib import Path

import pytest
import yaml

from faceattr import config
from faceattr.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", config.available())
def test_every_experiment_loads(name):
    cfg = config.load(name)
    assert cfg["name"] == name
    assert cfg["train"]["epochs"] >= 1


def test_experiments_are_the_seed_ones():
    assert {"eyes", "mouth", "background", "gender"} <= set(config.available())


def test_shortcuts_and_dotted_overrides_are_parsed_as_yaml():
    cfg = config.load("eyes", {"epochs": "3", "batch_size": "16", "data": "/x/labels.csv",
                               "model.dense_0": "64", "data.rounded": "false"})
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["batch_size"] == 16
    assert cfg["data"]["source"] == "/x/labels.csv"
    assert cfg["model"]["dense_0"] == 64 and cfg["data"]["rounded"] is False


def test_unknown_experiment_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown experiment 'nose'.*eyes"):
        config.load("nose")


@pytest.mark.parametrize("override, key", [
    ({"epochs": "zero"}, "train.epochs"),
    ({"epochs": "0"}, "train.epochs"),
    ({"batch_size": "-2"}, "train.batch_size"),
    ({"model.dropout": "1.5"}, "model.dropout"),
    ({"learning_rate": "3"}, "train.learning_rate"),
    ({"data.gender": "maybe"}, "data.gender"),
    ({"model.nonsense": "1"}, "model.nonsense"),
    ({"nonsense.key": "1"}, "nonsense.key"),
])
def test_bad_parameters_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        config.load("eyes", override)


def test_flatten_gives_one_dotted_param_per_leaf():
    flat = config.flatten({"model": {"conv": [{"filters": 32}], "dense_0": 8}, "search": {}})
    assert flat == {"model.conv.0.filters": 32, "model.dense_0": 8, "search": {}}


def test_mlproject_has_an_entry_point_per_experiment_with_the_yaml_defaults():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    for name in ("eyes", "mouth", "background", "gender"):
        entry = project["entry_points"][name]
        params = entry["parameters"]
        assert {"epochs", "batch_size", "data", "seed"} <= set(params)
        assert params["data"]["type"] != "path"
        cfg = config.load(name)
        assert int(params["epochs"]["default"]) == cfg["train"]["epochs"]
        assert int(params["batch_size"]["default"]) == cfg["train"]["batch_size"]
        assert f"faceattr train {name}" in entry["command"]


def test_conda_yaml_pins_the_same_dependencies_as_pyproject():
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())["dependencies"]
    pip = next(d["pip"] for d in conda if isinstance(d, dict))
    assert sorted(pip) == sorted(pyproject)


def test_load_returns_the_validated_config_with_every_default_filled_in(tmp_path):
    """Readers index the config (`layer["pool"]`, `train["balance"]`) with no default of their own."""
    path = tmp_path / "bare.yaml"
    path.write_text("name: bare\ntask: regression\ntarget: eyes\nregion: eyes\n"
                    "model: {conv: [{filters: 8}], dense_0: 16, dense_1: 8}\n")
    cfg = config.load(str(path))
    assert cfg["model"] == {"backbone": "cnn", "conv": [{"filters": 8, "padding": "valid", "pool": False}],
                            "dropout": 0.25, "dense_0": 16, "dense_1": 8}
    assert cfg["data"]["person"] is None and cfg["data"]["split"] == "auto"
    assert cfg["train"]["balance"] == "class_weight" and cfg["train"]["epochs"] == 40
    assert cfg["search"] == {"filters": None, "dense_0": None, "dense_1": None, "alpha": None, "head": None,
                             "dropout": None, "learning_rate": None}
    assert config.validate(cfg) == cfg   # a validated config validates to itself (tuning re-validates)


def test_a_transfer_model_section_gets_its_own_defaults():
    cfg = config.load("identity", {"model.weights": "none"})
    assert {k: cfg["model"][k] for k in ("input_size", "alpha", "pooling", "trainable")} == \
        {"input_size": "auto", "alpha": 1.0, "pooling": "auto", "trainable": "auto"}
