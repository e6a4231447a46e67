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
import posixpath
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeper.search import searched_values
from sweeper.spec import LoadedSweep, SweepError
from sweeper.storage import SweepFolder
from trainables.constants import METRIC_KEYS, MODEL_FILE, RUN_FILE, TUNE_REPLICATE
from trainables.files import ResultFileError, read_json
from trainables.integration import INTEGRATION_KEYS
from trainables.run_record import final_result, run_environment
from trainables.schema import config_to_dict

SPEC_FILE = "sweep.json"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.csv"
BEST_DIR = "best"

COMPLETED, STOPPED, ERRORED = "completed", "stopped_early", "errored"


def spec_record(sweep: LoadedSweep) -> dict[str, Any]:
    """What defines the sweep's trials: the spec and the resolved base configs."""
    return {
        "spec": config_to_dict(sweep.spec),
        "train": config_to_dict(sweep.train),
        "data": config_to_dict(sweep.data),
    }


def write_spec_record(folder: SweepFolder, sweep: LoadedSweep, resume: bool) -> None:
    """Record the sweep definition and the driver's environment; on resume, check it is unchanged.

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
        return
    from trainables.provenance import get_environment_info

    folder.write_json(
        SPEC_FILE,
        {
            **current,
            "source": sweep.source,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "driver_environment": get_environment_info(),
        },
    )


def collect_results(sweep: LoadedSweep, folder: SweepFolder, grid: Any) -> dict[str, Any]:
    """Summarise a Tune ``ResultGrid`` into ``summary.json``, ``results.csv`` and ``best/``."""
    trials = [_trial_entry(sweep, folder, result) for result in grid]
    trials.sort(key=lambda t: t["trial_id"])
    best = next(iter(ranked_trials(trials, sweep.spec.metric, sweep.spec.mode)), None)
    summary = {
        "name": sweep.spec.name,
        "metric": sweep.spec.metric,
        "mode": sweep.spec.mode,
        "searcher_seed": sweep.spec.searcher_seed,
        "n_trials": len(trials),
        "n_completed": sum(t["status"] == COMPLETED for t in trials),
        "n_errored": sum(t["status"] == ERRORED for t in trials),
        "best_trial": best["trial_id"] if best else None,
        "groups": seed_groups(trials, sweep.spec.metric),
        "trials": trials,
    }
    if best is not None:
        run_dir = posixpath.dirname(best["run_json"])
        for name in (RUN_FILE, MODEL_FILE):
            folder.copy(f"{run_dir}/{name}", f"{BEST_DIR}/{name}")
    folder.write_bytes(RESULTS_FILE, results_csv(trials).encode())
    folder.write_json(SUMMARY_FILE, summary)  # last: a complete summary means a complete sweep
    return summary


def load_summary(folder: str | Path) -> dict[str, Any]:
    """Read a sweep's ``summary.json``.

    Raises:
        ResultFileError: Missing or corrupt (the message names the file).
    """
    return read_json(Path(folder) / SUMMARY_FILE)


def seed_groups(trials: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per hyperparameter point: the metric's mean and std over seeds (replicate 0 of each)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for trial in trials:
        if trial["status"] == COMPLETED:
            groups.setdefault(json.dumps(trial["params"], sort_keys=True), []).append(trial)
    rows = []
    for members in groups.values():
        per_seed = {}
        for t in sorted(members, key=lambda t: t[TUNE_REPLICATE]):
            per_seed.setdefault(t["seed"], t["metrics"].get(metric, math.nan))
        values = list(per_seed.values())
        rows.append(
            {
                "params": members[0]["params"],
                "seeds": sorted(per_seed),
                "n_trials": len(members),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
        )
    return rows


def results_csv(trials: list[dict[str, Any]]) -> str:
    """One CSV row per trial: ids, searched values, status, final metrics, weights hash."""
    params = sorted({k for t in trials for k in t["params"]})
    header = ["trial_id", "status", "seed", TUNE_REPLICATE, *params, "epochs", *METRIC_KEYS[1:]]
    header += list(INTEGRATION_KEYS)
    header += ["weights_sha256", "run_json"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    for t in trials:
        fingerprint = t["fingerprint"] or {}
        writer.writerow(
            {**t, **t["params"], **t["metrics"], "weights_sha256": fingerprint.get("weights")}
        )
    return out.getvalue()


def _trial_entry(sweep: LoadedSweep, folder: SweepFolder, result: Any) -> dict[str, Any]:
    trial_dir = folder.relative(result.path)
    run_json = f"{trial_dir}/{RUN_FILE}"
    metrics = result.metrics or {}
    config = result.config
    record = None
    if folder.exists(run_json):
        try:
            record = folder.read_json(run_json)
        except ResultFileError:
            record = None
    if result.error is not None:
        status = ERRORED
    elif record is not None:
        status = COMPLETED
    else:
        status = STOPPED
    final = metrics  # the last reported result; a completed run's own record wins
    if record and record["history"]:
        final = final_result(record)
    return {
        "trial_id": metrics.get("trial_id") or trial_dir,
        "trial_dir": trial_dir,
        "status": status,
        "seed": config["train"]["seed"],
        TUNE_REPLICATE: config[TUNE_REPLICATE],
        "params": searched_values(sweep, config),
        "epochs": int(final.get("epoch", 0)),
        "restored": metrics.get("iterations_since_restore") != metrics.get("training_iteration"),
        "metrics": {k: final[k] for k in (*METRIC_KEYS, *INTEGRATION_KEYS) if k in final},
        "fingerprint": _digests(record),
        "environment": run_environment(record) if record else None,
        "run_json": run_json if record else None,
        "error": None if result.error is None else error_reason(result.error),
    }


def error_reason(error: BaseException) -> str:
    """The line of a trial's error that says what went wrong (a traceback ends with it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


def _digests(record: dict[str, Any] | None) -> dict[str, str] | None:
    if record is None:
        return None
    return {k: v for k, v in record["fingerprint"].items() if k != "parameters"}


def ranked_trials(trials: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Completed trials with a value for ``metric``, best first (ties keep trial order)."""
    done = [
        t
        for t in trials
        if t["status"] == COMPLETED and not math.isnan(t["metrics"].get(metric, math.nan))
    ]
    return sorted(done, key=lambda t: t["metrics"][metric], reverse=mode == "max")
