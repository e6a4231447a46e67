"""Build and run the Tuner: resources, callbacks, storage, restore.

``run_sweep`` connects to (or starts) Ray, prepares the data once, runs every trial of a
validated sweep and writes ``summary.json``, ``results.csv`` and ``best/`` into the sweep
folder ``<storage>/<name>/``; then, with Ray shut down, seals (``SHA256SUMS``) and verifies
them, makes the post-sweep outputs (embeddings, pictures, report, W&B report run), and last
seals every file again.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweeper.cluster import (
    Placement,
    connect,
    keep_credentials_out_of_runtime_envs,
    plan_placement,
    worker_env,
)
from sweeper.options import DriverOptions, check_before_ray, discard_unstarted, sweep_dir
from sweeper.results import Outputs, Summary, collect_results, write_spec_record, write_summary
from sweeper.search import SUGGESTION, searched_values
from sweeper.searchers import known_trials, tune_search
from sweeper.spec import LoadedSweep
from sweeper.storage import SweepFolder
from sweeper.verify.records import Verification
from sweeper.verify.seal import write_seal
from trainables.config import TrainConfig
from trainables.constants import TUNE_REPLICATE, WANDB_CONFIG, WANDB_SUMMARY
from trainables.host import TrainingHosts
from trainables.schema import config_to_dict

TUNE_DRIVER_ENV = {
    # Tune's driver takes each trial's result every epoch, and a trial in its own process
    # waits for that. Saving the experiment state after every result cut the results it takes
    # per second several times over (scripts/bench_driver.py); Tune's default throttle
    # (>= 10 s) could lose a trial that started and finished between two saves, which
    # --resume would then train again. A trial that finished after the last save but is in
    # it finds its synced run.json instead.
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    # Tune's TensorBoard logger halves the results it takes per second; the CSV and JSON
    # logs of each trial are kept (``tune_callbacks``). Set to 0 for TensorBoard files too.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Ray replaces builtins.print in the driver the first time it prints a worker's log lines
    # (for its distributed tqdm bars). numba cannot compile a function that calls a Python
    # print, and scanpy's neighbours (pynndescent) compile one on a cold numba cache: the
    # embeddings and UMAPs after the sweep then fail in a fresh install.
    "RAY_TQDM_PATCH_PRINT": "0",
}
"""Environment of the driver's Tune (each key only where the user has not set it)."""
OUTPUTS_LOG = "outputs-error.log"
"""The traceback of a failed post-sweep output, in the sweep folder."""


def trial_table(
    sweep: LoadedSweep, n_gpus: int, n_cpus: float | None = None
) -> list[dict[str, Any]]:
    """One row per trial known before the sweep starts (``known_trials``): for ``--dry-run``.

    ``n_cpus``: the CPUs Ray will have (None: unknown, as on a cluster not yet connected to).
    """
    gpu = plan_placement(sweep, n_gpus, n_cpus).gpu_share
    return [
        {
            "trial": i,
            **({SUGGESTION: config[SUGGESTION]} if SUGGESTION in config else {}),
            "seed": config["train"]["seed"],
            TUNE_REPLICATE: config[TUNE_REPLICATE],
            **searched_values(sweep, config),
            "cpus": sweep.spec.resources.cpus_per_trial,
            "gpus": round(gpu, 4),
        }
        for i, config in enumerate(known_trials(sweep))
    ]


