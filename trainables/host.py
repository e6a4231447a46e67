"""A GPU's trials in one process, trained in groups: a sweep's training hosts.

A :class:`TrainingHost` takes trainings (:meth:`TrainingHost.start`) and trains them in one
thread of its own: trainings of one shape join one group (``trainables.train.GroupRunner``,
``trainables.fused``) at its next epoch boundary, so up to ``group_width`` of them are one
batched computation; trainings of other shapes (or beyond a group's width) get groups of
their own, whose epochs run side by side on the GPU, each on its own CUDA stream. It queues
what each training reports; whoever started a training collects its epochs with
:meth:`TrainingHost.take`. Every training ends with the bits it has when it trains alone.

:class:`TrainingHost` needs no Ray. A sweep runs one per GPU as a Ray actor
(:class:`TrainingHosts`); a trial's Tune worker starts its training on the least busy one and
relays what it reports (:meth:`TrainingHosts.train`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainables.config import PROCESS_WIDE_KEYS, DataConfig, TrainConfig
from trainables.fused import GroupShape
from trainables.prepared import PreparedData
from trainables.run_record import RunResult
from trainables.train import GroupRunner, Report, Trial

logger = logging.getLogger(__name__)

ORPHAN_AFTER_S = 120.0
"""A training whose epochs nobody has taken for this long is stopped (its caller is gone)."""
HOST_WAIT_S = 5.0
"""How long a trial waits for a free slot on a training host before it takes one beyond."""


class Cancelled(Exception):
    """Raised inside a training's report to end it: it was cancelled or its caller is gone."""


@dataclass
class _Training:
    key: str
    trial: Trial
    data_cfg: DataConfig | None
    process_settings: tuple  # the values of PROCESS_WIDE_KEYS: torch keeps them per process
    items: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    last_taken: float = field(default_factory=time.monotonic)
    ended: bool = False


