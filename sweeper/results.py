"""A finished sweep on disk: ``sweep.json``, ``summary.json``, ``results.csv`` and ``best/``.

``summary.json`` lists every trial with its seed, replicate, searched values, status, final
metrics, fingerprint, environment and the path of its ``run.json``; the replicate analysis
reads it without Ray.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sweeper.benchmark.records import Benchmark
from sweeper.search import SUGGESTION, searched_values
from sweeper.spec import LoadedSweep, SweepError
from sweeper.storage import SweepFolder
from sweeper.verify.comparison import bit_environment
from trainables.constants import METRIC_KEYS, MODEL_FILE, RUN_FILE, TUNE_REPLICATE
from trainables.files import ResultFileError
from trainables.integration import INTEGRATION_KEYS
from trainables.run_record import Digests, RunRecord
from trainables.schema import config_to_dict, read_record, record_from_dict

SPEC_FILE = "sweep.json"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.csv"
BEST_DIR = "best"

COMPLETED, STOPPED, ERRORED = "completed", "stopped_early", "errored"
TrialStatus = Literal["completed", "stopped_early", "errored"]


@dataclass(frozen=True)
class TrialEntry:
    """One trial of a finished sweep, as ``summary.json`` lists it.

    Attributes:
        trial_dir: The trial's folder, relative to the sweep folder.
        params: The searched values of the trial (no seed, no replicate).
        metrics: Its last epoch's metrics and its integration scores.
        fingerprint: The digests its ``run.json`` recorded (None: it did not complete).
        environment: What its run ran on that bears on bit equality (``bit_environment``).
        run_json: Its ``run.json``, relative to the sweep folder (None: it did not complete).
        error: Why it errored, in one line.
        suggestion: Its point's place in suggestion order (TPE search; None: random search).
    """

    trial_id: str
    trial_dir: str
    status: TrialStatus
    seed: int
    replicate: int
    params: dict[str, Any]
    epochs: int
    restored: bool
    metrics: dict[str, int | float]
    fingerprint: Digests | None
    environment: dict[str, Any] | None
    run_json: str | None
    error: str | None = None
    suggestion: int | None = None


@dataclass(frozen=True)
class SeedGroup:
    """One hyperparameter point: the sweep metric's mean and std over its seeds."""

    params: dict[str, Any]
    seeds: tuple[int, ...]
    n_trials: int
    mean: float
    std: float
    suggestion: int | None = None  # its place in suggestion order (TPE search)


@dataclass(frozen=True)
class BestOutput:
    """What was made for one of the best trials: files relative to the sweep folder."""

    trial_id: str
    embedding: str
    loss_png: str | None = None
    umap_png: str | None = None


@dataclass(frozen=True)
class Outputs:
    """The post-sweep outputs: the best trials' files, the PCA baseline's scores, any error."""

    best: tuple[BestOutput, ...] = ()
    baseline_pca: dict[str, float] | None = None
    error: str | None = None  # why the outputs are incomplete, in one line
    benchmark: Benchmark | None = None  # the best trials' scIB tables (scib-metrics)


@dataclass(frozen=True)
class Summary:
    """A finished sweep's ``summary.json``."""

    FILE_NAME = SUMMARY_FILE

    name: str
    metric: str
    mode: Literal["min", "max"]
    searcher_seed: int | None
    n_trials: int
    n_completed: int
    n_errored: int
    best_trial: str | None
    groups: tuple[SeedGroup, ...]
    trials: tuple[TrialEntry, ...]
    outputs: Outputs | None = None
    best_point: SeedGroup | None = None  # the best mean over seeds

    def trial(self, trial_id: str) -> TrialEntry:
        """The trial with this id.

        Raises:
            KeyError: No such trial.
        """
        for entry in self.trials:
            if entry.trial_id == trial_id:
                return entry
        raise KeyError(trial_id)