def placement_text(sweep: LoadedSweep, n_gpus: int, n_cpus: float | None = None) -> str:
    """Where the trials will train and at which ``group_width``, in a line: for ``--dry-run``.

    ``n_cpus`` as for :func:`trial_table`: each trial reserves ``cpus_per_trial`` of them, so
    they can cap the trials at once, and with them the group width.
    """
    placement = plan_placement(sweep, n_gpus, n_cpus)
    width = placement.group_width or 1
    if placement.in_groups:
        at_once = placement.trials_at_once_per_gpu
        where = f"one process per GPU ({n_gpus})" if n_gpus else "one process on the CPUs"
        unlimited = plan_placement(sweep, n_gpus).trials_at_once_per_gpu
        cpus = (
            f" ({n_cpus:g} CPUs, {sweep.spec.resources.cpus_per_trial:g} per trial)"
            if n_cpus is not None and at_once < unlimited
            else ""
        )
        return (
            f"placement: {where}, each training up to {at_once} trials at once{cpus} in groups "
            f"of {width} (group_width {width}: the trials' bits depend on it)"
        )
    share = f", {placement.gpu_share:.4g} of a GPU each" if n_gpus else " on the CPUs"
    return f"placement: a process per trial{share} (group_width {width})"


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep found and made: its verification, the HTML report of it, its summary."""

    verification: Verification
    report: str
    summary: Summary


def run_sweep(
    sweep: LoadedSweep,
    options: DriverOptions,
    extra_callbacks: Sequence[Any] = (),
    on_verdict: Callable[[Verification, str], None] | None = None,
) -> SweepOutcome:
    """Run (or resume) a sweep to the end, seal and verify its results, then make its outputs.

    The verdict comes first: the trials' files are sealed and verified, and the verification
    written, before any embedding, picture, report or W&B report run is made, so a failing
    output can neither hide nor prevent it. The outputs are sealed too, at the end.

    Args:
        sweep: The validated sweep (``apply_options`` already applied).
        options: GPUs, CPUs, cluster address and resume flag.
        extra_callbacks: Further ``ray.tune.Callback`` objects (progress hooks, monitors).
        on_verdict: Called with the verification and its report's location as soon as they
            are written (the command line prints them there).

    Returns:
        The verification, its report and the summary written to ``summary.json``
        (``outputs.error`` says why outputs failed).

    Raises:
        SweepError: The sweep folder exists without ``--resume``, there is nothing to resume,
            or the cluster lacks the GPUs asked for.
    """
    from sweeper.verify.report import publish_verification

    folder = sweep_dir(sweep)
    summary = run_trials(sweep, options, extra_callbacks)
    write_seal(folder)
    verification, html = publish_verification(folder)
    if on_verdict is not None:
        on_verdict(verification, html)
    summary = publish_outputs(sweep, folder, summary, verification)
    write_seal(folder)
    return SweepOutcome(verification, html, summary)


def run_trials(
    sweep: LoadedSweep, options: DriverOptions, extra_callbacks: Sequence[Any] = ()
) -> Summary:
    """Run (or resume) every trial and write ``summary.json``, ``results.csv`` and ``best/``.

    No seal, verification or outputs: :func:`run_sweep` adds them.

    Raises:
        SweepError: As :func:`run_sweep`.
    """
    import ray

    from trainables.data import prepare_data

    folder = sweep_dir(sweep)
    created = check_before_ray(sweep, options)
    for key, value in TUNE_DRIVER_ENV.items():
        os.environ.setdefault(key, value)
    hosts: TrainingHosts | None = None
    started = False
    try:
        # Data are prepared once, before Ray starts, and shipped through the object store,
        # unless the sweep searches data keys: then each trial prepares its own (cached).
        shared = None if sweep.spec.searched_data_keys() else prepare_data(sweep.data)
        keep_credentials_out_of_runtime_envs()
        n_gpus, n_cpus, started = connect(options, worker_env(sweep))
        if len([n for n in ray.nodes() if n["Alive"]]) > 1:
            folder.check_visible_from_all_nodes()
        placement = plan_placement(sweep, n_gpus, n_cpus, options.spread_replicates)
        width = write_spec_record(folder, sweep, placement.group_width, resume=options.resume)
        sweep = replace(sweep, train=replace(sweep.train, group_width=width))
        if placement.in_groups:  # the reference is held while the hosts live
            warm = warm_up_configs(sweep) if shared is not None else []
            shared = ray.put(shared) if shared is not None else None
            hosts = TrainingHosts.start(n_gpus, placement.host_slots, shared, warm)
        ending = ExperimentEnd(sweep.spec.n_trials)
        callbacks = [*extra_callbacks, ending]
        tuner = _make_tuner(sweep, folder, placement, (shared, hosts), options.resume, callbacks)
        grid = tuner.fit()
    except BaseException:  # a failure, or Ctrl-C twice: keep what can be resumed, no more
        _stop(hosts, started)
        discard_unstarted(folder, options.resume, created)
        raise
    _stop(hosts, started)
    if ending.unfinished:  # Ctrl-C: Tune stopped the trials and saved its state
        raise SweepInterrupted(f"{ending.unfinished} trial(s) unfinished", folder)
    return collect_results(sweep, folder, grid)


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped (Ctrl-C) before its trials finished; ``--resume`` continues it."""

    def __init__(self, what: str, folder: SweepFolder):
        super().__init__(f"{what}; its state is saved in {folder}: continue with --resume")


