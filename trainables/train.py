"""One inVAE training run: ``train(cfg, data, report=...) -> RunResult``. No Ray.

W&B is imported only when a run asks to log (``use_wandb=True``, through
``trainables.wandb_run``). ``main()`` trains once with the default config files.

The whole dataset lives on the training device for the whole run; minibatches are gathered
from a permutation drawn by a seeded ``torch.Generator``, so no randomness is unseeded. A run
that is given the same config, data and environment produces the same bits.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from trainables.concurrency import PROCESS_LOCK, HostCopy, Lane
from trainables.config import DataConfig, TrainConfig
from trainables.fingerprint import fingerprint
from trainables.fused import (
    N_TRAIN_SUMS,
    GroupShape,
    TrialGroup,
    kl_weight,
)
from trainables.latent import embedding_integration, latent_means
from trainables.model import InVAE, LossTerms
from trainables.prepared import PreparedData, Split
from trainables.provenance import get_environment_info
from trainables.run_record import RunResult
from trainables.seeding import set_seed, torch_generator

if TYPE_CHECKING:
    from trainables.wandb_run import WandbSettings

# report(metrics) every epoch; report(metrics, state) on checkpoint epochs.
Report = Callable[..., None]


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the epoch and the terms."""


@dataclass(frozen=True)
class DeviceSplit:
    """One split's tensors on the training device."""

    counts: Tensor  # (n_cells, n_genes)
    bio: Tensor  # (n_cells, n_bio)
    tech: Tensor  # (n_cells, n_tech)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(counts, bio, tech)``."""
        return self.counts, self.bio, self.tech

    @classmethod
    def from_split(cls, split: Split, device: torch.device) -> DeviceSplit:
        """Copy a host split to ``device`` once."""
        # A copy: arrays shipped through Ray's object store are read-only.
        return cls(*(torch.tensor(a, device=device) for a in _arrays(split)))


