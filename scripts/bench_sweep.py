"""Packing several inVAE trials per GPU: aggregate throughput, memory, utilisation, overhead.

For each packing k, runs a sweep of k trials (pancreas-shape data, default model) with
``trials_per_gpu: k`` on one GPU and reports aggregate epochs/s, per-trial s/epoch, peak GPU
memory per trial, mean GPU utilisation (nvidia-smi) and the driver's overhead:

    python scripts/bench_sweep.py --packing 1,2,4,8,16 --epochs 30 --json bench_sweep.json
    python scripts/bench_sweep.py --packing 4 --trials 16 --epochs 500   # configs/sweep.yaml's
    python scripts/bench_sweep.py --sequential 16 --epochs 30    # overhead, one trial at a time

Overhead: the share of the sweep's trial slots not spent training. With k trials at a time
(k slots) that is 1 - (sum of the trials' training times) / (k x wall time); with one trial at
a time, the sweep's wall time minus the sum of its trials' training times, over the wall time.
A trial's training time is the whole of ``train()``: data onto the GPU, compilation and graph
capture included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from sweeper.driver import DriverOptions, run_sweep
from sweeper.spec import load_sweep

CONFIG = Path(__file__).parents[1] / "configs" / "sweep.yaml"


class GpuSampler:
    """Samples nvidia-smi's utilisation (%) of every GPU every 200 ms in a background thread.

    ``samples`` pools all GPUs; ``per_gpu[i]`` holds GPU i's samples.
    """

    def __init__(self):
        self.samples: list[float] = []
        self.per_gpu: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(0.2):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0 and out.stdout.strip():
                for gpu, value in enumerate(out.stdout.split()):
                    self.samples.append(float(value))
                    self.per_gpu.setdefault(gpu, []).append(float(value))


def run_packing(k: int, n_trials: int, epochs: int, storage: Path) -> dict:
    """One sweep of ``n_trials`` trials with at most ``k`` per GPU; return its figures."""
    overrides = {
        "seeds": list(range(n_trials)),
        "replicates": 1,
        "search": {},
        "num_samples": 1,
        "train.n_epochs": epochs,
        "resources.trials_per_gpu": k,
        "resources.cpus_per_trial": 0.5,
        "checkpoint_every": 0,
        "wandb.mode": "disabled",
        "outputs.best_n": 0,
        "name": f"pack-{k}-{n_trials}",
        "storage_path": str(storage),
    }
    sweep = load_sweep(CONFIG, overrides)
    started = time.time()
    with GpuSampler() as sampler:
        summary = run_sweep(sweep, DriverOptions(gpus=1))
    wall = time.time() - started
    folder = storage / sweep.spec.name
    timings = [
        json.loads((folder / t["run_json"]).read_text())["timing"] for t in summary["trials"]
    ]
    span = max(t["finished_unix"] for t in timings) - min(t["started_unix"] for t in timings)
    slots = min(k, n_trials)
    return {
        "trials_per_gpu": k,
        "trials": n_trials,
        "completed": summary["n_completed"],
        "aggregate_epochs_per_s": n_trials * epochs / span,
        "per_trial_s_per_epoch": statistics.median(
            statistics.median(t["epoch_s"][1:] or t["epoch_s"]) for t in timings
        ),
        "gpu_mem_per_trial_mb": statistics.median(t["max_gpu_memory_bytes"] or 0 for t in timings)
        / 2**20,
        "gpu_mem_max_trial_mb": max(t["max_gpu_memory_bytes"] or 0 for t in timings) / 2**20,
        "gpu_util_mean_pct": statistics.fmean(sampler.samples) if sampler.samples else None,
        "wall_s": wall,
        "outside_training_s": wall - span,  # Ray, worker start, outputs, shutdown
        "overhead_fraction": 1 - sum(t["total_s"] for t in timings) / (slots * wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packing", default="1,2,4,8,16", help="trials per GPU to measure")
    parser.add_argument("--trials", type=int, default=0, help="trials per sweep (default: k)")
    parser.add_argument("--sequential", type=int, default=0, help="also: N trials, 1 at a time")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    storage = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    rows = [
        run_packing(k, args.trials or k, args.epochs, storage)
        for k in map(int, args.packing.split(","))
    ]
    if args.sequential:
        rows.append(run_packing(1, args.sequential, args.epochs, storage))
    shutil.rmtree(storage, ignore_errors=True)

    print(
        f"device={torch.cuda.get_device_name()} torch={torch.__version__} cuda={torch.version.cuda}"
    )
    columns = list(rows[0])
    print("  ".join(f"{c:>14}" for c in columns))
    for r in rows:
        print(
            "  ".join(f"{v:>14.4g}" if isinstance(v, float) else f"{v!s:>14}" for v in r.values())
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
