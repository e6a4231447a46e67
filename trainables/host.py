"""A GPU's trials in one process, trained in groups: what a sweep's training host runs.

A :class:`TrainingHost` takes trainings (:meth:`TrainingHost.start`) and trains them in one
thread of its own: trainings of one shape join one group (``trainables.train.GroupRunner``,
``trainables.fused``) at its next epoch boundary, so up to ``group_width`` of them are one
batched computation; trainings of other shapes get groups of their own, stepped in turn. It
queues what each training reports; whoever started a training collects its epochs with
:meth:`TrainingHost.take`. Every training ends with the bits it has when it trains alone.
No Ray here: the sweep runs one host per GPU as a Ray actor (``trainables.ray_trainable``).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from trainables.concurrency import Lane
from trainables.config import PROCESS_WIDE_KEYS, DataConfig, TrainConfig
from trainables.fused import GroupShape
from trainables.prepared import PreparedData
from trainables.train import GroupRunner, Trial

ORPHAN_AFTER_S = 120.0
"""A training whose epochs nobody has taken for this long is stopped (its caller is gone)."""


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
        self._lanes: dict[str, Lane] = {}
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
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="host", daemon=True)
                self._thread.start()
            self._wake.notify()
        return True

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
                while not self._waiting and not any(r.running for r in self._runners):
                    self._wake.wait()
                waiting, self._waiting = self._waiting, []
            for training in waiting:
                self._admit(training)
            for runner in self._runners:
                runner.run_epoch()

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

    def _runner(self, shape: GroupShape, data: PreparedData) -> GroupRunner:
        """A group of this shape and data with a free slot (a new one when all are full)."""
        for runner in self._runners:
            if runner.shape == shape and runner.prepared is data and runner.has_room():
                return runner
        if shape.device not in self._lanes:
            self._lanes[shape.device] = Lane(torch.device(shape.device))
        runner = GroupRunner(shape, data, self._lanes[shape.device])
        self._runners.append(runner)
        return runner

    def _ended(self, training: _Training, outcome: Any) -> None:
        training.ended = True
        if isinstance(outcome, Cancelled):
            return
        kind = "failed" if isinstance(outcome, BaseException) else "done"
        training.items.put((kind, outcome))
