"""``--set KEY=VALUE`` overrides of the train and data configs, and their one-line errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainables.config import DataConfig, TrainConfig, load_data_config, load_train_config
from trainables.schema import ConfigError, config_from_dict, config_to_dict, parse_yaml_value


def parse_overrides(pairs: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``key=value`` strings into train and data overrides (``data.`` prefix: data).

    Values are parsed as YAML, so ``--set model.hidden=[64,64]`` gives a list.

    Raises:
        ConfigError: A pair has no ``=``, an empty key or a value that is not YAML (naming
            ``--set`` and the key).
    """
    train, data = {}, {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(pair, "expected key=value (e.g. model.z_i_dim=10)", "--set")
        try:
            value = parse_yaml_value(raw) if raw else None
        except ValueError as err:
            raise ConfigError(key, f"{raw!r} is {err}", "--set") from None
        if key.startswith("data."):
            data[key.removeprefix("data.")] = value
        else:
            train[key] = value
    return train, data


def load_configs(
    train_file: str | None,
    data_file: str | None,
    train_overrides: dict[str, Any],
    data_overrides: dict[str, Any],
) -> tuple[TrainConfig, DataConfig]:
    """Load the config files, then apply ``--set`` overrides.

    Raises:
        ConfigError: An error in a file names the file; an error in an override names
            ``--set`` and the override's full key (``data.`` prefix included).
    """
    train, data = load_train_config(train_file), load_data_config(data_file)
    try:
        train = config_from_dict(TrainConfig, config_to_dict(train), train_overrides)
    except ConfigError as err:
        key = _override_key(err.key, train_overrides)
        head = key.split(".")[0]
        hint = ""
        if head in DataConfig.__dataclass_fields__ and head not in TrainConfig.__dataclass_fields__:
            hint = f"; {head!r} is a data config key: --set data.{key}=..."
        raise ConfigError(key, err.message + hint, "--set") from None
    try:
        data = config_from_dict(DataConfig, config_to_dict(data), data_overrides)
    except ConfigError as err:
        key = f"data.{_override_key(err.key, data_overrides)}"
        raise ConfigError(key, err.message, "--set") from None
    return train, data


def _override_key(key: str, overrides: dict[str, Any]) -> str:
    """The override that an error's key path points into (``nosuch`` -> ``nosuch.key``)."""
    return next((k for k in overrides if k == key or k.startswith(f"{key}.")), key)
