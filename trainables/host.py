"""Several trainings at once in one process: what a GPU's trials run in, side by side.

Kernels of different processes sharing a GPU are time-sliced, while kernels of one process on
different streams run at the same time (``trainables.concurrency``). A :class:`TrainingHost`
runs up to ``slots`` calls of ``train()`` at once, each in a thread of its own, and queues what
each reports; whoever started a training collects its epochs with :meth:`TrainingHost.take`.
Every training ends with the bits it has when it runs alone. No Ray here: the sweep runs one
host per GPU as a Ray actor (``trainables.ray_trainable``).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from trainables.config import PROCESS_WIDE_KEYS, DataConfig, TrainConfig
from trainables.prepared import PreparedData
from trainables.train import train

ORPHAN_AFTER_S = 120.0
"""A training whose epochs nobody has taken for this long is stopped (its caller is gone)."""


class Cancelled(Exception):
    """Raised inside a training's report to end it: it was cancelled or its caller is gone."""


@dataclass
class _Training:
    key: str
    process_settings: tuple  # the values of PROCESS_WIDE_KEYS: torch keeps them per process
    items: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    last_taken: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None


class TrainingHost:
    """Runs up to ``slots`` trainings at once, each in a thread; queues their reports.

    Each queued item is one of ``("epoch", metrics, state_or_None)`` per epoch (a resumable
    state on checkpoint epochs), ``("done", RunResult)`` or ``("failed", exception)``.

    Args:
        slots: How many trainings may run at once.
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
        self._lock = threading.Lock()

    def running(self) -> int:
        """How many trainings are running now."""
        with self._lock:
            return len(self._alive())

    def _alive(self) -> list[_Training]:
        return [t for t in self._trainings.values() if t.thread and t.thread.is_alive()]

    def start(
        self,
        key: str,
        train_cfg: TrainConfig,
        data_cfg: DataConfig,
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
            alive = self._alive()
            if len(alive) >= self.slots and not beyond_slots:
                return False
            for other in alive:
                if other.process_settings != settings:
                    raise ValueError(
                        f"trainings in one process must share {', '.join(PROCESS_WIDE_KEYS)}: "
                        f"{key!r} has {settings}, {other.key!r} has {other.process_settings}"
                    )
            training = _Training(key, settings)
            training.thread = threading.Thread(
                target=self._run,
                args=(training, train_cfg, data_cfg, checkpoint_every, resume),
                name=f"training-{key}",
                daemon=True,
            )
            self._trainings[key] = training
            training.thread.start()
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

    def _run(
        self,
        training: _Training,
        train_cfg: TrainConfig,
        data_cfg: DataConfig,
        checkpoint_every: int,
        resume: dict[str, Any] | None,
    ) -> None:
        def report(metrics: dict[str, float], state: dict[str, Any] | None = None) -> None:
            if training.cancelled.is_set():
                raise Cancelled(training.key)
            if time.monotonic() - training.last_taken > self.orphan_after_s:
                with self._lock:
                    self._trainings.pop(training.key, None)
                raise Cancelled(f"{training.key}: its epochs not taken for {self.orphan_after_s} s")
            training.items.put(("epoch", metrics, state))

        try:
            result = train(
                train_cfg,
                self.data if self.data is not None else data_cfg,
                report=report,
                checkpoint_every=checkpoint_every,
                resume=resume,
            )
        except Cancelled:
            return
        except Exception as err:  # handed to the caller, who raises it
            training.items.put(("failed", err))
            return
        training.items.put(("done", result))