def spec_record(sweep: LoadedSweep) -> dict[str, Any]:
    """What defines the sweep's trials: the spec and the resolved base configs."""
    return {
        "spec": config_to_dict(sweep.spec),
        "train": config_to_dict(sweep.train),
        "data": config_to_dict(sweep.data),
    }


def write_spec_record(
    folder: SweepFolder, sweep: LoadedSweep, group_width: int | None, resume: bool
) -> int | None:
    """Record the sweep definition, its trials' group width and the driver's environment.

    ``group_width`` is the width the placement planned (``sweeper.cluster``). On resume the
    record is checked to be unchanged and the recorded width is returned instead, so trials
    resumed on another number of GPUs keep the bits of an uninterrupted sweep.

    Returns:
        The ``group_width`` the sweep's trials train at.

    Raises:
        SweepError: Resuming with a sweep file whose trials differ from the recorded ones.
    """
    path = f"{folder}/{SPEC_FILE}"
    current = spec_record(sweep)
    if resume and folder.exists(SPEC_FILE):
        recorded = folder.read_json(SPEC_FILE)
        if {k: recorded.get(k) for k in current} != json.loads(json.dumps(current)):
            raise SweepError(
                f"{sweep.source} no longer matches the sweep recorded in {path}: resume with "
                "the original file, or start a new sweep with --name"
            )
        return recorded.get("group_width", group_width)  # records before widths: the plan's
    from trainables.provenance import get_environment_info

    folder.write_json(
        SPEC_FILE,
        {
            **current,
            "group_width": group_width,
            "source": sweep.source,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "driver_environment": get_environment_info(),
        },
    )
    return group_width


def collect_results(sweep: LoadedSweep, folder: SweepFolder, grid: Any) -> Summary:
    """Summarise a Tune ``ResultGrid`` into ``summary.json``, ``results.csv`` and ``best/``."""
    trials = sorted((_trial_entry(sweep, folder, result) for result in grid), key=_trial_id)
    best = next(iter(ranked_trials(trials, sweep.spec.metric, sweep.spec.mode)), None)
    groups = seed_groups(trials, sweep.spec.metric)
    summary = Summary(
        name=sweep.spec.name,
        metric=sweep.spec.metric,
        mode=sweep.spec.mode,
        searcher_seed=sweep.spec.searcher_seed,
        n_trials=len(trials),
        n_completed=sum(t.status == COMPLETED for t in trials),
        n_errored=sum(t.status == ERRORED for t in trials),
        best_trial=best.trial_id if best else None,
        groups=groups,
        trials=tuple(trials),
        best_point=best_group(groups, sweep.spec.mode),
    )
    if best is not None:
        for name in (RUN_FILE, MODEL_FILE):
            folder.copy(f"{best.trial_dir}/{name}", f"{BEST_DIR}/{name}")
    folder.write_bytes(RESULTS_FILE, results_csv(trials).encode())
    write_summary(folder, summary)  # last: a complete summary means a complete sweep
    return summary


def write_summary(folder: SweepFolder, summary: Summary) -> None:
    """Write ``summary.json`` (atomically on local and shared filesystems)."""
    folder.write_json(SUMMARY_FILE, config_to_dict(summary))


def load_summary(folder: str | Path) -> Summary:
    """Read a sweep's ``summary.json``.

    Raises:
        ResultFileError: Missing, corrupt or not a sweep summary (the message names the file
            and the key).
    """
    return read_record(Summary, Path(folder) / SUMMARY_FILE)