class ExperimentEnd(Callback):
    """Counts the sweep's trials that had not ended when Tune's run did.

    A trial ended when it errored, its last result is done (it trained every epoch, or the
    scheduler stopped it), or a run before this one ended it: a resumed run keeps the trials
    its saved state holds as terminated, and runs them no more. Their saved last result is no
    evidence: Tune (2.60, ``TuneController._process_trial_result``) marks a trial done that
    returned by updating its last result in place, which its cached JSON for the saved state
    does not see; a save between the trial's last result and its return (each second at
    ``TUNE_GLOBAL_CHECKPOINT_S=1``, now and then) leaves ``done`` False there for good.
    After a Ctrl-C Tune saves its state, then stops the running trials, marks them terminated
    and returns as if done; trials the searcher had not suggested yet are not among its trials
    at all: hence the count against the sweep's own number of trials.
    """

    def __init__(self, n_trials: int):
        self.n_trials = n_trials
        self.unfinished = 0
        self._ended_before: set[str] | None = None  # trial ids; None: no step yet

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Note, at the first step, the trials an earlier run ended (restored terminated)."""
        if self._ended_before is None:
            self._ended_before = {t.trial_id for t in trials if t.status == "TERMINATED"}

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Count the trials that did not end."""
        self.on_step_begin(0, trials)  # no step ran: nothing has started or stopped
        ended = sum(
            t.trial_id in self._ended_before
            or t.status == "ERROR"
            or (t.status == "TERMINATED" and bool(t.last_result.get("done")))
            for t in trials
        )
        self.unfinished = self.n_trials - ended


def _stop(hosts: TrainingHosts | None, started: bool) -> None:
    import ray

    if hosts is not None:
        hosts.stop()
    if started:
        ray.shutdown()


def publish_outputs(
    sweep: LoadedSweep, folder: SweepFolder, summary: Summary, verification: Verification
) -> Summary:
    """Embed and picture the best trials, compare with PCA, write the report; update summary.

    The embedded trials also get the scIB benchmark (``sweeper.benchmark``) when scib-metrics
    is installed. The W&B report run (unless W&B is disabled) holds the pictures, the best
    trials' scores, their scIB tables and the verification's verdict.

    Never raises for a failing output: the trials' results stand whatever happens here. The
    error goes into ``summary.outputs.error`` in one line, its traceback into
    ``outputs-error.log`` in the sweep folder.
    """
    from sweeper.outputs import benchmark_outputs, write_outputs, write_sweep_report
    from trainables.data import prepare_data

    outputs = Outputs()
    try:
        data = prepare_data(sweep.data) if folder.local is not None else None  # disk cache
        outputs = write_outputs(sweep, folder, summary, data)
        summary = replace(summary, outputs=outputs)
        write_summary(folder, summary)
        if folder.local is not None:
            baselines = sweep.spec.outputs.baselines
            outputs = benchmark_outputs(folder, summary, baselines)  # when installed
            summary = replace(summary, outputs=outputs)
            write_summary(folder, summary)
        write_sweep_report(folder, summary)
        if folder.local is not None and sweep.spec.wandb.mode != "disabled":
            from sweeper.tracking import log_report

            images = {p.stem: p for p in sorted(folder.local.glob("*.png"))}
            for entry in outputs.best:
                for name, path in (("umap", entry.umap_png), ("loss", entry.loss_png)):
                    if path is not None:
                        images[f"{entry.trial_id}/{name}"] = folder.local / path
            log_report(sweep, folder.local, summary, images, verification)
    except Exception as err:  # any failure of an extra: record it, keep the results
        folder.write_bytes(OUTPUTS_LOG, traceback.format_exc().encode())
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        error = f"{type(err).__name__}: {reason} (traceback: {folder}/{OUTPUTS_LOG})"
        summary = replace(summary, outputs=replace(outputs, error=error))
        write_summary(folder, summary)
    return summary