def resolve_device(name: str) -> torch.device:
    """Map ``auto | cpu | cuda | cuda:N`` to a device; ``auto`` takes CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available")
    return torch.device(name)


def train(
    train_cfg: TrainConfig,
    data: DataConfig | PreparedData,
    report: Report | None = None,
    *,
    checkpoint_every: int = 0,
    resume: dict[str, Any] | None = None,
    use_wandb: bool = False,
    wandb: WandbSettings | None = None,
) -> RunResult:
    """Train one inVAE model.

    Args:
        train_cfg: Seed, determinism, schedule, model and optimizer settings.
        data: A data config (prepared here, through the on-disk cache) or prepared data.
        report: Called once per epoch with the metrics row; on checkpoint epochs it is called
            as ``report(metrics, state)`` with a resumable state (see ``training_state``).
        checkpoint_every: Pass a state every this many epochs (0: never).
        resume: A state from an earlier ``report`` call: training continues after its epoch
            and ends bit-for-bit where an uninterrupted run would.
        use_wandb: Log the run to W&B directly (the layout of ``trainables.wandb_run``),
            offline into ``./wandb`` unless ``wandb`` says otherwise. Logging does not change
            the run's bits.
        wandb: Mode, project, group, tags and folder of the W&B run (implies ``use_wandb``).

    Returns:
        The run's result, including its fingerprint (and its W&B run, when it logged).

    Raises:
        NonFiniteLossError: A loss became NaN or infinite.
    """
    if use_wandb or wandb is not None:
        from trainables.wandb_run import WandbSettings, train_logged

        settings = wandb or WandbSettings()
        if settings.mode != "off":
            resumable = {"checkpoint_every": checkpoint_every, "resume": resume}
            return train_logged(train_cfg, data, settings, report, **resumable)
    started = time.perf_counter(), time.time()
    if isinstance(data, PreparedData):
        prepared = data
    else:  # imported here: AnnData, pandas and scikit-learn add ~1.5 s to every worker's start
        from trainables.data import prepare_data

        prepared = prepare_data(data)
    trial = Trial(train_cfg, report, checkpoint_every, resume, started)
    (outcome,) = train_group([trial], prepared)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def main(use_wandb: bool = False) -> RunResult:
    """Train once with the default configs: seed 42, deterministic, simulated data.

    The defaults are those of ``configs/train_config.yaml`` and ``configs/data_config.yaml``
    (500 epochs on the pancreas-shape simulated data: for a GPU).

    Args:
        use_wandb: Also log to W&B, offline into ``./wandb``.

    Returns:
        The run's result (write it with ``trainables.run_record.write_run``).
    """
    from trainables import config

    train_cfg, data_cfg = config.load_train_config(), config.load_data_config()
    result = train(train_cfg, data_cfg, use_wandb=use_wandb)
    print(f"seed {train_cfg.seed}: weights sha256 {result.fingerprint.weights}")
    return result


@dataclass
class Trial:
    """A training to run in a group: its config, what it reports to, where it resumes from."""

    cfg: TrainConfig
    report: Report | None = None
    checkpoint_every: int = 0
    resume: dict[str, Any] | None = None
    started: tuple[float, float] | None = None  # perf_counter, Unix time (None: when it starts)


@dataclass
class _Slot:
    """A trial while it trains: its slot, shuffling generator, progress and timings."""

    trial: Trial
    cfg: TrainConfig  # with the group width resolved
    slot: int
    seeding: dict[str, Any]
    generator: torch.Generator
    started: tuple[float, float]
    environment: dict[str, Any]  # when it joined: a kept group outlives a git commit
    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_ends: list[float] = field(default_factory=list)
    integration: dict[str, float] = field(default_factory=dict)  # after the last epoch


Outcome = Callable[["RunResult | Exception"], None]
"""Called once when a trial in a group ends: with its result, or with what ended it."""


class GroupRunner:
    """Trials of one :class:`GroupShape` training in one ``TrialGroup``; see :func:`train_group`.

    A trial joins (:meth:`add`) between epochs, trains one epoch per :meth:`run_epoch` beside
    the others and leaves when it ends: done, failed (a non-finite loss, its ``report``
    raising) or cancelled. The group, its compiled code and its CUDA graph stay for the next
    trials, on these data or on others of the same sizes (:meth:`load`). Its CUDA streams
    (``lane``) are its own: no other group replays a graph captured on them.

    Args:
        shape: The group's shape (``shape_of``).
        prepared: The data its trials train on.
    """

    def __init__(self, shape: GroupShape, prepared: PreparedData):
        self.shape, self.prepared = shape, prepared
        self.device = torch.device(shape.device)
        self.lane = Lane(self.device)
        with self.on_lane():
            self.train_set = DeviceSplit.from_split(prepared.train, self.device)
            self.val_set = DeviceSplit.from_split(prepared.val, self.device)
        self.group: TrialGroup | None = None
        self.running: list[tuple[_Slot, Outcome]] = []
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="finish")
        self._finishing: list[Future] = []
        self._pending: _Epoch | None = None  # launched by start_epoch, not yet finished
        self.warm_up_s: float | None = None  # how long warm_up took, if the group had one

    @staticmethod
    def shape_of(cfg: TrainConfig, prepared: PreparedData) -> GroupShape:
        """The group shape a trial trains in, on these data."""
        device = resolve_device(cfg.device)
        cfg = replace(cfg, group_width=cfg.group_width or 1)
        sizes = (prepared.n_genes, prepared.n_bio, prepared.n_tech)
        return GroupShape.of(cfg, (*sizes, prepared.train.n_cells, prepared.val.n_cells), device)

    def can_load(self, prepared: PreparedData) -> bool:
        """Whether :meth:`load` can put these data in place of the group's."""
        return _layout(prepared) == _layout(self.prepared)

    def load(self, prepared: PreparedData) -> None:
        """Train on other data of the same sizes and dtypes from now on (``can_load``).

        Copied into the group's device tensors, where its CUDA graph reads them: a trial
        gets the bits it would get from a new group on these data.
        """
        if prepared is self.prepared:
            return
        if self.running or not self.can_load(prepared):
            raise ValueError("the group cannot take these data now")
        splits = (self.train_set, prepared.train), (self.val_set, prepared.val)
        with self.on_lane():
            for device_split, split in splits:
                for tensor, array in zip(device_split.tensors(), _arrays(split), strict=True):
                    tensor.copy_(torch.from_numpy(np.array(array)))
        self.prepared = prepared

    def has_room(self) -> bool:
        """Whether a slot is free."""
        return len(self.running) < self.shape.width

    def add(self, trial: Trial, on_end: Outcome) -> None:
        """Put a trial into a free slot; it trains from the next :meth:`run_epoch` on.

        Raises:
            ValueError: The trial has another shape, or no slot is free.
        """
        if self.shape_of(trial.cfg, self.prepared) != self.shape:
            raise ValueError("the trial's shape is not the group's")
        if not self.has_room():
            raise ValueError(f"all {self.shape.width} slots of the group are taken")
        cfg = replace(trial.cfg, group_width=self.shape.width)
        if trial.resume is not None:
            try:
                progress = check_state(trial.resume)
            except ValueError as err:
                on_end(err)
                return
        with self.on_lane():
            seeding, model = self._initialise(cfg)
            started = trial.started or (time.perf_counter(), time.time())
            generator = torch_generator(cfg.seed, self.device)
            run = _Slot(trial, cfg, -1, seeding, generator, started, get_environment_info())
            if trial.resume is None:
                run.slot = self.group.admit(cfg, model.state_dict())
            else:
                run.epoch, run.step, run.history = progress
                generator.set_state(trial.resume["shuffle_generator"])
                state = trial.resume["model"], trial.resume["optimizer"]
                run.slot = self.group.admit(cfg, *state, step=run.step)
        self.running.append((run, on_end))

    def _initialise(self, cfg: TrainConfig) -> tuple[dict[str, Any], InVAE]:
        """Seed the process for ``cfg`` and build its module; make the group if there is none.

        Returns:
            What ``set_seed`` set, and the module, initialised from the seed.
        """
        with PROCESS_LOCK:  # the global RNGs: parameters are drawn from them
            seeding = set_seed(
                cfg.seed, cfg.deterministic, cfg.cpu_threads, cfg.cuda_matmul_precision
            )
            n_features = self.prepared.n_genes, self.prepared.n_bio, self.prepared.n_tech
            model = InVAE(*n_features, cfg.model).to(self.device)
        if self.group is None:
            tensors = self.train_set.tensors(), self.val_set.tensors()
            self.group = TrialGroup(self.shape, *tensors, model, self.lane)
        return seeding, model

    def warm_up(self, cfg: TrainConfig, epochs: int | None = None) -> None:
        """Make the group and run its first epochs before any trial joins, every slot empty.

        A group's first epoch compiles its code and its second captures its CUDA graph (on
        a cold Inductor cache a minute on an H200); warmed up while a sweep's trial workers
        start, the trials then join a group that replays its graph from their first epoch.
        A trial's bits do not change: it joins as it would join a group that trained others
        before it (its slot is written whole on admission, and slots share no arithmetic).

        Args:
            cfg: A config of the group's shape (its seed initialises the empty slots).
            epochs: Epochs to run (None: as many as compile and capture need, so none for an
                eager group).

        Raises:
            ValueError: ``cfg`` has another shape, or trials are in the group.
        """
        if self.shape_of(cfg, self.prepared) != self.shape:
            raise ValueError("the config's shape is not the group's")
        if self.running:
            raise ValueError("trials are in the group: it is warm")
        if self.group is not None:  # kept from earlier trials: warm already
            return
        if epochs is None:
            epochs = 2 if self.shape.cuda_graphs else int(self.shape.compile)
        tick = time.perf_counter()
        with self.on_lane():
            self._initialise(cfg)
            for _ in range(epochs):
                self.group.run_epoch(self.group.placeholder_batches())
            if self.lane.main is not None:
                self.lane.main.synchronize()
        self.warm_up_s = time.perf_counter() - tick

    def on_lane(self):
        """A context in which work runs on the group's own CUDA stream (none on the CPU).

        Everything that touches the group's tensors runs there, in order: admissions, data
        loads, epochs, reads of a slot.
        """
        return torch.cuda.stream(self.lane.main) if self.lane.main is not None else nullcontext()

    def run_epoch(self) -> None:
        """Train every trial of the group one epoch; end those that are done or failed."""
        self.start_epoch()
        self.finish_epoch()

    def start_epoch(self) -> None:
        """Launch an epoch of every trial of the group; :meth:`finish_epoch` reads it.

        On a GPU this returns once the epoch is queued on the group's stream, so a process
        can launch the epochs of its other groups before it waits for any (their streams run
        side by side on the GPU).
        """
        if not self.running or self._pending is not None:
            return
        group, shape = self.group, self.shape
        tick = time.perf_counter()
        with self.on_lane():
            placed = group.placeholder_batches()
            for run, _ in self.running:
                placed[run.slot] = minibatches(
                    shape.n_train, shape.batch_size, run.generator, self.device
                )
            sums = HostCopy(group.run_epoch(placed))
        self._pending = _Epoch(tick, placed.shape[1], sums)

    def finish_epoch(self) -> None:
        """Wait for the epoch :meth:`start_epoch` launched; report it; end trials done or failed."""
        if self._pending is None:
            return
        epoch, self._pending = self._pending, None
        sums = epoch.sums.values()
        when = time.perf_counter() - epoch.started, time.time()
        group, still = self.group, []
        with self.on_lane():
            for run, on_end in self.running:
                try:
                    row = _record_epoch(run, group, sums[run.slot], epoch.n_batches, when)
                    if run.epoch < run.cfg.n_epochs:
                        state = lambda run=run: training_state(run, group.slot_state(run.slot))  # noqa: E731
                        _report(run, row, state)
                        still.append((run, on_end))
                        continue
                    # Scored and written beside the group's next epochs, not before them.
                    model_state, optimizer_state = group.slot_state(run.slot)
                    every = run.trial.checkpoint_every
                    last_is_checkpoint = every and run.epoch % every == 0
                    snapshot = model_state, optimizer_state
                    state = training_state(run, snapshot) if last_is_checkpoint else None
                    finished = _Finished(run, row, model_state, optimizer_state, state)
                    group.release(run.slot)
                    self._finishing.append(self._pool.submit(self._end, finished, on_end))
                    continue
                except Exception as err:  # this trial alone ends; the others go on
                    group.release(run.slot)
                    on_end(err)
        self.running = still

    def _end(self, finished: _Finished, on_end: Outcome) -> None:
        try:
            outcome = _finish(finished, self)
        except Exception as err:
            outcome = err
        on_end(outcome)

    def wait(self) -> None:
        """Wait until every trial that has left the group has its outcome."""
        for future in self._finishing:
            future.result()
        self._finishing.clear()


