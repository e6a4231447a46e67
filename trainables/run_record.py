"""A finished run on disk: ``run.json`` (the record) and ``model.pt`` (weights and optimizers).

``run.json`` is written last, so a folder that holds it holds a complete run. It is read back
only through :func:`load_run`, which checks every key and type and returns a
:class:`RunRecord`; a file of any other shape is refused with one error naming the file and
the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.config import DataConfig, TrainConfig
from trainables.constants import METRIC_KEYS, MODEL_FILE, RUN_FILE, RUN_SCHEMA_VERSION
from trainables.files import atomic_torch_save, atomic_write_json, load_torch
from trainables.schema import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    read_record,
    record_from_dict,
)

if TYPE_CHECKING:  # readers of results need no torch
    from torch import Tensor

DIGEST_PARTS = ("weights", "optimizer", "metrics")
"""The three digests that say whether two runs are the same, in the order they are shown."""


@dataclass(frozen=True)
class Digests:
    """SHA-256 hex digests of a run's final weights, optimizer states and metric history."""

    weights: str
    optimizer: str
    metrics: str

    def same(self, other: Digests) -> dict[str, bool]:
        """Per part (``DIGEST_PARTS``), whether ``other`` has the same digest."""
        return {part: getattr(self, part) == getattr(other, part) for part in DIGEST_PARTS}


@dataclass(frozen=True)
class Fingerprint:
    """A run's digests (``trainables.fingerprint``), plus finer ones that locate a difference.

    Attributes:
        weights: SHA-256 of every model state-dict entry (sorted by name).
        optimizer: SHA-256 of every optimizer's state dict, in the run's optimizer order.
        metrics: SHA-256 of the float64 bits of every metric of every epoch.
        parameters: One digest per model state-dict entry.
        optimizers: One digest per optimizer (empty in runs written before they existed).
        epochs: One digest per epoch's metrics (empty in runs written before they existed).
    """

    weights: str
    optimizer: str
    metrics: str
    parameters: dict[str, str]
    optimizers: tuple[str, ...] = ()
    epochs: tuple[str, ...] = field(default=(), repr=False)

    @property
    def digests(self) -> Digests:
        """The three digests that decide sameness."""
        return Digests(self.weights, self.optimizer, self.metrics)


@dataclass(frozen=True)
class WandbRun:
    """The W&B run a training logged to: find it with ``wandb.Api().run(f"{project}/{run_id}")``.

    Attributes:
        mode: ``offline`` (the run is on disk until ``wandb sync``) or ``online``.
    """

    project: str
    run_id: str
    group: str | None
    mode: str


@dataclass
class RunResult:
    """Everything a finished run produced (``train()``), ready for ``run.json`` + ``model.pt``."""

    train_config: TrainConfig
    data: dict[str, Any]  # PreparedData.summary(): sizes, categories, source and cache key
    seeding: dict[str, Any]  # what set_seed() set
    environment: dict[str, Any]  # get_environment_info()
    model_info: dict[str, Any]  # parameter counts and layer shapes
    history: list[dict[str, float]]  # one row of METRIC_KEYS per epoch
    fingerprint: Fingerprint
    model_state: dict[str, Tensor]  # on the CPU
    optimizer_states: list[dict[str, Any]]  # on the CPU, [Muon per matrix..., AdamW]
    timing: dict[str, float]
    integration: dict[str, float]  # of z_i on the validation cells, after the last epoch
    wandb: WandbRun | None = None  # the W&B run it logged to, if any


@dataclass(frozen=True)
class RunConfigs:
    """The configs a run was trained with, as plain dicts (validated on demand)."""

    train: dict[str, Any]
    data: dict[str, Any] | None

    def train_config(self, source: str) -> TrainConfig:
        """The train config. Raises ConfigError naming ``source`` when it is not valid."""
        return config_from_dict(TrainConfig, self.train, source=f"{source}: config.train")

    def data_config(self, source: str, overrides: dict[str, Any] | None = None) -> DataConfig:
        """The data config with ``overrides``. Raises ConfigError naming ``source``."""
        if self.data is None:
            raise ConfigError("config.data", "the run recorded no data config", source)
        return config_from_dict(DataConfig, self.data, overrides, source=f"{source}: config.data")


@dataclass(frozen=True)
class Seeding:
    """What ``trainables.seeding.set_seed`` set, read back from torch."""

    seed: int
    deterministic: bool
    cpu_threads: int | None = None
    torch_deterministic_algorithms: bool | None = None
    torch_deterministic_warn_only: bool | None = None
    fill_uninitialized_memory: bool | None = None
    inductor_deterministic: bool | None = None
    cudnn_deterministic: bool | None = None
    cudnn_benchmark: bool | None = None
    matmul_allow_tf32: bool | None = None
    cudnn_allow_tf32: bool | None = None
    float32_matmul_precision: str | None = None
    fp32_precision: dict[str, str] = field(default_factory=dict)
    cublas_workspace_config: str | None = None
    mkl_cbwr: str | None = None
    python_hash_seed: str | None = None


@dataclass(frozen=True)
class GitInfo:
    """The git state of the code that ran (each None when it could not be determined)."""

    commit: str | None = None
    branch: str | None = None
    is_dirty: bool | None = None
    remote_url: str | None = None