def warm_up_configs(sweep: LoadedSweep) -> list[TrainConfig]:
    """The train configs of the trials known before the sweep starts, for the hosts to warm."""
    from trainables.ray_trainable import trial_configs

    base_train, base_data = config_to_dict(sweep.train), config_to_dict(sweep.data)
    return [trial_configs(c, base_train, base_data)[0] for c in known_trials(sweep)]


def _make_tuner(
    sweep: LoadedSweep,
    folder: SweepFolder,
    placement: Placement,
    shared: tuple[Any, TrainingHosts | None],
    resume: bool,
    callbacks: list[Any],
):
    from ray import tune
    from ray.tune.experimental import output
    from ray.tune.schedulers import ASHAScheduler

    from trainables.ray_trainable import tune_trainable

    spec = sweep.spec
    # A trial's W&B config and summary ride on its results; Tune's terminal tables of a
    # trial's last result leave them out, as they leave out its config.
    output.BLACKLISTED_KEYS.update({WANDB_CONFIG, WANDB_SUMMARY})
    data, hosts = shared  # data prepared once (or None), training hosts (or None)
    trainable = tune.with_parameters(
        tune_trainable,
        base_train=config_to_dict(sweep.train),
        base_data=config_to_dict(sweep.data),
        data=None if hosts else data,  # hosts hold it already
        checkpoint_every=spec.checkpoint_every,
        storage=folder.location,
        hosts=hosts,
        wandb=spec.wandb_runs(),
    )
    trainable = tune.with_resources(trainable, placement.resources)
    search = tune_search(sweep, placement.max_concurrent(spec.max_concurrent_trials))
    callbacks = [*tune_callbacks(sweep, folder), *callbacks]
    if resume:
        tuner = tune.Tuner.restore(
            folder.location,
            trainable=trainable,
            param_space=search.param_space,
            resume_unfinished=True,
            resume_errored=True,
        )
        # Tune runs a restored sweep with the callbacks pickled when its first run started
        # (Tuner.restore takes none): this run's own go in their place, or a Ctrl-C of the
        # resumed run would go unnoticed. Only the search's stay the restored ones: they
        # hold the restored searcher.
        run_config = tuner._local_tuner.get_run_config()
        kinds = tuple(type(c) for c in search.callbacks)
        restored = [c for c in run_config.callbacks or [] if kinds and isinstance(c, kinds)]
        run_config.callbacks = [*callbacks, *restored]
        return tuner
    scheduler = None
    if spec.scheduler is not None:
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=spec.scheduler.max_t or sweep.train.n_epochs,
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return tune.Tuner(
        trainable,
        param_space=search.param_space,
        tune_config=tune.TuneConfig(
            # Only the scheduler ranks trials during the sweep; the best trial is picked from
            # the results afterwards (integration scores exist only in a trial's last result).
            metric=spec.metric if scheduler else None,
            mode=spec.mode if scheduler else None,
            num_samples=search.num_samples,
            # The search algorithm holds the concurrency limit (Tune's max_concurrent_trials
            # is ignored with a variant generator).
            search_alg=search.algorithm,
            scheduler=scheduler,
            reuse_actors=True,  # no process start, imports or CUDA context per trial
        ),
        run_config=tune.RunConfig(
            name=folder.name,
            storage_path=folder.storage_path,
            callbacks=[*callbacks, *search.callbacks],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            sync_config=tune.SyncConfig(sync_artifacts=True),  # run.json + model.pt
            verbose=1,  # the trial table, not every trial's full config
        ),
    )


def tune_callbacks(sweep: LoadedSweep, folder: SweepFolder) -> list[Any]:
    """The driver's Tune callbacks: each trial's CSV and JSON logs, and W&B unless disabled."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    logs = [CSVLoggerCallback(), JsonLoggerCallback()]  # each trial's progress.csv, result.json
    if sweep.spec.wandb.mode == "disabled":
        return logs
    from sweeper.tracking import wandb_callback

    # W&B writes on the driver's machine: the sweep folder, or ./runs/<name> for cloud storage
    return [*logs, wandb_callback(sweep, folder.local or Path.cwd() / "runs" / folder.name)]