def train_group(trials: list[Trial], prepared: PreparedData) -> list[RunResult | Exception]:
    """Train trials of one shape side by side, as one batched computation (``trainables.fused``).

    Each trial ends with the bits it has alone: its slot shares no arithmetic with the others,
    and the group's width is fixed by the trials' configs. A trial that fails (a non-finite
    loss, or its ``report`` raising) leaves the group; the others go on.

    Args:
        trials: At most ``group_width`` trials whose configs have one ``GroupShape``.
        prepared: The data they all train on.

    Returns:
        Per trial, in order, its result or what ended it.

    Raises:
        ValueError: The trials do not fit in one group.
    """
    shapes = {GroupRunner.shape_of(t.cfg, prepared) for t in trials}
    if len(shapes) > 1:
        raise ValueError(f"trials of {len(shapes)} shapes cannot train in one group")
    (shape,) = shapes
    if len(trials) > shape.width:
        raise ValueError(f"{len(trials)} trials do not fit a group of width {shape.width}")
    outcomes: list[RunResult | Exception | None] = [None] * len(trials)
    runner = _idle_runner(shape, prepared) or GroupRunner(shape, prepared)
    for i, trial in enumerate(trials):
        runner.add(trial, lambda outcome, i=i: outcomes.__setitem__(i, outcome))
    while runner.running:
        runner.run_epoch()
    runner.wait()
    if runner.lane.main is not None:
        runner.lane.main.synchronize()  # nothing of these trials may run on when it is reused
    with PROCESS_LOCK:
        _IDLE_RUNNERS.append(runner)
        del _IDLE_RUNNERS[:-IDLE_RUNNERS_KEPT]
    return outcomes


