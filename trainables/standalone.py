"""A training run without Ray: train, write ``run.json`` + ``model.pt``, optionally log to W&B.

This is the only module of ``trainables`` that may import wandb, and only when asked to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainables.config import DataConfig, TrainConfig
from trainables.constants import MODEL_FILE, RUN_FILE
from trainables.data import prepare_data
from trainables.files import prepare_output_folder, remove_if_empty
from trainables.provenance import get_environment_info
from trainables.run_record import RunRecord, RunResult, flat_run_config, run_record, write_run
from trainables.schema import config_to_dict
from trainables.train import train

WandbMode = Literal["off", "offline", "online"]
DIRTY_TAG = "uncommitted-changes"


@dataclass(frozen=True)
class WandbSettings:
    """Where and how a standalone run logs to W&B (offline unless online is asked for)."""

    mode: WandbMode = "off"
    project: str = "invae-sweep"
    group: str | None = None
    tags: tuple[str, ...] = ()


def run_standalone(
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    out_dir: str | Path,
    wandb: WandbSettings | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Train one model and write its record and weights into ``out_dir``.

    Args:
        train_cfg: The training config.
        data_cfg: The data config.
        out_dir: Folder for ``run.json`` and ``model.pt`` (and ``wandb/`` when logging).
        wandb: W&B settings; None or mode "off" logs nothing.
        progress: Called with each epoch's metrics (e.g. to print a line).
        overwrite: Replace a run already in ``out_dir`` (else it is refused, before training).

    Returns:
        The run's result.

    Raises:
        OutputFolderError: ``out_dir`` holds a run (without ``overwrite``) or is not writable.
    """
    out_dir = Path(out_dir)
    created = prepare_output_folder(out_dir, (RUN_FILE, MODEL_FILE), overwrite)
    try:
        return _train_and_write(train_cfg, data_cfg, out_dir, wandb, progress)
    except BaseException:  # bad data, a diverged loss, Ctrl-C: leave no empty folders behind
        if created is not None:
            remove_if_empty(created)
        raise


def _train_and_write(
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    out_dir: Path,
    wandb: WandbSettings | None,
    progress: Callable[[dict[str, float]], None] | None,
) -> RunResult:
    prepared = prepare_data(data_cfg)
    logger = (
        _WandbLogger(wandb, out_dir, train_cfg, data_cfg) if wandb and wandb.mode != "off" else None
    )

    def report(metrics: dict[str, float], state: Any = None) -> None:
        if logger is not None:
            logger.log(metrics)
        if progress is not None:
            progress(metrics)

    try:
        result = train(train_cfg, prepared, report=report)
    except BaseException:
        if logger is not None:
            logger.finish(None, exit_code=1)
        raise
    write_run(result, out_dir, data_cfg)
    if logger is not None:
        logger.finish(run_record(result, data_cfg))
    return result


class _WandbLogger:
    """A direct W&B run for one standalone training run."""

    def __init__(
        self, settings: WandbSettings, out_dir: Path, train_cfg: TrainConfig, data_cfg: DataConfig
    ):
        import wandb  # optional: only imported when logging is asked for

        if settings.mode == "offline":
            os.environ["WANDB_MODE"] = "offline"  # the keyword alone still asks for an API key
        environment = get_environment_info()
        partial = {
            "config": {"train": config_to_dict(train_cfg), "data": config_to_dict(data_cfg)},
            "environment": environment,
        }
        tags = list(settings.tags) + ([DIRTY_TAG] if environment["git"]["is_dirty"] else [])
        out_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=settings.project,
            group=settings.group,
            tags=tags,
            mode=settings.mode,
            dir=str(out_dir),
            config=flat_run_config(partial),
            settings=wandb.Settings(disable_git=True),  # W&B's own git record keeps URL users
        )

    def log(self, metrics: dict[str, float]) -> None:
        self.run.log(dict(metrics), step=int(metrics["epoch"]))

    def finish(self, record: RunRecord | None, exit_code: int = 0) -> None:
        if record is not None:
            self.run.config.update(flat_run_config(config_to_dict(record)), allow_val_change=True)
            digests = config_to_dict(record.fingerprint.digests)
            self.run.summary.update({f"fingerprint/{k}": v for k, v in digests.items()})
        self.run.finish(exit_code=exit_code)


def print_progress(n_epochs: int) -> Callable[[dict[str, float]], None]:
    """Return a progress callback printing one line per epoch to stderr."""

    def show(metrics: dict[str, float]) -> None:
        print(
            f"epoch {int(metrics['epoch'])}/{n_epochs}  train_loss={metrics['train_loss']:.4f}"
            f"  val_loss={metrics['val_loss']:.4f}  beta={metrics['beta']:.3f}",
            file=sys.stderr,
            flush=True,
        )

    return show