@dataclass(frozen=True)
class SystemInfo:
    """The machine and the libraries that pick a run's kernels (``get_environment_info``)."""

    python_version: str | None = None
    platform: str | None = None
    processor: str | None = None
    hostname: str | None = None
    torch_version: str | None = None
    pytorch_version: str | None = None  # the same, under the name W&B layouts use
    cuda_available: bool | None = None
    cuda_version: str | None = None
    cudnn_version: int | None = None
    gpu_count: int | None = None
    gpu_names: tuple[str, ...] = ()
    gpu_memory: tuple[int, ...] = ()
    gpu_sm_counts: tuple[int, ...] = ()
    gpu_capabilities: tuple[str, ...] = ()
    nvidia_driver: str | None = None
    cublas_version: str | None = None
    triton_version: str | None = None
    cpu_capability: str | None = None
    cpu_count: int | None = None
    torch_num_threads: int | None = None


@dataclass(frozen=True)
class Environment:
    """Where and with what a run ran: git, system, every installed distribution."""

    git: GitInfo
    system: SystemInfo
    packages: dict[str, str | None]


@dataclass(frozen=True)
class TrialInfo:
    """The sweep trial a run belongs to, and the Ray node it ran on."""

    trial_id: str
    replicate: int
    node: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    """A run's ``run.json``: its configs, seeding, environment, history and fingerprint.

    Attributes:
        history: One row per epoch, keyed by ``METRIC_KEYS`` (``epoch`` an integer).
        integration: Scores of ``z_i`` on the validation cells after the last epoch, if any.
        trial: Set for runs of a sweep.
        wandb: The W&B run it logged to, if any.
    """

    FILE_NAME = RUN_FILE

    schema_version: int
    finished_at: str
    config: RunConfigs
    seeding: Seeding
    environment: Environment
    data: dict[str, Any]
    model: dict[str, Any]
    history: tuple[dict[str, int | float], ...]
    fingerprint: Fingerprint
    integration: dict[str, float] | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    trial: TrialInfo | None = None
    wandb: WandbRun | None = None

    def __post_init__(self):
        for i, row in enumerate(self.history):
            missing = [k for k in METRIC_KEYS if k not in row]
            unknown = [k for k in row if k not in METRIC_KEYS]
            if missing or unknown:
                what = f"missing {missing}" if missing else f"unknown {unknown}"
                raise ConfigError(f"history[{i}]", f"metrics {what}")

    @property
    def device_type(self) -> str:
        """``"cpu"`` or ``"cuda"``: where the run trained."""
        return str(self.model.get("device", "")).split(":")[0]

    def final_result(self) -> dict[str, float]:
        """The last epoch's metrics with the integration scores: what its trial last reported."""
        last = dict(self.history[-1]) if self.history else {}
        return {**last, **(self.integration or {})}


def run_record(
    result: RunResult, data_config: DataConfig | None, trial: TrialInfo | None = None
) -> RunRecord:
    """Build the record of a finished run (checked as ``load_run`` checks it).

    Args:
        result: What ``train()`` returned.
        data_config: The data config the run's data were prepared from, if known.
        trial: The sweep trial the run belongs to, if any.

    Returns:
        The record written as ``run.json``.
    """
    return record_from_dict(
        RunRecord,
        {
            "schema_version": RUN_SCHEMA_VERSION,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": {
                "train": config_to_dict(result.train_config),
                "data": None if data_config is None else config_to_dict(data_config),
            },
            "seeding": result.seeding,
            "environment": result.environment,
            "data": result.data,
            "model": result.model_info,
            "history": result.history,
            "fingerprint": config_to_dict(result.fingerprint),
            "integration": result.integration,
            "timing": result.timing,
            "trial": None if trial is None else config_to_dict(trial),
            "wandb": None if result.wandb is None else config_to_dict(result.wandb),
        },
    )


def write_run(
    result: RunResult,
    out_dir: str | Path,
    data_config: DataConfig | None = None,
    trial: TrialInfo | None = None,
) -> RunRecord:
    """Write ``model.pt`` then ``run.json`` into ``out_dir``, each atomically.

    Returns:
        The record written as ``run.json``.
    """
    out = Path(out_dir)
    record = run_record(result, data_config, trial)
    atomic_torch_save(
        {
            "model": result.model_state,
            "optimizers": result.optimizer_states,
            "config": config_to_dict(record.config),
            "data": {
                "genes": result.data.get("genes"),
                "categories": result.data.get("categories"),
            },
        },
        out / MODEL_FILE,
    )
    atomic_write_json(out / RUN_FILE, config_to_dict(record))
    return record


def load_run(run_dir: str | Path) -> RunRecord:
    """Read a run's ``run.json``.

    Raises:
        ResultFileError: The file is missing, corrupt or not a run record (naming the file and
            the key).
    """
    return read_record(RunRecord, Path(run_dir) / RUN_FILE)


def load_model_file(run_dir: str | Path) -> dict[str, Any]:
    """Read a run's ``model.pt`` (state dicts on the CPU).

    Raises:
        ResultFileError: The file is missing or corrupt (the message names it).
    """
    return load_torch(Path(run_dir) / MODEL_FILE)