IDLE_RUNNERS_KEPT = 4
"""Groups a process keeps after :func:`train_group` for the next trials of their shapes."""
_IDLE_RUNNERS: list[GroupRunner] = []  # the most recently used last


def _idle_runner(shape: GroupShape, prepared: PreparedData) -> GroupRunner | None:
    """A kept group of this shape that can take these data, taken out of the kept ones.

    A process that trains trial after trial (Ray reuses its workers) then compiles and
    captures once per shape, and its GPU memory stays that of one group per shape.
    """
    with PROCESS_LOCK:
        for i, runner in enumerate(reversed(_IDLE_RUNNERS)):
            if runner.shape == shape and runner.can_load(prepared):
                del _IDLE_RUNNERS[len(_IDLE_RUNNERS) - 1 - i]
                runner.load(prepared)
                return runner
    return None


def _arrays(split: Split) -> tuple[Any, Any, Any]:
    return split.counts, split.bio, split.tech


def _layout(prepared: PreparedData) -> tuple[tuple[tuple[int, ...], np.dtype], ...]:
    """Shape and dtype of every array of the data's splits: what a kept group can load."""
    splits = prepared.train, prepared.val
    return tuple((np.shape(a), np.asarray(a).dtype) for s in splits for a in _arrays(s))


def _record_epoch(
    run: _Slot, group: TrialGroup, sums: list[float], n_batches: int, when: tuple[float, float]
) -> dict[str, float]:
    """Add an epoch to a trial's history (``when``: its seconds, its end as Unix time)."""
    cfg, shape = run.cfg, group.shape
    metrics = epoch_metrics(sums, (n_batches, shape.batch_size), run.step, cfg, shape.n_val)
    run.step += n_batches
    row = {"epoch": run.epoch + 1, **metrics}
    run.epoch_seconds.append(when[0])
    run.epoch_ends.append(when[1])
    check_finite(row)
    run.history.append(row)
    run.epoch += 1
    return row


