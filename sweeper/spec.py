"""A sweep file (``sweep.yaml``) -> a validated :class:`SweepSpec` and its base configs.

Everything is checked before Ray starts: unknown keys, bad distributions, search keys that are
not train/data config keys, values the configs would reject. Errors are :class:`ConfigError`
naming the file and key path. The ``search`` block is checked in :mod:`sweeper.search`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sweeper.benchmark.records import TRAINED_BASELINES
from sweeper.search import DATA_PREFIX, check_search
from trainables.config import (
    PROCESS_WIDE_KEYS,
    DataConfig,
    TrainConfig,
    load_data_config,
    load_train_config,
)
from trainables.constants import DEFAULT_METRIC, DEFAULT_MODE, METRIC_KEYS
from trainables.integration import INTEGRATION_KEYS
from trainables.schema import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    flatten_dict,
    read_yaml,
    suggest,
)
from trainables.wandb_run import SweepRuns


def is_folder_name(name: str) -> bool:
    """Whether ``name`` names one folder inside another (no path, not ``.`` or ``..``)."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


class SweepError(RuntimeError):
    """The sweep cannot start, resume or be read as asked; the message says why and what to do."""


# Per-epoch metrics, and integration scores of z_i computed after the last epoch.
SWEEP_METRICS: tuple[str, ...] = (*METRIC_KEYS[1:], *INTEGRATION_KEYS)


@dataclass(frozen=True)
class ResourcesSpec:
    """Per-trial resources. Give ``gpus_per_trial`` or ``trials_per_gpu``, not both.

    ``one_process_per_gpu`` runs the trials that share a GPU in one process per GPU, where
    trials of one shape train as one batched computation (``trainables.host``), instead of a
    process per trial; unset, sweeps on GPUs do so unless an audit pins replicates to nodes or
    the sweep searches a setting torch keeps per process. Every trial keeps the bits it has
    alone. Its trials must share ``deterministic``, ``cpu_threads`` and
    ``cuda_matmul_precision``, which torch keeps per process.
    """

    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # explicit fraction or count of GPUs per trial
    trials_per_gpu: int | None = None  # at most this many trials share one GPU
    one_process_per_gpu: bool | None = None  # None: on GPUs (see above)

    def __post_init__(self):
        if self.cpus_per_trial <= 0:
            raise ConfigError("cpus_per_trial", f"got {self.cpus_per_trial!r}; allowed: > 0")
        if self.gpus_per_trial is not None and self.trials_per_gpu is not None:
            raise ConfigError("gpus_per_trial", "give gpus_per_trial or trials_per_gpu, not both")
        if self.gpus_per_trial is not None and self.gpus_per_trial <= 0:
            raise ConfigError("gpus_per_trial", f"got {self.gpus_per_trial!r}; allowed: > 0")
        if self.trials_per_gpu is not None and self.trials_per_gpu < 1:
            raise ConfigError("trials_per_gpu", f"got {self.trials_per_gpu!r}; allowed: >= 1")
        if self.one_process_per_gpu and self.gpus_per_trial is not None:
            raise ConfigError(
                "one_process_per_gpu",
                "a GPU's trials share its process: give trials_per_gpu, not gpus_per_trial",
            )