class TrainingHost:
    """Trains up to ``slots`` trainings at once, in groups, in one thread; queues their reports.

    Each queued item is one of ``("epoch", metrics, state_or_None)`` per epoch (a resumable
    state on checkpoint epochs), ``("done", RunResult)`` or ``("failed", exception)``.

    Args:
        slots: How many trainings may train at once (Tune sends no more).
        data: Data shared by every training of this host (None: each prepares its own from
            its data config, through the on-disk cache).
        orphan_after_s: Stop a training whose items nobody has taken for this long.
    """

    def __init__(
        self,
        slots: int,
        data: PreparedData | None = None,
        orphan_after_s: float = ORPHAN_AFTER_S,
    ):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots!r}")
        self.slots, self.data, self.orphan_after_s = slots, data, orphan_after_s
        self._trainings: dict[str, _Training] = {}
        self._waiting: list[_Training] = []  # started, not yet in a group
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._runners: list[GroupRunner] = []  # kept, with their compiled code, for the next
        self._warming: list[TrainConfig] = []  # shapes to warm up before trials come
        self._thread: threading.Thread | None = None

    def running(self) -> int:
        """How many trainings are running (or waiting to join a group) now."""
        with self._lock:
            return sum(not t.ended for t in self._trainings.values())

    def start(
        self,
        key: str,
        train_cfg: TrainConfig,
        data_cfg: DataConfig | None,
        checkpoint_every: int = 0,
        resume: dict[str, Any] | None = None,
        beyond_slots: bool = False,
    ) -> bool:
        """Start a training under ``key``, unless every slot is taken; return whether it started.

        ``beyond_slots`` starts it even then: a training whose caller died keeps its slot until
        it is found orphaned, and the caller's next attempt must not wait for that.

        Raises:
            ValueError: ``key`` is in use, or the training's settings that torch keeps per
                process (``PROCESS_WIDE_KEYS``) differ from those of the trainings running here.
        """
        settings = tuple(getattr(train_cfg, k) for k in PROCESS_WIDE_KEYS)
        with self._lock:
            if key in self._trainings:
                raise ValueError(f"a training {key!r} is already on this host")
            alive = [t for t in self._trainings.values() if not t.ended]
            if len(alive) >= self.slots and not beyond_slots:
                return False
            for other in alive:
                if other.process_settings != settings:
                    raise ValueError(
                        f"trainings in one process must share {', '.join(PROCESS_WIDE_KEYS)}: "
                        f"{key!r} has {settings}, {other.key!r} has {other.process_settings}"
                    )
            trial = Trial(train_cfg, None, checkpoint_every, resume)
            training = _Training(key, trial, data_cfg, settings)
            trial.report = self._reporter(training)
            self._trainings[key] = training
            self._waiting.append(training)
            self._wake_loop()
        return True

    def warm_up(self, configs: list[TrainConfig]) -> None:
        """Warm up a group for each shape of ``configs`` on the shared data, in the background.

        Each shape's group compiles its code and captures its CUDA graph now
        (``GroupRunner.warm_up``), before its trials come; trainings started meanwhile join
        once it is done. Nothing is warmed without shared data (a training's shape depends on
        the data it prepares).
        """
        if self.data is None:
            return
        with self._lock:
            self._warming += configs
            self._wake_loop()

    def _wake_loop(self) -> None:
        """Start the training thread if it is not running, and wake it (lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="host", daemon=True)
            self._thread.start()
        self._wake.notify()

    def take(self, key: str, timeout: float = 10.0) -> list[tuple]:
        """The items ``key`` queued since the last call; waits up to ``timeout`` s for one.

        Raises:
            KeyError: No training ``key`` here (never started, cancelled, or already ended and
                taken).
        """
        with self._lock:
            training = self._trainings[key]
        training.last_taken = time.monotonic()
        items = []
        try:
            items.append(training.items.get(timeout=timeout))
            while True:
                items.append(training.items.get_nowait())
        except queue.Empty:
            pass
        training.last_taken = time.monotonic()
        if items and items[-1][0] in ("done", "failed"):
            with self._lock:
                self._trainings.pop(key, None)
        return items

    def cancel(self, key: str) -> None:
        """Stop training ``key`` at its next epoch and forget it (no-op when it is gone)."""
        with self._lock:
            training = self._trainings.pop(key, None)
            if training is not None:
                training.cancelled.set()
                if training in self._waiting:
                    self._waiting.remove(training)
                    training.ended = True

    def _reporter(self, training: _Training):
        def report(metrics: dict[str, float], state: dict[str, Any] | None = None) -> None:
            if training.cancelled.is_set():
                raise Cancelled(training.key)
            if time.monotonic() - training.last_taken > self.orphan_after_s:
                with self._lock:
                    self._trainings.pop(training.key, None)
                raise Cancelled(f"{training.key}: epochs not taken for {self.orphan_after_s} s")
            training.items.put(("epoch", metrics, state))

        return report

    def _loop(self) -> None:
        """Admit waiting trainings into groups between epochs; step every busy group."""
        while True:
            with self._lock:
                while not (self._waiting or self._warming or any(r.running for r in self._runners)):
                    self._wake.wait()
                waiting, self._waiting = self._waiting, []
                warming, self._warming = self._warming, []
            for cfg in warming:
                self._warm(cfg)
            for training in waiting:
                self._admit(training)
            for runner in self._runners:  # every group's epoch is queued before any is read,
                runner.start_epoch()  # so the groups' streams train side by side on the GPU
            for runner in self._runners:
                runner.finish_epoch()

    def _admit(self, training: _Training) -> None:
        try:
            data = self.data
            if data is None:  # AnnData and scikit-learn load only where data are prepared
                from trainables.data import prepare_data

                data = prepare_data(training.data_cfg)
            shape = GroupRunner.shape_of(training.trial.cfg, data)
            runner = self._runner(shape, data)
            runner.add(training.trial, lambda outcome: self._ended(training, outcome))
        except Exception as err:  # handed to the caller, who raises it
            self._ended(training, err)

    def _warm(self, cfg: TrainConfig) -> None:
        shape = GroupRunner.shape_of(cfg, self.data)
        if any(r.shape == shape and r.prepared is self.data for r in self._runners):
            return  # warm, or warming with its trials
        try:
            runner = GroupRunner(shape, self.data)
            runner.warm_up(cfg)
        except Exception:  # its trials meet the error themselves
            logger.warning("warming up a group failed; its trials start it", exc_info=True)
            return
        logger.info(
            "warmed up a group of %d slots (hidden %s) before its trials in %.1f s",
            shape.width,
            list(shape.hidden),
            runner.warm_up_s,
        )
        self._runners.append(runner)

    def _runner(self, shape: GroupShape, data: PreparedData) -> GroupRunner:
        """A group of this shape and data with a free slot (a new one when all are full)."""
        for runner in self._runners:
            if runner.shape == shape and runner.prepared is data and runner.has_room():
                return runner
        runner = GroupRunner(shape, data)
        self._runners.append(runner)
        return runner

    def _ended(self, training: _Training, outcome: Any) -> None:
        training.ended = True
        if isinstance(outcome, Cancelled):
            return
        kind = "failed" if isinstance(outcome, BaseException) else "done"
        training.items.put((kind, outcome))


class RayTrainingHost(TrainingHost):
    """A :class:`TrainingHost` that can say where it runs (a Ray actor, one per GPU)."""

    def where(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """This host's ``node_info()`` and ``get_environment_info()``."""
        from trainables.provenance import get_environment_info
        from trainables.ray_trainable import node_info

        return node_info(), get_environment_info()


