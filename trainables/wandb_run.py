"""A run's W&B record: one config layout, one summary, and the direct logger.

``invae-train --wandb``, ``train(..., use_wandb=True)`` and every trial of a sweep lay out their
W&B runs with :func:`wandb_config` and end them with :func:`wandb_summary`:

- config: ``data_*`` (the data config, nested keys joined by ``_``), ``train_*`` (seed,
  determinism, schedule), ``model/*`` (architecture, ``model/n_params``, ``model/layers/*``),
  ``optimizer/*`` (``optimizer/type`` ``"Muon+AdamW"``, ``optimizer/muon_params``,
  ``optimizer/adamw_params``, learning rate and the optimizer settings), ``seeding/*`` (what
  ``set_seed`` set), ``git/*``, ``system/*``, ``packages/*``, and for sweep trials ``node/*``
  and ``trial/*``;
- summary: the final metrics and integration scores, ``fingerprint/weights``,
  ``fingerprint/optimizer``, ``fingerprint/metrics`` and ``run_json``;
- tags: the run's own, plus ``uncommitted-changes`` when the code's git tree was dirty.

Only :class:`WandbLogger` imports wandb, and only when a run logs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from trainables.constants import RUN_FILE, TUNE_DATA, TUNE_REPLICATE, TUNE_TRAIN
from trainables.run_record import (
    Environment,
    RunConfigs,
    RunRecord,
    RunResult,
    Seeding,
    WandbRun,
    run_record,
    write_run,
)
from trainables.schema import config_to_dict, flatten_dict, record_from_dict

if TYPE_CHECKING:
    from trainables.config import DataConfig, TrainConfig
    from trainables.prepared import PreparedData

WandbMode = Literal["off", "offline", "online"]
DIRTY_TAG = "uncommitted-changes"
MAX_GROUP_LENGTH = 128  # W&B's limit on a group name


@dataclass(frozen=True)
class WandbSettings:
    """Where and how a run logs to W&B (offline unless online is asked for).

    Attributes:
        mode: ``off``, ``offline`` (a local run, ``wandb sync`` uploads it) or ``online``.
        dir: The folder W&B writes its ``wandb/`` folder into (None: the current folder).
    """

    mode: WandbMode = "offline"
    project: str = "invae-sweep"
    group: str | None = None
    tags: tuple[str, ...] = ()
    dir: str | None = None


def wandb_config(
    configs: RunConfigs,
    environment: Environment | None = None,
    *,
    seeding: Seeding | None = None,
    model: dict[str, Any] | None = None,
    node: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Lay out a run's W&B config (the module docstring lists the key groups).

    Args:
        configs: The run's train and data configs.
        environment: Where it runs (``get_environment_info``), if known yet.
        seeding: What ``set_seed`` set, once the run has started.
        model: The run record's model metadata (parameter counts, layer shapes), once built.
        node: The Ray node a sweep trial runs on.

    Returns:
        Flat keys with JSON values.
    """
    train = dict(configs.train)
    model_config, optimizer = train.pop("model"), dict(train.pop("optimizer"))
    optimizer["learning_rate"] = train.pop("learning_rate")
    flat = {f"data_{k}": v for k, v in flatten_dict(configs.data or {}, "_").items()}
    flat |= {f"train_{k}": v for k, v in flatten_dict(train, "_").items()}
    flat |= _section("model", model_config)
    flat |= _section("optimizer", optimizer)
    flat |= metadata_config(seeding, model)
    if environment is not None:
        flat |= _section("git", config_to_dict(environment.git))
        flat |= _section("system", config_to_dict(environment.system))
        flat |= _section("packages", environment.packages)
    if node is not None:
        flat |= _section("node", node)
    return flat


def metadata_config(seeding: Seeding | None, model: dict[str, Any] | None) -> dict[str, Any]:
    """The part of the W&B config known once a run has started: seeding and model metadata."""
    flat = {} if model is None else _model_metadata(model)
    return flat | ({} if seeding is None else _section("seeding", config_to_dict(seeding)))


