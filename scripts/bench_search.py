"""TPE against random search at equal trial budget, and batched TPE against free-running TPE.

    python scripts/bench_search.py --gpus 1 --epochs 200 --points 16 --batch 4 --json out.json
    python scripts/bench_search.py --smoke --points 4 --batch 2 --epochs 2    # seconds-size check

Runs ``configs/search.yaml`` (the default simulated data; ``--smoke``: tiny data) three times
with the same points, seeds and epochs, each point at every seed:

- ``random``: ``searcher.type: random`` (Tune's variant generator), ``--points`` draws;
- ``tpe-batched``: ``searcher.type: optuna``, the sweep's own searcher: batches of ``--batch``
  points, each asked once every result of the earlier batches is in (the same file gives the
  same points);
- ``tpe-free``: Ray's ``OptunaSearch`` as it is usually run, with the same sampler and
  concurrency limit (``--batch`` points' trials at once): a point is asked whenever a trial
  slot frees and told as soon as its seeds are in, so its points depend on timing.

and prints, for each, the best point's mean and std over seeds, the mean over all points, the
best single trial, and the wall time of the trials (Ray's start included, the data already in
the disk cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sweeper.driver
from sweeper.cli import SMOKE_DATA, SMOKE_TRAIN
from sweeper.driver import run_trials
from sweeper.options import DriverOptions
from sweeper.results import Summary
from sweeper.searchers import BatchedTPE, TuneSearch, searched_point, tune_search
from sweeper.spec import LoadedSweep, load_sweep
from trainables.data import prepare_data

CONFIG = Path(__file__).parents[1] / "configs" / "search.yaml"
SEARCHERS = ("random", "tpe-batched", "tpe-free")


class FreeRunningTPE(BatchedTPE):
    """Ray's ``OptunaSearch``, each point at every seed: asked when a slot frees, told when done."""

    def __init__(self, sweep: LoadedSweep):
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        super().__init__(sweep)
        spec = sweep.spec
        sampler = TPESampler(seed=spec.searcher_seed, n_startup_trials=spec.searcher.random_points)
        self._optuna = OptunaSearch(
            self._distributions, metric="value", mode=spec.mode, sampler=sampler
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial of the newest point, or the first trial of a new one."""
        if not self._queue:
            if len(self._points) == self._n_points:
                return self.FINISHED
            params = self._optuna.suggest(str(len(self._points)))
            self._points.append(searched_point(self._search, params))
            self._queue = self._slots(len(self._points) - 1, len(self._points))
        slot = self._queue.pop(0)
        self._trials[trial_id] = slot
        return self._config(slot)

    def _record(self, slot: tuple[int, int, int], result: dict[str, Any] | None) -> None:
        """Keep a trial's metric; tell its point's mean over seeds once its last trial ended."""
        first = slot not in self._values
        super()._record(slot, result)
        point = slot[0]
        if first and all(s in self._values for s in self._slots(point, point + 1)):
            value = self._point_value(point)
            told = None if value is None else {"value": value}
            self._optuna.on_trial_complete(str(point), told, error=value is None)


def free_running_search(sweep: LoadedSweep, max_concurrent: int | None) -> TuneSearch:
    """``tune_search`` with :class:`FreeRunningTPE` in place of the batched searcher."""
    from ray.tune.search import ConcurrencyLimiter

    batched = tune_search(sweep, max_concurrent)
    limit = batched.algorithm.max_concurrent
    return TuneSearch(ConcurrencyLimiter(FreeRunningTPE(sweep), limit), {}, batched.num_samples)


def run(searcher: str, args: argparse.Namespace, storage: Path) -> dict[str, Any]:
    """One sweep with ``searcher``; its best point, mean over points and wall time."""
    overrides: dict[str, Any] = {
        "name": searcher,
        "storage_path": str(storage),
        "num_samples": args.points,
        "seeds": list(range(args.seeds)),
        "train.n_epochs": args.epochs,
        "wandb.mode": "disabled",
        "searcher": {"type": "random"},
    }
    if searcher != "random":
        tpe = {"type": "optuna", "batch_size": args.batch, "startup_points": args.startup}
        overrides["searcher"] = tpe
    if args.smoke:
        overrides |= {f"train.{k}": v for k, v in SMOKE_TRAIN.items() if k != "n_epochs"}
        overrides |= {f"data.{k}": v for k, v in SMOKE_DATA.items()}
    sweep = load_sweep(args.config, overrides)
    prepare_data(sweep.data)  # into the disk cache, before the clock starts
    sweeper.driver.tune_search = free_running_search if searcher == "tpe-free" else tune_search
    started = time.monotonic()
    summary = run_trials(sweep, DriverOptions(gpus=args.gpus, cpus=args.cpus))
    return row(searcher, summary, time.monotonic() - started)


def row(searcher: str, summary: Summary, wall: float) -> dict[str, Any]:
    """The table row of one finished sweep."""
    means = [g.mean for g in summary.groups]
    best = summary.best_point
    best_trial = summary.trial(summary.best_trial) if summary.best_trial else None
    return {
        "searcher": searcher,
        "points": len(summary.groups),
        "trials": summary.n_completed,
        f"best point {summary.metric}": best.mean if best else None,
        "its std over seeds": best.std if best else None,
        "mean over points": statistics.fmean(means) if means else None,
        "best trial": best_trial.metrics[summary.metric] if best_trial else None,
        "wall s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="the sweep file (TPE search)")
    parser.add_argument("--points", type=int, default=16, help="points per searcher")
    parser.add_argument("--batch", type=int, default=4, help="points per TPE batch")
    parser.add_argument("--startup", type=int, default=8, help="random points before TPE")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per point")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs (0: CPU trials)")
    parser.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--searchers", default=",".join(SEARCHERS), help="which to run")
    parser.add_argument("--smoke", action="store_true", help="tiny simulated data")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    from sweeper.report import format_table

    storage = Path(tempfile.mkdtemp(prefix="bench-search-"))
    rows = [run(name, args, storage) for name in args.searchers.split(",")]
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
