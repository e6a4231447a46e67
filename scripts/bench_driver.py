"""How many epoch results per second the sweep driver's Ray Tune takes, without training.

Every trial reports each epoch to Tune, which handles the results one at a time on the driver;
a trial in a process of its own waits for each to be taken, and a GPU's shared training process
runs ahead of what its trials have relayed. So the driver caps a sweep's epochs per second over
all GPUs. This runs k trials that only report epoch rows shaped like a training's (the first with
the trial's configs, as the sweep's first row), as fast as Tune takes them or one every
``--epoch-s`` seconds, under each named setting of the driver's Tune:

    python scripts/bench_driver.py --trials 4 --epochs 1000 --settings driver,every-step
    python scripts/bench_driver.py --trials 16 --epochs 500 --epoch-s 0.04   # 16 lone H200 trials
    python scripts/bench_driver.py --wandb disabled

``driver``: what ``run_sweep`` sets (``sweeper.driver.TUNE_DRIVER_ENV``); ``every-step``: the
experiment state saved after every result, with Tune's TensorBoard logger (the driver before it
set ``TUNE_DRIVER_ENV``); ``tune-default``: Tune's own defaults. Each runs with the sweep's
callbacks (``tune_callbacks``: CSV and JSON logs, W&B offline unless ``--wandb disabled``).
Results per second: all rows over the time from the first report to the last, as the trials saw
it (with ``--epoch-s``, against the rate offered); also the sweep's wall time, Ray's start
excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import ray
from ray import tune

from sweeper.driver import TUNE_DRIVER_ENV, tune_callbacks
from sweeper.options import sweep_dir
from sweeper.spec import load_sweep
from trainables.schema import config_to_dict

CONFIG = Path(__file__).parents[1] / "configs" / "sweep.yaml"
SETTINGS = {
    "driver": TUNE_DRIVER_ENV,
    "every-step": {"TUNE_GLOBAL_CHECKPOINT_S": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"},
    "tune-default": {"TUNE_GLOBAL_CHECKPOINT_S": "auto", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"},
}
METRICS = [
    *("train_loss", "recon", "kl_i", "kl_s", "indep", "grad_norm", "beta"),
    *("val_loss", "val_recon", "val_kl_i", "val_kl_s", "val_indep"),
]


def report_epochs(config: dict, epochs: int, epoch_s: float, first: dict) -> None:
    """A trial reporting ``epochs`` rows, one per ``epoch_s`` (0: as fast as Tune takes them).

    The last row carries the trial's first and last report times.
    """
    started = time.time()
    for epoch in range(1, epochs + 1):
        time.sleep(max(0.0, started + epoch * epoch_s - time.time()))
        row = {"epoch": epoch, **{m: 1.0 / epoch for m in METRICS}, "seed": config["seed"]}
        if epoch == 1:
            row = {**row, **first}
        if epoch == epochs:
            row = {**row, "first_report_unix": started, "last_report_unix": time.time()}
        tune.report(row)


def run_setting(
    name: str, trials: int, epochs: int, epoch_s: float, wandb: str, storage: Path
) -> dict:
    """One sweep of ``trials`` reporting trials under setting ``name``; return its figures."""
    overrides = {"wandb.mode": wandb, "name": f"driver-{name}", "storage_path": str(storage)}
    sweep = load_sweep(CONFIG, overrides)
    folder = sweep_dir(sweep)
    first = {"config": {"train": config_to_dict(sweep.train), "data": config_to_dict(sweep.data)}}
    with mock.patch.dict(os.environ, SETTINGS[name]):  # Tune reads them when it starts
        trainable = tune.with_resources(
            tune.with_parameters(report_epochs, epochs=epochs, epoch_s=epoch_s, first=first),
            {"cpu": 0.01},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"seed": tune.grid_search(list(range(trials)))},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(
                name=folder.name,
                storage_path=folder.storage_path,
                callbacks=tune_callbacks(sweep, folder),
                verbose=0,
            ),
        )
        started = time.time()
        grid = tuner.fit()
        wall = time.time() - started
    last = [r.metrics for r in grid]
    span = max(m["last_report_unix"] for m in last) - min(m["first_report_unix"] for m in last)
    return {
        "setting": name,
        "wandb": wandb,
        "trials": trials,
        "results": trials * epochs,
        "offered_per_s": trials / epoch_s if epoch_s else None,
        "wall_s": wall,
        "results_per_s": trials * epochs / span,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials reporting at once")
    parser.add_argument("--epochs", type=int, default=1000, help="results per trial")
    parser.add_argument(
        "--epoch-s", type=float, default=0.0, help="seconds between a trial's results (0: none)"
    )
    parser.add_argument("--settings", default="driver,every-step", help=", ".join(SETTINGS))
    parser.add_argument("--wandb", default="offline", help="offline or disabled")
    parser.add_argument("--cpus", type=int, default=None, help="Ray's CPUs (default: all)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    names = args.settings.split(",")
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        parser.error(f"--settings: unknown {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")

    os.environ.setdefault("WANDB_SILENT", "true")
    if args.wandb == "offline":
        os.environ.setdefault("WANDB_MODE", "offline")  # as the driver sets for its workers
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    storage = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    rows = []
    try:
        for name in names:
            row = run_setting(name, args.trials, args.epochs, args.epoch_s, args.wandb, storage)
            rows.append(row)
            print_table(rows)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=2))
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)


def print_table(rows: list[dict]) -> None:
    print(f"ray={ray.__version__} cpus={os.cpu_count()}", flush=True)
    print("  ".join(f"{c:>13}" for c in [*rows[0], "vs first"]))
    for r in rows:
        values = [*r.values(), r["results_per_s"] / rows[0]["results_per_s"]]
        print("  ".join(f"{v:>13.4g}" if isinstance(v, float) else f"{v!s:>13}" for v in values))


if __name__ == "__main__":
    main()
