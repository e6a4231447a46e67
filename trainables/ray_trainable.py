"""The Ray Tune adapter: a trial config -> validated configs -> train -> ``tune.report``.

A trial trains in its own process, or, where the sweep trains in groups, on its GPU's training
host beside the GPU's other trials (``trainables.host.TrainingHosts``). Everything else a trial
does lives in plain functions that run without Ray.
"""

from __future__ import annotations

import os
import posixpath
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from pyarrow import fs as pafs
from ray import tune

from trainables.config import DataConfig, TrainConfig
from trainables.constants import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    RUN_FILE,
    TUNE_DATA,
    TUNE_REPLICATE,
    TUNE_TRAIN,
    WANDB_CONFIG,
    WANDB_SUMMARY,
)
from trainables.files import atomic_torch_save, load_torch, storage_filesystem
from trainables.host import TrainingHosts
from trainables.prepared import PreparedData
from trainables.provenance import get_environment_info
from trainables.run_record import (
    Environment,
    RunConfigs,
    RunRecord,
    TrialInfo,
    write_run,
)
from trainables.schema import (
    config_from_dict,
    config_to_dict,
    flatten_dict,
    parse_record,
    record_from_dict,
)
from trainables.train import train
from trainables.wandb_run import (
    SweepRuns,
    metadata_config,
    record_identity,
    record_wandb_config,
    wandb_config,
)


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
    """Where this trial runs: hostname, IP, Ray node id, the GPU ids Ray assigned, process id."""
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
    }


def earlier_record(storage: str | None) -> RunRecord | None:
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
        path = posixpath.join(folder, RUN_FILE)
        with filesystem.open_input_stream(path) as f:
            record = parse_record(RunRecord, f.read(), path)
        weights = filesystem.get_file_info(posixpath.join(folder, MODEL_FILE))
    except (OSError, ValueError):  # absent (FileNotFoundError is an OSError) or not a record
        return None
    trial_id = record.trial.trial_id if record.trial else None
    synced = weights.type == pafs.FileType.File  # a sync cut short may have left it behind
    return record if trial_id == tune.get_context().get_trial_id() and synced else None


def tune_trainable(
    config: dict[str, Any],
    base_train: dict[str, Any],
    base_data: dict[str, Any],
    data: PreparedData | None = None,
    checkpoint_every: int = 0,
    storage: str | None = None,
    hosts: TrainingHosts | None = None,
    wandb: SweepRuns | None = None,
) -> None:
    """Run one trial: train, report every epoch, checkpoint, write run.json + model.pt.

    The last epoch's result is reported after ``run.json`` is written: with W&B on, it
    carries what the run's W&B config still lacks (seeding, model metadata) and its digests
    and ``run.json`` for the summary (``trainables.wandb_run``).

    Args:
        config: The trial config: its ``train`` and ``data`` values, its ``replicate``.
        base_train: The sweep's base train config, as a dict.
        base_data: The sweep's base data config, as a dict.
        data: Data prepared once by the driver for this config; None prepares it here
            (through the on-disk cache).
        checkpoint_every: Report a resumable checkpoint every this many epochs (0: never).
        storage: The sweep folder (path or URI), where an earlier attempt's run.json would be.
        hosts: The sweep's training hosts, one per GPU, to train on (None: train here).
        wandb: The sweep's W&B runs (None: W&B is off); ``run.json`` records the trial's.
    """
    train_cfg, data_cfg, replicate = trial_configs(config, base_train, base_data)
    tags = {"seed": train_cfg.seed, TUNE_REPLICATE: replicate}
    trial_id = tune.get_context().get_trial_id()
    run_json = posixpath.join(storage or str(Path.cwd().parent), Path.cwd().name, RUN_FILE)

    def last_keys(record: RunRecord, whole: bool = False) -> dict[str, Any]:
        """The W&B keys of the last result: what the run's config and summary still lack.

        Kept small (the last result is in Tune's state and tables); ``whole``: the whole
        config, for a run whose first result this attempt did not send.
        """
        if wandb is None:
            return {}
        config = (
            record_wandb_config(record) if whole else metadata_config(record.seeding, record.model)
        )
        return {WANDB_CONFIG: config, WANDB_SUMMARY: record_identity(record, run_json)}

    finished = earlier_record(storage)
    if finished is not None:  # done before the driver died: report it, don't train again
        tune.report({**finished.final_result(), **tags, **last_keys(finished, whole=True)})
        return
    checkpoint = tune.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_torch(Path(folder) / CHECKPOINT_FILE, weights_only=False)
    first = {}  # the W&B config known before training: configs, environment, node
    node: dict[str, Any] = {}

    def started(where: dict[str, Any], environment: dict[str, Any]) -> None:
        node.update(where)  # W&B's config and run.json describe where the training runs
        if wandb is not None:
            configs = RunConfigs(config_to_dict(train_cfg), config_to_dict(data_cfg))
            env = record_from_dict(Environment, environment)
            first[WANDB_CONFIG] = wandb_config(configs, env, node=where)

    held: list[tuple[dict[str, Any], dict[str, Any] | None]] = []  # the last epoch's result

    def report(metrics: dict[str, float], state: dict[str, Any] | None = None) -> None:
        row = {**metrics, **tags, **first}
        first.clear()
        if int(metrics["epoch"]) == train_cfg.n_epochs:  # sent once run.json is written
            held.append((row, state))
        else:
            send(row, state)

    if hosts is not None:
        args = (train_cfg, data_cfg, checkpoint_every, resume)
        result = hosts.train(trial_id, args, report, started)
    else:
        started(node_info(), get_environment_info())
        result = train(
            train_cfg,
            data if data is not None else data_cfg,
            report=report,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )
    if wandb is not None:
        result = replace(result, wandb=wandb.trial_run(trial_id, config))
    record = write_run(result, Path.cwd(), data_cfg, TrialInfo(trial_id, replicate, node))
    for row, state in held:
        send({**row, **last_keys(record)}, state)


def send(row: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Report a result to Tune, with a resumable checkpoint when ``state`` is given."""
    if state is None:
        tune.report(row)
        return
    with tempfile.TemporaryDirectory() as folder:
        atomic_torch_save(state, Path(folder) / CHECKPOINT_FILE)
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(folder))
