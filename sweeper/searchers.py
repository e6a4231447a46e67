"""The sweep's searcher: Tune's random variant generator, or seeded TPE in batches (Optuna).

Random search (``searcher.type: random``, the default) draws every trial before the sweep starts
(:func:`sweeper.search.expand_trials`). TPE search (``optuna``) suggests hyperparameter points
from the results so far; :class:`BatchedTPE` makes what it suggests a function of the sweep
file alone. Either way each point runs at every seed and replicate of the file.
"""

from __future__ import annotations

import math
import pickle
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher

from sweeper.search import SUGGESTION, expand_trials, nested_values, param_space
from sweeper.spec import LoadedSweep
from trainables.constants import TUNE_REPLICATE, TUNE_TRAIN

Slot = tuple[int, int, int]
"""One trial of a suggested point: ``(suggestion, seed, replicate)``."""


@dataclass(frozen=True)
class TuneSearch:
    """What the Tuner needs to search as the sweep file says."""

    algorithm: Any  # a Tune search algorithm
    param_space: dict[str, Any]
    num_samples: int  # passes over the grid (random), or trials in all (TPE)
    callbacks: tuple[Any, ...] = ()


def tune_search(sweep: LoadedSweep, max_concurrent: int | None) -> TuneSearch:
    """The search algorithm, param space and trial count of the sweep's ``searcher``.

    Args:
        sweep: The validated sweep.
        max_concurrent: At most this many trials at once (None: no limit).
    """
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    spec = sweep.spec
    if spec.searcher.type == "random":
        generator = BasicVariantGenerator(
            constant_grid_search=True,
            random_state=spec.searcher_seed,
            max_concurrent=max_concurrent or 0,
        )
        return TuneSearch(generator, param_space(sweep), spec.num_samples)
    searcher = BatchedTPE(sweep)
    per_batch = spec.searcher.points_per_batch * spec.n_variants
    # The limiter also lets Tune keep that many trials pending (1 for a bare Searcher).
    limiter = ConcurrencyLimiter(searcher, min(max_concurrent or per_batch, per_batch))
    return TuneSearch(limiter, {}, spec.n_trials, (RestoredTrials(limiter, searcher),))


def known_trials(sweep: LoadedSweep) -> list[dict[str, Any]]:
    """The trial configs known before any result: every trial (random), the first batch (TPE)."""
    if sweep.spec.searcher.type == "random":
        return expand_trials(sweep)
    searcher, trials = BatchedTPE(sweep), []
    while isinstance(config := searcher.suggest(f"planned_{len(trials)}"), dict):
        trials.append(config)
    return trials


def plan_text(sweep: LoadedSweep) -> str:
    """What the sweep will run, in a few words: ``48 trials (TPE: 16 points in 4 batches ...``."""
    spec = sweep.spec
    if spec.searcher.type == "random":
        return f"{spec.n_trials} trials"
    per_batch = spec.searcher.points_per_batch
    return (
        f"{spec.n_trials} trials (TPE: {spec.num_samples} points in "
        f"{math.ceil(spec.num_samples / per_batch)} batches of {per_batch}, each point at "
        f"{len(spec.seeds)} seeds x {spec.replicates} replicates); the first batch"
    )