def seed_groups(trials: list[TrialEntry], metric: str) -> tuple[SeedGroup, ...]:
    """Per hyperparameter point: the metric's mean and std over seeds (replicate 0 of each).

    Points of a TPE search come in suggestion order, each suggestion its own point.
    """
    groups: dict[tuple[int, str], list[TrialEntry]] = {}
    for trial in sorted(trials, key=lambda t: -1 if t.suggestion is None else t.suggestion):
        if trial.status == COMPLETED:
            key = (trial.suggestion, json.dumps(trial.params, sort_keys=True))
            groups.setdefault(key, []).append(trial)
    rows = []
    for members in groups.values():
        per_seed: dict[int, float] = {}
        for t in sorted(members, key=lambda t: t.replicate):
            per_seed.setdefault(t.seed, t.metrics.get(metric, math.nan))
        values = list(per_seed.values())
        rows.append(
            SeedGroup(
                params=members[0].params,
                seeds=tuple(sorted(per_seed)),
                n_trials=len(members),
                mean=statistics.fmean(values),
                std=statistics.stdev(values) if len(values) > 1 else 0.0,
                suggestion=members[0].suggestion,
            )
        )
    return tuple(rows)


def best_group(groups: tuple[SeedGroup, ...], mode: str) -> SeedGroup | None:
    """The point with the best mean over seeds (ties: the first; None: no point has a mean)."""
    done = [g for g in groups if not math.isnan(g.mean)]
    return min(done, key=lambda g: -g.mean if mode == "max" else g.mean, default=None)


def results_csv(trials: list[TrialEntry]) -> str:
    """One CSV row per trial: ids, searched values, status, final metrics, weights hash."""
    params = sorted({k for t in trials for k in t.params})
    header = ["trial_id", "status", "seed", TUNE_REPLICATE, *params, "epochs", *METRIC_KEYS[1:]]
    header += list(INTEGRATION_KEYS)
    header += ["weights_sha256", "run_json"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    for t in trials:
        row = {
            "trial_id": t.trial_id,
            "status": t.status,
            "seed": t.seed,
            TUNE_REPLICATE: t.replicate,
            "epochs": t.epochs,
            "run_json": t.run_json,
            "weights_sha256": t.fingerprint.weights if t.fingerprint else None,
        }
        writer.writerow({**row, **t.params, **t.metrics})
    return out.getvalue()


def _trial_id(trial: TrialEntry) -> str:
    return trial.trial_id


def _trial_entry(sweep: LoadedSweep, folder: SweepFolder, result: Any) -> TrialEntry:
    trial_dir = folder.relative(result.path)
    run_json = f"{trial_dir}/{RUN_FILE}"
    metrics = result.metrics or {}
    config = result.config
    record = None
    if folder.exists(run_json):
        try:
            record = record_from_dict(RunRecord, folder.read_json(run_json))
        except (ResultFileError, ValueError):  # unreadable, or not a run record
            record = None
    if result.error is not None:
        status = ERRORED
    elif record is not None:
        status = COMPLETED
    else:
        status = STOPPED
    final = metrics  # the last reported result; a completed run's own record wins
    if record and record.history:
        final = record.final_result()
    return TrialEntry(
        trial_id=metrics.get("trial_id") or trial_dir,
        trial_dir=trial_dir,
        status=status,
        seed=config["train"]["seed"],
        replicate=config[TUNE_REPLICATE],
        params=searched_values(sweep, config),
        epochs=int(final.get("epoch", 0)),
        restored=metrics.get("iterations_since_restore") != metrics.get("training_iteration"),
        metrics={k: final[k] for k in (*METRIC_KEYS, *INTEGRATION_KEYS) if k in final},
        fingerprint=record.fingerprint.digests if record else None,
        environment=bit_environment(record) if record else None,
        run_json=run_json if record else None,
        error=None if result.error is None else error_reason(result.error),
        suggestion=config.get(SUGGESTION),
    )


def error_reason(error: BaseException) -> str:
    """The line of a trial's error that says what went wrong (a traceback ends with it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


def ranked_trials(trials: list[TrialEntry] | tuple[TrialEntry, ...], metric: str, mode: str):
    """Completed trials with a value for ``metric``, best first (ties keep trial order)."""
    done = [
        t
        for t in trials
        if t.status == COMPLETED and not math.isnan(t.metrics.get(metric, math.nan))
    ]
    return sorted(done, key=lambda t: t.metrics[metric], reverse=mode == "max")
