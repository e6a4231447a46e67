"""Names shared by the training loop, the Ray adapter, the sweep driver and the analysis."""

from __future__ import annotations

MKL_CBWR = "AUTO,STRICT"
"""MKL's strict conditional numerical reproducibility: its products' bits then do not depend
on where their arrays lie in memory. Without it, a CPU batched product of (30 x 256) and
(256 x 5) gave one slot of a trial group other bits than another (torch 2.13, MKL 2024.2,
AVX-512), so a trial's bits depended on its slot. MKL reads the variable once, at its first
product in the process: ``trainables`` sets it on import (unless it is set) and the sweep
driver passes it to every worker (``trainables.seeding.determinism_env``)."""

# Metrics reported once per epoch, in this order. All are deterministic functions of the run,
# so their bit patterns are part of the run fingerprint (wall-clock times are not).
METRIC_KEYS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    "recon",
    "kl_i",
    "kl_s",
    "indep",
    "beta",
    "grad_norm",
    "val_loss",
    "val_recon",
    "val_kl_i",
    "val_kl_s",
    "val_indep",
)

DEFAULT_METRIC = "val_loss"
DEFAULT_MODE = "min"

RUN_FILE = "run.json"  # a run's record: config, seeding, environment, history, fingerprint
MODEL_FILE = "model.pt"  # a run's final model and optimizer states
CHECKPOINT_FILE = "state.pt"  # a resumable training state inside a checkpoint folder

RUN_SCHEMA_VERSION = 1

# Layout of a Tune trial config: what the trial changes in the sweep's base train and data
# configs (seed, searched values) as nested dicts, plus the replicate index. A replicate
# differs from its siblings in nothing but this index.
TUNE_TRAIN = "train"
TUNE_DATA = "data"
TUNE_REPLICATE = "replicate"
# Result keys a trial sends for its W&B run (``trainables.wandb_run``'s layout): its config
# (with the first result, and whole with the last) and its summary (with the last). The W&B
# callback files them under the run's config and summary, not its history.
WANDB_CONFIG = "wandb_config"
WANDB_SUMMARY = "wandb_summary"