def _report(run: _Slot, row: dict[str, float], state: Callable[[], dict[str, Any]]) -> None:
    """Report an epoch's row, with a resumable state (``state()``) on checkpoint epochs."""
    report, every = run.trial.report, run.trial.checkpoint_every
    if report is not None and every and run.epoch % every == 0:
        report(row, state())
    elif report is not None:
        report(row)


@dataclass(frozen=True)
class _Epoch:
    """A group's epoch launched by ``GroupRunner.start_epoch``, not yet read."""

    started: float  # perf_counter
    n_batches: int
    sums: HostCopy


@dataclass(frozen=True)
class _Finished:
    """A trial's last epoch, taken out of its group: what its result is built from."""

    run: _Slot
    row: dict[str, float]
    model_state: dict[str, Tensor]  # on the CPU
    optimizer_state: dict[str, Any]
    state: dict[str, Any] | None  # resumable, when the last epoch is a checkpoint epoch


def _finish(finished: _Finished, runner: GroupRunner) -> RunResult:
    """Score a finished trial's embedding, report its last epoch, build its result."""
    run, prepared = finished.run, runner.prepared
    model = copy.deepcopy(runner.group.model.template).cpu()
    model.load_state_dict(finished.model_state)
    val = prepared.val
    z_i, _ = latent_means(model, val.counts, val.bio, val.tech)
    run.integration = embedding_integration(z_i, val.bio_codes, val.tech_codes)
    _report(run, {**finished.row, **run.integration}, lambda: finished.state)
    optimizer_states = [{**finished.optimizer_state, "step": run.step}]
    seconds = run.epoch_seconds
    return RunResult(
        train_config=run.cfg,
        data=prepared.summary(),
        integration=run.integration,
        seeding=run.seeding,
        environment=run.environment,
        model_info={**runner.group.model_summary(), "device": str(runner.device)},
        history=run.history,
        fingerprint=fingerprint(finished.model_state, optimizer_states, run.history),
        model_state=finished.model_state,
        optimizer_states=optimizer_states,
        timing={
            "total_s": time.perf_counter() - run.started[0],
            "started_unix": run.started[1],
            "finished_unix": time.time(),
            "epochs_run": len(seconds),
            "mean_epoch_s": sum(seconds) / max(len(seconds), 1),
            "epoch_s": seconds,  # of the group; the first includes compilation and capture
            # compilation and capture before any trial joined (GroupRunner.warm_up), if any
            "group_warm_up_s": runner.warm_up_s,
            "epoch_end_unix": run.epoch_ends,
            # of the whole process: trainings running beside this one count too
            "max_gpu_memory_bytes": (
                torch.cuda.max_memory_allocated(runner.device)
                if runner.device.type == "cuda"
                else None
            ),
        },
    )