@dataclass(frozen=True)
class TrainingHosts:
    """A sweep's training hosts: one :class:`RayTrainingHost` actor per GPU.

    Tune gives each trial function this object; its :meth:`train` trains the trial on a host.
    """

    actors: tuple[Any, ...]

    @classmethod
    def start(
        cls, n_gpus: int, slots: int, data: Any, warm: list[TrainConfig] | None = None
    ) -> TrainingHosts:
        """One host per GPU (one in all without GPUs), ``slots`` trainings each.

        Ray places each host on a GPU of its own, on whichever node has one. A host that dies
        is restarted by Ray; its trials fail and are retried like any failed trial.

        Args:
            n_gpus: GPUs of the sweep.
            slots: Trials one host trains at once.
            data: Data shared by every trial (an object reference to a ``PreparedData``), or
                None. Keep the reference while the hosts live: a restarted host reads it again.
            warm: Trial configs whose groups every host warms up at once
                (``TrainingHost.warm_up``), while Tune starts the trials' workers.
        """
        import ray

        actor = ray.remote(RayTrainingHost).options(
            num_cpus=0,  # the trials' own CPUs are reserved by their (waiting) Tune workers
            num_gpus=1 if n_gpus else 0,
            max_concurrency=2 * slots + 4,  # each trial waits in take() on one thread
            max_restarts=-1,
        )
        hosts = cls(tuple(actor.remote(slots, data) for _ in range(max(n_gpus, 1))))
        for host in hosts.actors:
            host.warm_up.remote(warm or [])
        return hosts

    def stop(self) -> None:
        """End every host (their trainings with them)."""
        import ray

        for actor in self.actors:
            ray.kill(actor)

    def train(
        self,
        key: str,
        args: tuple,
        report: Report,
        started: Callable[[dict[str, Any], dict[str, Any]], None],
    ) -> RunResult:
        """Train on the least busy host; pass its epochs to ``report``; return the result.

        Args:
            key: Names the training on its host (the trial's id).
            args: ``TrainingHost.start``'s arguments after the key.
            report: Called with each epoch the training reports.
            started: Called first, with the node and environment the training runs in.

        Raises:
            Exception: What the training raised.
        """
        import ray

        host, key = self._start(f"{key}-{uuid.uuid4().hex[:8]}", args)  # a key per attempt
        try:
            started(*ray.get(host.where.remote()))
            while True:
                for item in ray.get(host.take.remote(key)):
                    if item[0] == "epoch":
                        report(*item[1:])
                    elif item[0] == "done":
                        return item[1]
                    else:
                        raise item[1]
        finally:  # stopped, failed or done: free the slot (a no-op once the training has ended)
            host.cancel.remote(key)

    def _start(self, key: str, args: tuple) -> tuple[Any, str]:
        """Start a training on the least busy host.

        Tune runs no more trials at once than the hosts have slots, so a free slot is normally
        there; a full host means a training of a dead trial worker still holds it (until the
        host finds it orphaned). After ``HOST_WAIT_S`` the training starts beyond the slots.
        """
        import ray

        deadline = time.monotonic() + HOST_WAIT_S
        while True:
            loads = ray.get([host.running.remote() for host in self.actors])
            order = sorted(range(len(self.actors)), key=loads.__getitem__)
            for i in order:
                if ray.get(self.actors[i].start.remote(key, *args)):
                    return self.actors[i], key
            if time.monotonic() > deadline:
                ray.get(self.actors[order[0]].start.remote(key, *args, beyond_slots=True))
                return self.actors[order[0]], key
            time.sleep(0.5)
