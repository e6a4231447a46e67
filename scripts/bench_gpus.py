"""The same sweep on N GPUs and on 1 GPU: trials per hour, trials and utilisation per GPU.

    python scripts/bench_gpus.py --gpus 4 --epochs 100 --json bench_gpus.json

Runs ``configs/sweep.yaml`` (24 trials; ``--epochs`` overrides its 500) twice in one process,
with ``--gpus N`` and ``--gpus 1``, and prints for each: wall time, trials per hour, how many
trials ran on each GPU, each GPU's mean utilisation (nvidia-smi), and the number of offline
W&B runs written; then the speed-up of N GPUs over 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_sweep import GpuSampler

from sweeper.driver import run_sweep
from sweeper.options import DriverOptions
from sweeper.spec import load_sweep
from trainables.run_record import load_run

CONFIG = Path(__file__).parents[1] / "configs" / "sweep.yaml"


def run(gpus: int, epochs: int, storage: Path) -> dict:
    """One sweep on ``gpus`` GPUs; its throughput and placement."""
    name = f"gpus-{gpus}"
    overrides = {"train.n_epochs": epochs, "name": name, "storage_path": str(storage)}
    sweep = load_sweep(CONFIG, {**overrides, "outputs.best_n": 0})  # time trials, not pictures
    started = time.time()
    with GpuSampler() as sampler:
        summary = run_sweep(sweep, DriverOptions(gpus=gpus)).summary
    wall = time.time() - started
    folder = storage / name
    placement = Counter()
    for trial in summary.trials:
        record = load_run(folder / trial.trial_dir)
        placement.update(record.trial.node["gpu_ids"])
    return {
        "gpus": gpus,
        "trials": summary.n_trials,
        "completed": summary.n_completed,
        "wall_s": round(wall, 1),
        "trials_per_hour": round(summary.n_completed / wall * 3600, 1),
        "trials_per_gpu": dict(sorted(placement.items())),
        "gpu_util_pct": {g: round(statistics.fmean(s), 1) for g, s in sampler.per_gpu.items()},
        "wandb_offline_runs": len(list((folder / "wandb").glob("offline-run-*"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="bench-gpus-"))
    rows = [run(args.gpus, args.epochs, storage), run(1, args.epochs, storage)]
    for row in rows:
        print(json.dumps(row))
    speedup = rows[0]["trials_per_hour"] / rows[1]["trials_per_hour"]
    print(f"speed-up of {args.gpus} GPUs over 1: {speedup:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
