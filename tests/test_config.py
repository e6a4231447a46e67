from pathlib import Path

import pytest
import yaml

from trainables.config import DataConfig, TrainConfig, load_data_config, load_train_config
from trainables.schema import ConfigError, config_from_dict, config_keys, config_to_dict

CONFIGS = Path(__file__).parents[1] / "configs"


def test_shipped_yaml_files_equal_the_dataclass_defaults():
    assert load_train_config(CONFIGS / "train_config.yaml") == TrainConfig()
    assert load_data_config(CONFIGS / "data_config.yaml") == DataConfig()


def test_issue_defaults():
    cfg = TrainConfig()
    assert (cfg.seed, cfg.deterministic, cfg.n_epochs) == (42, True, 500)
    assert (cfg.learning_rate, cfg.batch_size, cfg.grad_clip) == (1e-3, 256, 1.0)
    assert (cfg.model.z_i_dim, cfg.model.z_s_dim, cfg.model.hidden) == (30, 5, (128, 128))
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_warmup_steps) == (0.4, 1.0, 250)
    assert cfg.model.dropout == 0.1 and cfg.indep_weight == 0.1
    data = DataConfig()
    assert (data.n_top_genes, data.val_size, data.random_state) == (4000, 0.2, 42)


def test_dotted_overrides_reach_nested_sections():
    cfg = load_train_config(overrides={"model.z_i_dim": 10, "optimizer.muon_momentum": 0.9})
    assert cfg.model.z_i_dim == 10 and cfg.optimizer.muon_momentum == 0.9


def test_overrides_win_over_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("seed: 1\nmodel:\n  z_s_dim: 3\n")
    cfg = load_train_config(path, {"seed": 7})
    assert cfg.seed == 7 and cfg.model.z_s_dim == 3


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        TrainConfig().seed = 1


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"learning_rate": -1}, "learning_rate", "> 0"),
        ({"model.z_i_dim": 0}, "model.z_i_dim", ">= 1"),
        ({"model.z_s_dim": 0}, "model.z_s_dim", ">= 1"),
        ({"model.hidden": []}, "model.hidden", "non-empty"),
        ({"model.dropout": 1.0}, "model.dropout", "[0, 1)"),
        ({"n_epochs": 0}, "n_epochs", ">= 1"),
        ({"batch_size": 1}, "batch_size", ">= 2"),
        ({"seed": -1}, "seed", "2**32"),
        ({"seed": True}, "seed", "integer"),
        ({"grad_clip": 0}, "grad_clip", "null"),
        ({"device": "gpu"}, "device", "cuda"),
        ({"model.prior_mean": "random"}, "model.prior_mean", "zero, learned"),
        ({"cuda_matmul_precision": "bf16"}, "cuda_matmul_precision", "ieee, tf32"),
        ({"model.hidden": [64, "x"]}, "model.hidden[1]", "integer"),
        ({"optimizer.adamw_betas": [0.9]}, "optimizer.adamw_betas", "2 values"),
        ({"deterministic": "yes"}, "deterministic", "true or false"),
    ],
)
def test_bad_train_values_name_key_value_and_allowed(overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_train_config(overrides=overrides)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_error_message_shows_the_value():
    with pytest.raises(ConfigError, match=r"learning_rate: got -0\.5; allowed: a number > 0"):
        load_train_config(overrides={"learning_rate": -0.5})


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"val_size": 0}, "val_size"),
        ({"val_size": 1.5}, "val_size"),
        ({"n_top_genes": 0}, "n_top_genes"),
        ({"simulation.n_cells": 1}, "simulation.n_cells"),
        ({"simulation.de_prob": 2}, "simulation.de_prob"),
        ({"bio_keys": [""]}, "bio_keys"),
    ],
)
def test_bad_data_values(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_data_config(overrides=overrides)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("overrides", "key", "suggestion"),
    [
        ({"learning_rat": 0.1}, "learning_rat", "learning_rate"),
        ({"model.z_i_dm": 3}, "model.z_i_dm", "z_i_dim"),
        ({"optimiser.muon_momentum": 0.9}, "optimiser", "optimizer"),
    ],
)
def test_unknown_keys_suggest_the_close_match(overrides, key, suggestion):
    with pytest.raises(ConfigError, match=f"unknown key; did you mean '{suggestion}'") as info:
        load_train_config(overrides=overrides)
    assert info.value.key == key


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  z_i_dim: -3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: model\.z_i_dim: got -3"):
        load_train_config(path)


@pytest.mark.parametrize(
    ("text", "fragment"), [("seed: [1\n", "invalid YAML"), ("- 1\n- 2\n", "mapping")]
)
def test_unreadable_yaml(tmp_path, text, fragment):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_train_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_data_config(tmp_path / "absent.yaml")


def test_yaml_1_1_exponent_strings_become_floats():
    assert load_train_config(overrides={"learning_rate": "1e-4"}).learning_rate == 1e-4


def test_integers_are_accepted_for_floats():
    assert load_train_config(overrides={"beta_end": 1}).beta_end == 1.0


def test_overriding_through_a_scalar_is_an_error(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("seed: 3\n")
    with pytest.raises(ConfigError, match=r"seed: is 3, so it has no key 'seed\.x'"):
        load_train_config(path, {"seed.x": 1})


def test_round_trip_through_yaml():
    cfg = load_train_config(overrides={"model.hidden": [64, 32]})
    again = config_from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(config_to_dict(cfg))))
    assert again == cfg


def test_config_keys_lists_nested_leaves():
    keys = config_keys(TrainConfig)
    assert "model.z_i_dim" in keys and "optimizer.muon_weight_decay" in keys
    assert "model" not in keys
    assert "simulation.n_cells" in config_keys(DataConfig)
