"""Names shared by the training loop, the Ray adapter, the sweep driver and the analysis."""

from __future__ import annotations

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