class BatchedTPE(Searcher):
    """TPE points in batches, each batch asked only once every result of the earlier ones is in.

    Hand-written because no library does this. Ray's ``OptunaSearch``, like Optuna with
    concurrent workers, asks for a point whenever a trial slot frees and tells each result as it
    arrives, so what it suggests depends on which trials finished first; Ray's ``Repeater``
    repeats a point under an index, not at a sweep's seeds and replicates. Here batch k is asked
    from a ``TPESampler(seed=searcher_seed)`` that was told every point of the batches before k,
    in suggestion order, with the metric's mean over the point's seeds: two runs of one file
    suggest the same points in the same order however their trials are timed. A point runs at
    every seed and replicate; its trials' configs differ only in seed and replicate index.

    A resumed sweep restores this state (``save``/``restore``, called by Tune), so it goes on
    suggesting what the uninterrupted sweep would have.
    """

    def __init__(self, sweep: LoadedSweep):
        import optuna

        spec = sweep.spec
        super().__init__(metric=spec.metric, mode=spec.mode)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per told point
        self._search = dict(spec.search)
        self._distributions = {k: optuna_distribution(d) for k, d in self._search.items()}
        self._seeds, self._replicates = spec.seeds, spec.replicates
        self._batch, self._n_points = spec.searcher.points_per_batch, spec.num_samples
        sampler = optuna.samplers.TPESampler(
            seed=spec.searcher_seed, n_startup_trials=spec.searcher.random_points
        )
        direction = "minimize" if spec.mode == "min" else "maximize"
        self._study = optuna.create_study(sampler=sampler, direction=direction)
        self._points: list[dict[str, Any]] = []  # searched values, in suggestion order
        self._told = 0  # points told to the sampler; point i is the study's trial number i
        self._queue: list[Slot] = []  # trials of the current batch not yet handed to Tune
        self._trials: dict[str, Slot] = {}  # Tune trial id -> its slot
        self._values: dict[Slot, float | None] = {}  # ended trials' metric (None: no value)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial of the current batch; None while earlier trials run; FINISHED."""
        while not self._queue:
            if any(slot not in self._values for slot in self._slots(0, len(self._points))):
                return None  # the batch is still running
            self._tell_points()
            if len(self._points) == self._n_points:
                return Searcher.FINISHED
            self._ask_batch()
        slot = self._queue.pop(0)
        self._trials[trial_id] = slot
        return self._config(slot)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Keep an ended trial's metric; its point is told when its batch is complete."""
        slot = self._trials.get(trial_id)
        if slot is not None:
            self._record(slot, None if error else result)

    def adopt(self, trial_id: str, config: Mapping[str, Any], result: dict | None, ended: bool):
        """Take in a trial Tune restored, which this searcher's saved state may not know.

        Args:
            trial_id: Its Tune trial id.
            config: Its config (the slot is read from it).
            result: Its last result, if it completed.
            ended: It completed or errored before the sweep was interrupted.
        """
        slot = self._trials.setdefault(trial_id, slot_of(config))
        if slot in self._queue:
            self._queue.remove(slot)
        if ended:
            self._record(slot, result)

    def save(self, checkpoint_path: str) -> None:
        """Write the whole state, the Optuna study with its sampler's random state included."""
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        """Read back what :meth:`save` wrote."""
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))

    def _record(self, slot: Slot, result: dict[str, Any] | None) -> None:
        value = (result or {}).get(self.metric)
        finite = isinstance(value, int | float) and math.isfinite(value)
        self._values.setdefault(slot, float(value) if finite else None)  # the first end counts

    def _tell_points(self) -> None:
        from optuna.trial import TrialState

        for point in range(self._told, len(self._points)):
            value = self._point_value(point)
            if value is None:  # every seed errored or had no value: TPE leaves it out
                self._study.tell(point, state=TrialState.FAIL)
            else:
                self._study.tell(point, value)
        self._told = len(self._points)

    def _point_value(self, point: int) -> float | None:
        """The metric's mean over the point's seeds (each seed's first replicate with a value)."""
        per_seed = []
        for seed in self._seeds:
            values = [self._values.get((point, seed, r)) for r in range(self._replicates)]
            per_seed += [v for v in values if v is not None][:1]
        return statistics.fmean(per_seed) if per_seed else None

    def _ask_batch(self) -> None:
        start = len(self._points)
        for _ in range(min(self._batch, self._n_points - start)):
            params = self._study.ask(self._distributions).params
            self._points.append(searched_point(self._search, params))
        taken = set(self._trials.values())  # trials restored before their batch was asked
        self._queue = [s for s in self._slots(start, len(self._points)) if s not in taken]

    def _slots(self, first: int, end: int) -> list[Slot]:
        return [
            (point, seed, replicate)
            for point in range(first, end)
            for seed in self._seeds
            for replicate in range(self._replicates)
        ]

    def _config(self, slot: Slot) -> dict[str, Any]:
        point, seed, replicate = slot
        config = nested_values(self._points[point])
        config[TUNE_TRAIN]["seed"] = seed
        return {**config, TUNE_REPLICATE: replicate, SUGGESTION: point}


class RestoredTrials(Callback):
    """Brings a resumed sweep's TPE searcher up to date with the trials Tune restored.

    Tune writes the trials' state, then the searcher's, then copies both to storage: a sweep
    killed in between restores trials the searcher never saw, or never saw end, and it would
    suggest them again or wait for them forever. At the first step of a run every trial Tune
    holds goes to the searcher, and those that ended leave the concurrency limit.
    """

    def __init__(self, limiter: Any, searcher: BatchedTPE):
        self._limiter, self._searcher = limiter, searcher
        self._synced = False

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Hand every trial to the searcher, once."""
        if self._synced:
            return
        self._synced = True
        for trial in trials:
            ended = trial.status in ("TERMINATED", "ERROR")
            result = trial.last_result if trial.status == "TERMINATED" else None
            self._searcher.adopt(trial.trial_id, trial.config, result, ended)
            if ended:
                self._limiter.live_trials.discard(trial.trial_id)


def slot_of(config: Mapping[str, Any]) -> Slot:
    """The ``(suggestion, seed, replicate)`` of a TPE trial's config."""
    return int(config[SUGGESTION]), int(config[TUNE_TRAIN]["seed"]), int(config[TUNE_REPLICATE])


def optuna_distribution(dist: Mapping[str, Any]) -> Any:
    """A search entry's Optuna distribution; a ``choice`` is one of the indices of its values.

    Indices, since Optuna's categorical values must be scalars and a choice may hold lists
    (``model.hidden``). Upper ends are exclusive, as Tune's are.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    ((kind, args),) = dist.items()
    if kind == "choice":
        return CategoricalDistribution(list(range(len(args))))
    if kind == "randint":
        return IntDistribution(args[0], args[1] - 1)
    below = math.nextafter(float(args[1]), -math.inf)
    return FloatDistribution(float(args[0]), below, log=kind == "loguniform")


def searched_point(search: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's parameters -> the searched values by key (a choice's index -> its value)."""
    point = {}
    for key, dist in search.items():
        ((kind, args),) = dist.items()
        point[key] = args[params[key]] if kind == "choice" else params[key]
    return point