def record_wandb_config(record: RunRecord) -> dict[str, Any]:
    """The whole W&B config of a finished run, from its record."""
    return wandb_config(
        record.config,
        record.environment,
        seeding=record.seeding,
        model=record.model,
        node=record.trial.node if record.trial else None,
    )


def wandb_summary(record: RunRecord, run_json: str | None) -> dict[str, Any]:
    """A finished run's W&B summary: final metrics, integration, fingerprint, ``run_json``."""
    return {**record.final_result(), **record_identity(record, run_json)}


def record_identity(record: RunRecord, run_json: str | None) -> dict[str, Any]:
    """The summary keys that name a run's bits and record: its digests and ``run.json``."""
    digests = config_to_dict(record.fingerprint.digests)
    return {**{f"fingerprint/{part}": d for part, d in digests.items()}, "run_json": run_json}


def tags(own: tuple[str, ...] | list[str], git_dirty: bool | None) -> list[str]:
    """A run's tags: its own, then ``uncommitted-changes`` when the git tree was dirty."""
    return [*own, *([DIRTY_TAG] if git_dirty and DIRTY_TAG not in own else [])]


def point_group(base: str, trial_config: dict[str, Any]) -> str:
    """The W&B group of a sweep trial: one per (hyperparameters, seed) point.

    Replicates of a point differ only in their replicate index, so they share the group and
    W&B shows them side by side: ``<base>/seed=0`` or ``<base>/seed=0,learning_rate=0.001``
    (a digest of the point stands in for values too long for a group name).
    """
    point = {k: v for k, v in trial_config.items() if k != TUNE_REPLICATE}
    values = flatten_dict({**point.get(TUNE_TRAIN, {}), **point.get(TUNE_DATA, {})})
    seed = values.pop("seed", None)
    label = ",".join([f"seed={seed}", *(f"{k.split('.')[-1]}={v}" for k, v in values.items())])
    name = f"{base}/{label}"
    if len(name) <= MAX_GROUP_LENGTH:
        return name
    digest = hashlib.sha256(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()
    return f"{base[: MAX_GROUP_LENGTH - 25]}/seed={seed},{digest[:12]}"


@dataclass(frozen=True)
class SweepRuns:
    """How a sweep's trials log to W&B: one run per trial, named by its trial id.

    Attributes:
        group: The sweep's group; each trial's run goes to its point's group under it
            (``point_group``).
    """

    project: str
    mode: str
    group: str

    def trial_run(self, trial_id: str, trial_config: dict[str, Any]) -> WandbRun:
        """The W&B run of a trial (Ray's W&B callback names it by the trial id)."""
        return WandbRun(self.project, trial_id, point_group(self.group, trial_config), self.mode)


def train_logged(
    train_cfg: TrainConfig,
    data: DataConfig | PreparedData,
    settings: WandbSettings,
    report: Any = None,
    *,
    data_config: DataConfig | None = None,
    out_dir: Path | None = None,
    **train_kwargs: Any,
) -> RunResult:
    """``train()`` with a direct W&B run: config at the start, history, summary at the end.

    Args:
        train_cfg: The training config.
        data: A data config, or data prepared from ``data_config``.
        settings: The W&B run's mode, project, group, tags and folder.
        report: Called with each epoch's metrics after they are logged.
        data_config: The data config of prepared ``data`` (for the record and the layout).
        out_dir: Write ``run.json`` and ``model.pt`` here before the W&B run ends, so that its
            summary names the ``run.json``.
        train_kwargs: ``checkpoint_every`` and ``resume``, as ``train()`` takes them.

    Returns:
        The result; ``result.wandb`` names the W&B run, and ``run.json`` records it.
    """
    from trainables.config import DataConfig
    from trainables.provenance import get_environment_info
    from trainables.train import train

    data_cfg = data if isinstance(data, DataConfig) else data_config
    configs = RunConfigs(config_to_dict(train_cfg), data_cfg and config_to_dict(data_cfg))
    with WandbLogger(settings, configs, get_environment_info()) as logger:
        result = train(train_cfg, data, report=logger.reporting(report), **train_kwargs)
        result = replace(result, wandb=logger.identity)
        if out_dir is None:
            logger.finish(run_record(result, data_cfg))
        else:
            record = write_run(result, out_dir, data_cfg)
            logger.finish(record, str((Path(out_dir) / RUN_FILE).resolve()))
    return result


class WandbLogger:
    """A direct W&B run for one training run (``invae-train``, ``train(use_wandb=True)``).

    Used as a context manager: a run left unfinished when the block raises is finished with
    exit code 1 (a crash, a diverged loss, Ctrl-C), so the offline run is complete either way.
    """

    def __init__(self, settings: WandbSettings, configs: RunConfigs, environment: dict[str, Any]):
        import wandb  # optional: only imported when logging is asked for

        if settings.mode == "offline":
            os.environ["WANDB_MODE"] = "offline"  # the keyword alone still asks for an API key
        env = record_from_dict(Environment, environment)
        # Absolute, and the current folder by default: W&B keeps the folder of its first run
        # in a process, and its service process resolves relative paths in its own folder.
        folder = Path(settings.dir or ".").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self._mode = settings.mode
        self._finished = False
        self.run = wandb.init(
            project=settings.project,
            group=settings.group,
            tags=tags(settings.tags, env.git.is_dirty),
            mode=settings.mode,
            dir=str(folder),
            config=wandb_config(configs, env),
            settings=wandb.Settings(disable_git=True),  # W&B's own git record keeps URL users
        )

    @property
    def identity(self) -> WandbRun:
        """The run's project, id, group and mode, for ``run.json``."""
        return WandbRun(self.run.project, self.run.id, self.run.group or None, self._mode)

    def reporting(self, report: Any = None) -> Any:
        """A ``report`` callback for ``train()`` that logs each epoch, then calls ``report``."""

        def log_and_report(metrics: dict[str, float], *state: Any) -> None:
            self.run.log(dict(metrics), step=int(metrics["epoch"]))
            if report is not None:
                report(metrics, *state)

        return log_and_report

    def finish(self, record: RunRecord, run_json: str | None = None) -> None:
        """Complete the config from the record, write the summary, keep ``run.json``, finish."""
        self.run.config.update(record_wandb_config(record), allow_val_change=True)
        self.run.summary.update(wandb_summary(record, run_json))
        if run_json is not None:
            keep_file(self.run, Path(run_json))
        self.run.finish()
        self._finished = True

    def __enter__(self) -> WandbLogger:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if not self._finished:
            self.run.finish(exit_code=1 if error is not None else 0)
            self._finished = True


def keep_file(run: Any, path: Path) -> None:
    """Copy a file into a W&B run's files (uploaded with it, online now or by ``wandb sync``)."""
    import shutil

    if path.is_file():
        shutil.copyfile(path, Path(run.dir) / path.name)
        run.save(str(Path(run.dir) / path.name), base_path=run.dir, policy="now")


def _section(name: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{name}/{k}": v for k, v in flatten_dict(values, "/").items()}


def _model_metadata(model: dict[str, Any]) -> dict[str, Any]:
    """Parameter counts (total, per optimizer), layer shapes and device of a run's model."""
    per_optimizer = model.get("n_params_per_optimizer", {})
    flat: dict[str, Any] = {"model/n_params": model.get("n_params")}
    flat |= {f"model/layers/{name}": shape for name, shape in model.get("layers", {}).items()}
    flat["model/device"] = model.get("device")
    flat["optimizer/type"] = "+".join(per_optimizer)
    flat |= {f"optimizer/{name.lower()}_params": n for name, n in per_optimizer.items()}
    return flat
