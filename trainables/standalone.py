"""A training run without Ray: train, write ``run.json`` + ``model.pt``, optionally log to W&B."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from trainables.config import DataConfig, TrainConfig
from trainables.constants import MODEL_FILE, RUN_FILE
from trainables.data import prepare_data
from trainables.files import prepare_output_folder, remove_if_empty
from trainables.run_record import RunResult, write_run
from trainables.train import train
from trainables.wandb_run import WandbSettings, train_logged


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
    prepared = prepare_data(data_cfg)  # bad data fail here, before a W&B run starts
    if wandb is not None and wandb.mode != "off":  # W&B's run folder goes beside run.json
        settings = replace(wandb, dir=str(out_dir))
        return train_logged(
            train_cfg, prepared, settings, progress, data_config=data_cfg, out_dir=out_dir
        )
    result = train(train_cfg, prepared, report=progress)
    write_run(result, out_dir, data_cfg)
    return result


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