def minibatches(n_cells: int, batch_size: int, generator: torch.Generator, device) -> Tensor:
    """Shuffle the cells and cut them into full minibatches, ``(n_batches, batch_size)``.

    The incomplete last minibatch is dropped (other cells each epoch, as the order is
    reshuffled), so every step has one shape; with fewer cells than ``batch_size``, all cells
    form one minibatch.
    """
    order = torch.randperm(n_cells, generator=generator, device=device)
    size = min(batch_size, n_cells)
    return order[: n_cells // size * size].view(-1, size)


def epoch_metrics(
    sums: list[float], batches: tuple[int, int], step: int, cfg: TrainConfig, n_val: int
) -> dict[str, float]:
    """An epoch's metrics from a slot's sums (``trainables.fused.TrialGroup.run_epoch``).

    Cell-weighted means of the loss terms; ``val_loss`` uses β_end; ``beta`` is that of the
    epoch's last step (the epoch's first step is the run's ``step``-th).
    """
    train_sums, val_sums = sums[:N_TRAIN_SUMS], sums[N_TRAIN_SUMS:]
    n_steps, size = batches
    means = [v / (n_steps * size) for v in train_sums[:5]] + [train_sums[5] / n_steps]
    names = ("train_loss", "recon", "kl_i", "kl_s", "indep", "grad_norm")
    val = LossTerms(*(v / n_val for v in val_sums))
    return {
        **dict(zip(names, means, strict=True)),
        "beta": kl_weight(step + n_steps - 1, cfg),
        "val_loss": val.total(cfg.beta_end, cfg.indep_weight),
        "val_recon": val.recon,
        "val_kl_i": val.kl_i,
        "val_kl_s": val.kl_s,
        "val_indep": val.indep,
    }


def check_finite(row: dict[str, float]) -> None:
    """Raise :class:`NonFiniteLossError` naming every non-finite metric of an epoch."""
    bad = {k: v for k, v in row.items() if not math.isfinite(v)}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(f"epoch {row['epoch']}: non-finite loss ({terms})")


STATE_FORMAT = "fused-1"
"""The layout of a resumable state: one slot of a ``TrialGroup`` (``trainables.fused``)."""


def training_state(run: _Slot, slot_state: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """Everything needed to continue a trial bit-for-bit after the epochs it has run.

    ``slot_state``: its group's ``slot_state`` of its slot, now. No noise state: a step's
    random numbers are a function of the seed and the step.
    """
    model, optimizer = slot_state
    return {
        "format": STATE_FORMAT,
        "epoch": run.epoch,
        "step": run.step,
        "model": model,
        "optimizer": optimizer,
        "shuffle_generator": run.generator.get_state(),
        "history": [dict(row) for row in run.history],
    }


def check_state(state: dict[str, Any]) -> tuple[int, int, list[dict[str, float]]]:
    """A resumable state's epoch, step and history; refuses a state of another layout."""
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            "the checkpoint was written by another version of invae-sweep (before trials "
            "trained in groups, with other numerics); start the trial afresh"
        )
    return state["epoch"], state["step"], [dict(row) for row in state["history"]]


if __name__ == "__main__":
    main()