@dataclass(frozen=True)
class WandbSpec:
    """W&B logging through Ray's ``WandbLoggerCallback``. Offline unless online is asked for."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "invae-sweep"
    group: str | None = None  # None: the sweep name; trials go to "<group>/seed=..." groups
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchedulerSpec:
    """An early-stopping scheduler. Stopped replicates show up as incomplete in audits.

    Refused with more than one seed and with TPE search (``SweepSpec``): it stops each trial
    on its own, by which results arrive first.
    """

    type: Literal["asha"] = "asha"
    grace_period: int = 10  # epochs before a trial may be stopped
    reduction_factor: float = 3.0
    max_t: int | None = None  # None: the train config's n_epochs

    def __post_init__(self):
        if self.grace_period < 1:
            raise ConfigError("grace_period", f"got {self.grace_period!r}; allowed: >= 1")
        if self.reduction_factor <= 1:
            raise ConfigError("reduction_factor", f"got {self.reduction_factor!r}; allowed: > 1")


@dataclass(frozen=True)
class SearcherSpec:
    """How the sweep chooses its hyperparameter points.

    ``random``: ``num_samples`` draws of the search distributions, all known before the sweep
    starts. ``optuna``: ``num_samples`` points suggested by TPE (``sweeper.searchers``) in
    batches of ``batch_size``, each batch from every result of the earlier ones; the first
    ``startup_points`` points are drawn at random. Either way every point runs at every seed
    and replicate, and ``searcher_seed`` makes the sweep repeatable.
    """

    type: Literal["random", "optuna"] = "random"
    batch_size: int | None = None  # optuna only; default 4
    startup_points: int | None = None  # optuna only; default 8

    def __post_init__(self):
        for key in ("batch_size", "startup_points"):
            value = getattr(self, key)
            if value is not None and self.type != "optuna":
                raise ConfigError(key, "only for type: optuna")
            if value is not None and value < 1:
                raise ConfigError(key, f"got {value!r}; allowed: an integer >= 1")

    @property
    def points_per_batch(self) -> int:
        """Points suggested together (optuna): each batch waits for the earlier batches."""
        return self.batch_size or 4

    @property
    def random_points(self) -> int:
        """Points drawn at random before TPE models the results (optuna)."""
        return self.startup_points or 8


@dataclass(frozen=True)
class OutputsSpec:
    """What the sweep writes for its best trials after the trials are done."""

    best_n: int = 1  # trials to embed (every cell) and picture; 0: none
    umap: bool = True  # a UMAP of z_i per embedded trial (umap-learn; seconds to minutes)
    # Trained beside inVAE in the scIB table (when installed); PCA is always there. Each
    # trains for the trial's epochs on its training cells: [] for a table without them.
    baselines: tuple[str, ...] = TRAINED_BASELINES

    def __post_init__(self):
        if self.best_n < 0:
            raise ConfigError("best_n", f"got {self.best_n!r}; allowed: an integer >= 0")
        unknown = [b for b in self.baselines if b not in TRAINED_BASELINES]
        if unknown or len(set(self.baselines)) < len(self.baselines):
            allowed = ", ".join(TRAINED_BASELINES)
            raise ConfigError(
                "baselines", f"got {list(self.baselines)}; allowed: a list of distinct {allowed}"
            )


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: base configs, seeds, replicates, search space, resources and logging."""

    name: str = "invae-sweep"
    storage_path: str = "runs"
    train_config: str | None = None  # relative paths are relative to the sweep file
    data_config: str | None = None
    train: dict[str, Any] = field(default_factory=dict)  # overrides of the train config
    data: dict[str, Any] = field(default_factory=dict)  # overrides of the data config
    seeds: tuple[int, ...] = (42,)
    replicates: int = 1
    search: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 1
    metric: str = DEFAULT_METRIC
    mode: Literal["min", "max"] = DEFAULT_MODE
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent_trials: int | None = None
    max_failures: int = 2
    checkpoint_every: int = 10  # epochs; 0: no checkpoints (a failed trial restarts)
    scheduler: SchedulerSpec | None = None
    searcher: SearcherSpec = field(default_factory=SearcherSpec)
    searcher_seed: int = 0  # seed of the searcher: same file, same trials
    wandb: WandbSpec = field(default_factory=WandbSpec)
    outputs: OutputsSpec = field(default_factory=OutputsSpec)

    def __post_init__(self):
        checks = [
            ("name", is_folder_name(self.name), "a folder name (not '.' or '..', no '/')"),
            ("seeds", len(self.seeds) >= 1 and min(self.seeds) >= 0, "integers >= 0"),
            ("seeds", len(set(self.seeds)) == len(self.seeds), "distinct seeds"),
            ("replicates", self.replicates >= 1, "an integer >= 1"),
            ("num_samples", self.num_samples >= 1, "an integer >= 1"),
            ("metric", self.metric in SWEEP_METRICS, f"one of {', '.join(SWEEP_METRICS)}"),
            ("max_failures", self.max_failures >= -1, "an integer >= -1 (-1: no limit)"),
            ("checkpoint_every", self.checkpoint_every >= 0, "an integer >= 0"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ConfigError(key, f"got {getattr(self, key)!r}; allowed: {allowed}")
        if self.metric in INTEGRATION_KEYS and self.mode != "max":
            raise ConfigError("mode", f"{self.metric} is higher-is-better: set mode: max")
        if self.metric in INTEGRATION_KEYS and self.scheduler is not None:
            raise ConfigError(
                "scheduler", f"{self.metric} is scored once, after the last epoch: no scheduler"
            )
        self._check_searcher()
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ConfigError("max_concurrent_trials", "allowed: an integer >= 1, or null")
        per_process = [k for k in self.search if k in PROCESS_WIDE_KEYS]
        if self.resources.one_process_per_gpu and per_process:
            raise ConfigError(
                f"search.{per_process[0]}",
                "torch keeps it per process, and with resources.one_process_per_gpu trials "
                "share a process: search it with one process per trial",
            )

    def _check_searcher(self) -> None:
        """Refuse what TPE search and ASHA cannot do reproducibly, naming the keys."""
        if self.scheduler is not None and len(self.seeds) > 1:
            raise ConfigError(
                "scheduler",
                "ASHA stops each trial on its own, so a point's seeds would end at different "
                "epochs and its mean over seeds would mix them: give one seed, or scheduler: null",
            )
        if self.searcher.type != "optuna":
            return
        if self.scheduler is not None:
            raise ConfigError(
                "scheduler",
                "ASHA stops trials by which results arrive first, so searcher.type: optuna "
                "would learn from timing: use scheduler: null",
            )
        if not self.search:
            raise ConfigError("searcher.type", "optuna needs a search block to search")
        grids = [k for k, d in self.search.items() if isinstance(d, Mapping) and "grid" in d]
        if grids:
            raise ConfigError(
                f"search.{grids[0]}",
                "grid is not for searcher.type: optuna (TPE chooses every value): use choice",
            )

    @property
    def n_variants(self) -> int:
        """Trials per sample: seeds x replicates x grid values."""
        grids = [len(d["grid"]) for d in self.search.values() if "grid" in d]
        return len(self.seeds) * self.replicates * math.prod(grids)

    @property
    def n_trials(self) -> int:
        """Total number of trials of the sweep."""
        return self.num_samples * self.n_variants

    def searched_data_keys(self) -> list[str]:
        """Search keys that change the data config (their trials prepare their own data)."""
        return [k for k in self.search if k.startswith(DATA_PREFIX)]

    def wandb_runs(self) -> SweepRuns | None:
        """The W&B project, mode and group of the trials' runs (None: W&B is disabled)."""
        if self.wandb.mode == "disabled":
            return None
        return SweepRuns(self.wandb.project, self.wandb.mode, self.wandb.group or self.name)


@dataclass(frozen=True)
class LoadedSweep:
    """A validated sweep with its resolved base configs."""

    spec: SweepSpec
    train: TrainConfig
    data: DataConfig
    source: str  # the sweep file


def load_sweep(path: str | Path, overrides: Mapping[str, Any] | None = None) -> LoadedSweep:
    """Read and validate a sweep file and the train/data configs it names.

    Args:
        path: The sweep YAML file.
        overrides: Dotted-key overrides of the sweep file (``{"replicates": 4}``).

    Returns:
        The spec plus its base train and data configs (with the file's overrides applied).

    Raises:
        ConfigError: Any problem, naming the file and key.
    """
    path = Path(path)
    raw = read_yaml(path, allow_empty=False)  # an empty file is a mistake, not the defaults
    try:
        raw = {**raw, "seeds": _seed_list(raw.get("seeds", [42]))}
        spec = config_from_dict(SweepSpec, raw, overrides)
        base = path.parent
        train = _base_config(load_train_config, base, spec.train_config, spec.train, "train")
        data = _base_config(load_data_config, base, spec.data_config, spec.data, "data")
        check_search(spec.search, train, data)
    except ConfigError as err:
        raise ConfigError(err.key, err.message, err.source or str(path)) from None
    return LoadedSweep(spec, train, _absolute_paths(data), str(path))


# --- internals -----------------------------------------------------------------------------


def _seed_list(seeds: Any) -> Any:
    """Accept ``[1, 2, 3]``, a single integer or ``{count: 3, base: 0}``."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return [seeds]
    if isinstance(seeds, Mapping):
        unknown = set(seeds) - {"count", "base"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"seeds.{key}", "unknown key" + suggest(key, ["count", "base"]))
        count, base = seeds.get("count"), seeds.get("base", 0)
        if not isinstance(count, int) or count < 1 or not isinstance(base, int) or base < 0:
            raise ConfigError("seeds", f"got {dict(seeds)!r}; allowed: count >= 1, base >= 0")
        return list(range(base, base + count))
    return seeds


def _base_config(loader, folder: Path, file: str | None, overrides: dict, section: str):
    """Load a base config (its errors name its file), then the sweep's overrides of it."""
    base = loader(None if file is None else folder / file)
    try:
        return config_from_dict(type(base), config_to_dict(base), flatten_dict(overrides))
    except ConfigError as err:
        raise ConfigError(f"{section}.{err.key}", err.message) from None


def _absolute_paths(data: DataConfig) -> DataConfig:
    """Trials run in a temporary working folder: make file paths absolute."""
    changes = {}
    if data.data_path.endswith(".h5ad") or "/" in data.data_path:
        changes["data_path"] = str(Path(data.data_path).expanduser().resolve())
    if data.cache_dir is not None:
        changes["cache_dir"] = str(Path(data.cache_dir).expanduser().resolve())
    return dataclasses.replace(data, **changes)
