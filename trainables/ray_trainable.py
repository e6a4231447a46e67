"""The Ray Tune adapter: a trial config -> validated configs -> ``train(report=tune.report)``.

Everything else a trial does lives in plain functions that run without Ray.
"""

from __future__ import annotations

import json
import posixpath
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
from pyarrow import fs as pafs
from ray import tune

from trainables.config import DataConfig, TrainConfig
from trainables.constants import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    RUN_CONFIG,
    RUN_FILE,
    TUNE_DATA,
    TUNE_REPLICATE,
    TUNE_TRAIN,
)
from trainables.files import atomic_torch_save, load_torch, storage_filesystem
from trainables.prepared import PreparedData
from trainables.provenance import get_environment_info
from trainables.run_record import final_result, write_run
from trainables.schema import config_from_dict, config_to_dict, flatten_dict
from trainables.train import train


def trial_configs(
    config: dict[str, Any], base_train: dict[str, Any], base_data: dict[str, Any]
) -> tuple[TrainConfig, DataConfig, int]:
    """Validate a trial: the base configs with the trial's values applied.

    Returns:
        ``(train config, data config, replicate index)``.
    """
    train = flatten_dict(config.get(TUNE_TRAIN, {}))
    data = flatten_dict(config.get(TUNE_DATA, {}))
    train_cfg = config_from_dict(TrainConfig, base_train, train, source="trial config train")
    data_cfg = config_from_dict(DataConfig, base_data, data, source="trial config data")
    return train_cfg, data_cfg, int(config.get(TUNE_REPLICATE, 0))


def node_info() -> dict[str, Any]:
    """Where this trial runs: hostname, IP, Ray node id and the GPU ids Ray assigned."""
    return {
        "hostname": socket.gethostname(),
        "ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
    }


def earlier_record(storage: str | None) -> dict[str, Any] | None:
    """This trial's ``run.json`` in the sweep folder, if an earlier attempt finished it.

    A trial can finish (its run.json synced to storage) moments before the driver dies and
    records it as finished; ``--resume`` then starts it again. Ray names the trial's working
    folder like its folder in storage, which is where run.json was synced. The record counts
    only with the trial's weights beside it.
    """
    if storage is None:
        return None
    filesystem, root = storage_filesystem(storage)
    folder = posixpath.join(root, Path.cwd().name)
    try:
        with filesystem.open_input_stream(posixpath.join(folder, RUN_FILE)) as f:
            record = json.loads(f.read())
        weights = filesystem.get_file_info(posixpath.join(folder, MODEL_FILE))
    except (OSError, ValueError):  # absent (FileNotFoundError is an OSError) or unreadable
        return None
    same_trial = record.get("trial", {}).get("trial_id") == tune.get_context().get_trial_id()
    synced = weights.type == pafs.FileType.File  # a sync cut short may have left it behind
    return record if same_trial and synced else None


def tune_trainable(
    config: dict[str, Any],
    base_train: dict[str, Any],
    base_data: dict[str, Any],
    data: PreparedData | None = None,
    checkpoint_every: int = 0,
    storage: str | None = None,
) -> None:
    """Run one trial: train, report every epoch, checkpoint, write run.json + model.pt.

    Args:
        config: The trial config: its ``train`` and ``data`` values, its ``replicate``.
        base_train: The sweep's base train config, as a dict.
        base_data: The sweep's base data config, as a dict.
        data: Data prepared once by the driver for this config; None prepares it here
            (through the on-disk cache).
        checkpoint_every: Report a resumable checkpoint every this many epochs (0: never).
        storage: The sweep folder (path or URI), where an earlier attempt's run.json would be.
    """
    train_cfg, data_cfg, replicate = trial_configs(config, base_train, base_data)
    tags = {"seed": train_cfg.seed, TUNE_REPLICATE: replicate}
    finished = earlier_record(storage)
    if finished is not None:  # done before the driver died: report it, don't train again
        tune.report({**final_result(finished), **tags})
        return
    checkpoint = tune.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_torch(Path(folder) / CHECKPOINT_FILE, weights_only=False)
    node = node_info()
    run_config = {"train": config_to_dict(train_cfg), "data": config_to_dict(data_cfg)}
    first = {RUN_CONFIG: run_config, "node": node, **get_environment_info()}  # W&B config

    def report(metrics: dict[str, float], state: dict[str, Any] | None = None) -> None:
        row = {**metrics, **tags, **first}
        first.clear()
        if state is None:
            tune.report(row)
            return
        with tempfile.TemporaryDirectory() as folder:
            atomic_torch_save(state, Path(folder) / CHECKPOINT_FILE)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(folder))

    result = train(
        train_cfg,
        data if data is not None else data_cfg,
        report=report,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    trial = {"trial_id": tune.get_context().get_trial_id(), TUNE_REPLICATE: replicate, "node": node}
    write_run(result, Path.cwd(), data_cfg, extra={"trial": trial})
