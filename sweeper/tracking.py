"""W&B logging of a sweep, driver-side, through Ray's ``WandbLoggerCallback``."""

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

from sweeper.results import Summary
from sweeper.spec import LoadedSweep
from trainables.constants import WANDB_CONFIG_KEYS

# W&B records the git remote itself, keeping the user name of https://user:token@host URLs;
# each run's git state is in its config (git/*), its remote without credentials.
_SETTINGS = wandb.Settings(disable_git=True)
INTERRUPTED_WAIT_S = 10
"""After a Ctrl-C, how long the driver waits for the W&B runs of trials to finish."""


class _LoggingActor(_WandbLoggingActor):
    """Ray's per-trial W&B logging actor, closing its W&B service connection when done.

    Ray kills the actor once its run has finished; W&B's own exit hook then finds its service
    gone and prints a ``ConnectionResetError`` traceback for a run that was saved in full.
    """

    def run(self):
        super().run()
        self._wandb.teardown()


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
    """``WandbLoggerCallback`` that files each trial's configs and provenance under its config.

    A trial sends ``run_config/*`` (its full train and data configs), ``git/*``, ``system/*``,
    ``packages/*`` and ``node/*`` (they describe the node it runs on) with its first result;
    these keys go to ``wandb.config``, not to the history.
    """

    AUTO_CONFIG_KEYS = [*WandbLoggerCallback.AUTO_CONFIG_KEYS, *WANDB_CONFIG_KEYS]
    _logger_actor_cls = _LoggingActor

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

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


def wandb_callback(sweep: LoadedSweep, folder: Path) -> ProvenanceWandbCallback:
    """Build the callback for a sweep: project, group and tags from the spec, a stable ``dir``.

    Runs land in ``<folder>/wandb/``.

    A resumed trial logs to the same W&B run id (``resume="allow"``): online it continues the
    run; offline it writes a second local run folder with that id, which ``wandb sync`` merges.
    The API key, if any, is read from the environment by W&B and never enters a config.
    """
    spec = sweep.spec.wandb
    folder.mkdir(parents=True, exist_ok=True)
    return ProvenanceWandbCallback(
        project=spec.project,
        group=spec.group or sweep.spec.name,
        tags=list(spec.tags),
        mode=spec.mode,
        dir=str(folder),  # stable: Ray may sync the trial folder before W&B finishes
        resume="allow",
        upload_checkpoints=False,
        settings=_SETTINGS,
    )


def log_report(sweep: LoadedSweep, folder: Path, summary: Summary, images: dict[str, Path]) -> None:
    """Log the sweep's pictures and the best trials' integration scores as one W&B run.

    The run joins the sweep's group (``job_type="report"``), offline unless online is asked
    for, and writes beside the trials' runs.
    """
    spec = sweep.spec.wandb
    if spec.mode == "offline":
        os.environ["WANDB_MODE"] = "offline"
    run = wandb.init(
        project=spec.project,
        group=spec.group or sweep.spec.name,
        job_type="report",
        name=f"{sweep.spec.name}-report",
        tags=list(spec.tags),
        mode=spec.mode,
        dir=str(folder),
        config={"best_trial": summary.best_trial, "metric": summary.metric},
        reinit="create_new",
        settings=_SETTINGS,
    )
    run.log({name: wandb.Image(str(path)) for name, path in images.items()})
    baseline = (summary.outputs.baseline_pca if summary.outputs else None) or {}
    run.summary.update({f"baseline_pca/{k}": v for k, v in baseline.items()})
    run.finish()
