"""W&B logging of a sweep, driver-side, through Ray's ``WandbLoggerCallback``.

Each trial's run has the layout of ``trainables.wandb_run`` (the one ``invae-train --wandb``
writes), goes to its point's group (``point_group``: replicates side by side), and is tagged
with the spec's tags and ``uncommitted-changes`` when the driver's git tree is dirty. The
sweep's report run holds its pictures, the best trials' scores and scIB tables, and the
verification verdict.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray
import wandb
from ray.air.integrations.wandb import (
    WandbLoggerCallback,
    _force_on_current_node,
    _QueueItem,
    _WandbLoggingActor,
)

from sweeper.benchmark.records import Benchmark
from sweeper.results import Summary
from sweeper.spec import LoadedSweep, WandbSpec
from sweeper.verify.records import Verification
from trainables.constants import TUNE_REPLICATE, WANDB_CONFIG, WANDB_SUMMARY
from trainables.run_record import RunConfigs
from trainables.schema import config_to_dict
from trainables.wandb_run import SweepRuns, keep_file, point_group, tags, wandb_config

# W&B records the git remote itself, keeping the user name of https://user:token@host URLs;
# each run's git state is in its config (git/*), its remote without credentials.
_SETTINGS = wandb.Settings(disable_git=True)
INTERRUPTED_WAIT_S = 10
"""After a Ctrl-C, how long the driver waits for the W&B runs of trials to finish."""


class _LoggingActor(_WandbLoggingActor):
    """Ray's per-trial W&B logging actor: the trial's config and summary go where they belong.

    A result's ``wandb_config`` updates the run's config; ``wandb_summary`` (the run's digests
    and ``run.json``, with the last result) goes with that result's metrics into the run's
    summary. Neither enters the history. When done, the actor closes its W&B service
    connection: Ray kills the actor once its run has finished, and W&B's own exit hook would
    find its service gone and print a ``ConnectionResetError`` for a run saved in full.
    """

    def run(self):
        super().run()
        self._wandb.teardown()

    def _handle_result(self, result):
        result = dict(result)
        result.pop("config", None)  # Tune's trial config: the run's config has it, laid out
        config = result.pop(WANDB_CONFIG, None) or {}
        summary = result.pop(WANDB_SUMMARY, None)
        log, config_update = super()._handle_result(result)
        if summary:  # the last result: final metrics and scores, digests, run.json
            self._wandb.run.summary.update({**log, **summary})
            keep_file(self._wandb.run, Path(summary["run_json"]))  # if storage is local
        return log, {**config_update, **config}


class _PipelinedQueue:
    """A trial's W&B queue whose ``put`` never waits for the queue actor, except at the end.

    Tune's callback waits for every result to reach the trial's queue actor: ~15 ms per result
    on 2 cores, and ~1.6 s for a trial's first result on 16 cores, while the actor starts; the
    driver takes no other trial's result meanwhile. Here items that come while a batch is on
    its way wait in order and go as the next batch once it has landed: one batch in flight at
    a time keeps their order (the queue actor is asynchronous, so Ray would not keep the order
    of several). The trial's last item (``END``) waits for the batch before it and goes at
    once, with whatever waited.
    """

    def __init__(self, queue):
        self._queue, self._in_flight, self._waiting = queue, None, []

    def put(self, item) -> None:
        self._waiting.append(item)
        if self._in_flight is not None:
            if item[0] == _QueueItem.END:  # nothing will follow to carry what waits
                ray.get(self._in_flight)
            elif not ray.wait([self._in_flight], timeout=0)[0]:
                return
        self._in_flight = self._queue.actor.put_nowait_batch.remote(self._waiting)
        self._waiting = []


class ProvenanceWandbCallback(WandbLoggerCallback):
    """``WandbLoggerCallback`` that lays out each trial's run as ``invae-train`` lays out its own.

    At the start a run gets the trial's configs (``data_*``, ``train_*``, ``model/*``,
    ``optimizer/*``), ``trial/*`` and ``sweep/name``; the trial adds its environment and node
    with its first result, and its seeding, model metadata and summary with its last. Ray's
    own per-result keys (trial id, host, pid, date) are left out: ``node/*`` has them.
    """

    AUTO_CONFIG_KEYS: list[str] = []
    _logger_actor_cls = _LoggingActor

    def __init__(self, sweep: LoadedSweep, *args, **kwargs):
        ray_keys = [*WandbLoggerCallback.AUTO_CONFIG_KEYS, "seed", TUNE_REPLICATE]
        super().__init__(*args, excludes=ray_keys, **kwargs)
        self._sweep = sweep
        self._base = config_to_dict(sweep.train), config_to_dict(sweep.data)  # trials' bases
        self._ended: set[str] = set()  # trials that completed or failed in this run

    def on_experiment_end(self, trials, **info) -> None:
        """Wait for every trial's run to finish; after a Ctrl-C, briefly.

        Tune's callback waits ``upload_timeout`` (30 minutes) for each logging actor to finish
        its run, but only a trial that ended tells its actor to, and after a Ctrl-C Tune marks
        the stopped trials terminated without ending them. Runs of trials that did not end are
        told to finish, and any run not finished within ``INTERRUPTED_WAIT_S`` is given up
        (``--resume`` logs to the same run id).
        """
        unfinished = [t for t in self._trial_logging_actors if t.trial_id not in self._ended]
        if not unfinished:
            super().on_experiment_end(trials, **info)
            return
        for trial in unfinished:
            self._signal_logging_actor_stop(trial=trial)
        self._cleanup_logging_actors(timeout=INTERRUPTED_WAIT_S, kill_on_timeout=True)

    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs) -> None:
        """Start the trial's logging actor as Tune does, but with no credential in its options.

        Tune's callback ships ``WANDB_API_KEY`` to its logging actors in their
        ``runtime_env``, which Ray's runtime-env agent writes in plain text to its log in
        Ray's session folder. The actors run on this node (the driver's) and find the key as
        W&B does anywhere: in the environment they inherit, or from ``wandb login``.
        """
        if not self._remote_logger_class:
            self._remote_logger_class = ray.remote(
                num_cpus=0, **_force_on_current_node(), max_restarts=-1, max_task_retries=-1
            )(self._logger_actor_cls)
        wandb_init_kwargs["config"] = self._trial_config(trial)
        wandb_init_kwargs["group"] = point_group(self.group, trial.config)
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

    def _trial_config(self, trial) -> dict:
        """The trial's configs in the W&B layout, with its id, replicate and sweep."""
        from trainables.ray_trainable import trial_configs

        train, data, replicate = trial_configs(trial.config, *self._base)
        configs = RunConfigs(config_to_dict(train), config_to_dict(data))
        return {
            **wandb_config(configs),
            "trial/id": trial.trial_id,
            "trial/replicate": replicate,
            "sweep/name": self._sweep.spec.name,
        }

    def log_trial_end(self, trial, failed: bool = False) -> None:
        """Note that the trial ended (completed or failed), then end its run as Tune does."""
        self._ended.add(trial.trial_id)
        super().log_trial_end(trial, failed)

    def log_trial_start(self, trial) -> None:
        """Start the trial's W&B logging actor and queue, as Tune does; pipeline the queue."""
        super().log_trial_start(trial)  # starts the trial's logging actor and its queue
        queue = self._trial_queues.get(trial)
        if queue is not None and not isinstance(queue, _PipelinedQueue):
            self._trial_queues[trial] = _PipelinedQueue(queue)


def driver_git_dirty() -> bool | None:
    """Whether the code the driver runs has uncommitted changes (None: not in git)."""
    from trainables.provenance import git_info

    return git_info()["is_dirty"]


def wandb_callback(sweep: LoadedSweep, folder: Path) -> ProvenanceWandbCallback:
    """Build the callback for a sweep: project, groups and tags from the spec, a stable ``dir``.

    Runs land in ``<folder>/wandb/``.

    A resumed trial logs to the same W&B run id (``resume="allow"``): online it continues the
    run; offline it writes a second local run folder with that id, which ``wandb sync`` merges.
    The API key, if any, is read from the environment by W&B and never enters a config.

    Args:
        sweep: The sweep: its W&B spec, name and base configs.
        folder: Where W&B writes its run folders.
    """
    runs = sweep.spec.wandb_runs()
    folder.mkdir(parents=True, exist_ok=True)
    return ProvenanceWandbCallback(
        sweep,
        project=runs.project,
        group=runs.group,
        tags=tags(sweep.spec.wandb.tags, driver_git_dirty()),
        mode=runs.mode,
        job_type="trial",
        dir=str(folder.resolve()),  # stable: Ray may sync the trial folder before W&B ends
        resume="allow",
        upload_checkpoints=False,
        settings=_SETTINGS,
    )


def log_report(
    sweep: LoadedSweep,
    folder: Path,
    summary: Summary,
    images: dict[str, Path],
    verification: Verification,
) -> None:
    """Log the sweep's pictures, best trials' scores and verification verdict as one W&B run.

    The run goes to the sweep's group (``job_type="report"``), offline unless online is asked
    for, and writes beside the trials' runs.
    """
    run = _sweep_run(sweep.spec.wandb, summary, folder, "report")
    run.log({name: wandb.Image(str(path)) for name, path in images.items()})
    baseline = (summary.outputs.baseline_pca if summary.outputs else None) or {}
    run.summary.update({f"baseline_pca/{k}": v for k, v in baseline.items()})
    if summary.best_trial is not None:
        best = summary.trial(summary.best_trial)
        run.summary.update({f"best/{k}": v for k, v in best.metrics.items()})
    run.summary.update(verification_summary(verification))
    log_benchmark(run, folder, summary.outputs.benchmark if summary.outputs else None)
    run.finish()


def log_benchmark_run(spec: WandbSpec, summary: Summary, folder: Path) -> None:
    """Log a sweep's scIB benchmark, made after the sweep, as a W&B run of its group."""
    run = _sweep_run(spec, summary, folder, "benchmark")
    log_benchmark(run, folder, summary.outputs.benchmark if summary.outputs else None)
    run.finish()


def _sweep_run(spec: WandbSpec, summary: Summary, folder: Path, job_type: str):
    """Start a W&B run of the sweep's group (offline unless online is asked for)."""
    runs = SweepRuns(spec.project, spec.mode, spec.group or summary.name)
    if runs.mode == "offline":
        os.environ["WANDB_MODE"] = "offline"
    return wandb.init(
        project=runs.project,
        group=runs.group,
        job_type=job_type,
        name=f"{summary.name}-{job_type}",
        tags=tags(spec.tags, driver_git_dirty()),
        mode=runs.mode,
        dir=str(folder.resolve()),  # W&B's service process has a folder of its own
        config={
            "sweep/name": summary.name,
            "best_trial": summary.best_trial,
            "metric": summary.metric,
        },
        reinit="create_new",
        settings=_SETTINGS,
    )


def log_benchmark(run, folder: Path, benchmark: Benchmark | None) -> None:
    """Put the scIB tables and plots in a W&B run; ``scib/<trial>/<embedding>/<metric>``."""
    from sweeper.benchmark.report import table_rows

    if benchmark is None:
        return
    run.summary["scib/library"] = benchmark.library
    if benchmark.absent is not None:
        run.summary["scib/absent"] = benchmark.absent
    for trial in benchmark.trials:
        rows = table_rows(trial)
        columns = list(rows[0])
        table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
        logged: dict = {f"scib/{trial.trial_id}/table": table}
        if trial.plot_png is not None:
            plot = folder / trial.folder / trial.plot_png
            logged[f"scib/{trial.trial_id}/plot"] = wandb.Image(str(plot))
        run.log(logged)
        for row in rows:
            flat = {k: v for k, v in row.items() if isinstance(v, float)}
            prefix = f"scib/{trial.trial_id}/{row['embedding']}"
            run.summary.update({f"{prefix}/{k}": v for k, v in flat.items()})


def verification_summary(verification: Verification) -> dict:
    """The verdict of a sweep's verification, flat: for the report run's summary."""
    flat = {
        "verification/verdict": verification.verdict,
        "verification/exit_code": verification.exit_code,
        "verification/seal_intact": verification.seal.intact,
        "verification/seal_sha256": verification.seal.sha256,
    }
    flat |= {f"verification/groups/{status}": n for status, n in verification.counts.items()}
    return flat
