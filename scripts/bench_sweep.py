"""Packing several inVAE trials per GPU: aggregate throughput, memory, utilisation, overhead.

For each packing k, runs a sweep of k trials (pancreas-shape data, default model) with
``trials_per_gpu: k`` on one GPU, once per process layout asked for (a process per trial, or
``one_process_per_gpu``), and reports aggregate epochs/s, per-trial s/epoch, GPU memory per
trial, mean GPU utilisation (nvidia-smi) and the driver's overhead:

    python scripts/bench_sweep.py --packing 1,2,4,8,16 --epochs 30 --json bench_sweep.json
    python scripts/bench_sweep.py --packing 4 --trials 16 --epochs 500   # configs/sweep.yaml's
    python scripts/bench_sweep.py --sequential 16 --epochs 30    # overhead, one trial at a time

Aggregate epochs/s, of the trials that completed: "wall" divides their epochs by the sweep's
wall time (the call of ``run_sweep``: Ray's start to its shutdown, outputs included), what a
user waits for; "together" counts the epochs that ended while all trials of the sweep were
training (from the last trial's first epoch end to the first trial's last epoch end) over that
window (None when the trials never trained all at once); "span" divides their epochs by the
time from the first trial's start to the last one's end, start-up and compilation included.
GPU memory per trial: nvidia-smi's peak memory in use on the GPU (CUDA contexts included) over the
trials at a time; torch's peak is per process, so it is given per process.

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
import yaml

from sweeper.driver import run_sweep
from sweeper.options import DriverOptions
from sweeper.results import COMPLETED
from sweeper.spec import load_sweep
from trainables.run_record import load_run

CONFIG = Path(__file__).parents[1] / "configs" / "sweep.yaml"


class GpuSampler:
    """Samples nvidia-smi's utilisation (%) and memory in use (MiB) of every GPU every 200 ms.

    ``samples`` pools all GPUs' utilisation; ``per_gpu[i]`` holds GPU i's; ``memory_mb`` the
    largest memory in use on any GPU.
    """

    def __init__(self):
        self.samples: list[float] = []
        self.per_gpu: dict[int, list[float]] = {}
        self.memory_mb = 0.0
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
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0 and out.stdout.strip():
                for gpu, line in enumerate(out.stdout.strip().splitlines()):
                    utilisation, memory = (float(v) for v in line.split(","))
                    self.samples.append(utilisation)
                    self.per_gpu.setdefault(gpu, []).append(utilisation)
                    self.memory_mb = max(self.memory_mb, memory)


def run_packing(
    k: int, n_trials: int, epochs: int, storage: Path, process: str, train: dict[str, object]
) -> dict:
    """One sweep of ``n_trials`` trials with at most ``k`` per GPU; return its figures.

    ``process``: "per-trial" (a process per trial, each training alone: ``group_width`` 1)
    or "per-gpu" (``resources.one_process_per_gpu``: a GPU's trials in groups of the width
    the sweep plans, unless ``train`` sets ``group_width``); ``train``: train config overrides.
    """
    width = {"group_width": 1} if process == "per-trial" else {}
    overrides = {
        "seeds": list(range(n_trials)),
        "replicates": 1,
        "search": {},
        "num_samples": 1,
        "train.n_epochs": epochs,
        **{f"train.{key}": value for key, value in {**train, **width}.items()},
        "resources.trials_per_gpu": k,
        "resources.cpus_per_trial": 0.5,
        "resources.one_process_per_gpu": process == "per-gpu",
        "checkpoint_every": 0,
        "wandb.mode": "disabled",
        "outputs.best_n": 0,
        "name": f"pack-{k}-{n_trials}-{process}-{len(list(storage.iterdir()))}",
        "storage_path": str(storage),
    }
    sweep = load_sweep(CONFIG, overrides)
    started = time.time()
    with GpuSampler() as sampler:
        summary = run_sweep(sweep, DriverOptions(gpus=1)).summary
    wall = time.time() - started
    folder = storage / sweep.spec.name
    # Figures of the trials that completed (a failed trial leaves no run.json; "completed"
    # says how many there were).
    completed = [t for t in summary.trials if t.status == COMPLETED]
    if not completed:
        raise SystemExit(f"{sweep.spec.name}: no trial completed; see {folder}")
    records = [load_run(folder / t.trial_dir) for t in completed]
    timings = [r.timing for r in records]
    span = max(t["finished_unix"] for t in timings) - min(t["started_unix"] for t in timings)
    slots = min(k, n_trials)
    per_trial = statistics.median(
        statistics.median(t["epoch_s"][1:] or t["epoch_s"]) for t in timings
    )
    ends = [t["epoch_end_unix"] for t in timings]
    lags = [t["finished_unix"] - e[-1] for t, e in zip(timings, ends, strict=True)]
    window = (max(e[0] for e in ends), min(e[-1] for e in ends))  # all trials training
    return {
        "process": process,
        "trials_per_gpu": k,
        "group_width": "/".join(sorted({str(r.config.train["group_width"]) for r in records})),
        "train": " ".join(f"{key}={value}" for key, value in train.items()) or "-",
        "trials": n_trials,
        "completed": summary.n_completed,
        "wall_epochs_per_s": len(completed) * epochs / wall,  # what the user waits for
        "together_epochs_per_s": together_rate(ends, window) if n_trials == slots else None,
        "span_epochs_per_s": len(completed) * epochs / span,
        "per_trial_s_per_epoch": per_trial,
        "first_epoch_s": statistics.median(t["epoch_s"][0] for t in timings),
        "finish_lag_s_max": max(lags),  # last epoch's end to the trial's result
        "gpu_mem_per_trial_mb": sampler.memory_mb / slots,
        "torch_peak_per_process_mb": max(t["max_gpu_memory_bytes"] or 0 for t in timings) / 2**20,
        "gpu_util_mean_pct": statistics.fmean(sampler.samples) if sampler.samples else None,
        "wall_s": wall,
        "outside_training_s": wall - span,  # Ray, worker start, outputs, shutdown
        # when, from the call's start: the first trial started, the last one started, the
        # last one's first epoch ended, the last one finished; then the call's end after it
        "first_start_s": min(t["started_unix"] for t in timings) - started,
        "last_start_s": max(t["started_unix"] for t in timings) - started,
        "last_first_epoch_s": max(e[0] for e in ends) - started,
        "last_finish_s": max(t["finished_unix"] for t in timings) - started,
        "after_last_s": wall - (max(t["finished_unix"] for t in timings) - started),
        "group_warm_up_s": max((t.get("group_warm_up_s") or 0.0 for t in timings), default=0.0),
        "overhead_fraction": 1 - sum(t["total_s"] for t in timings) / (slots * wall),
    }


def together_rate(ends: list[list[float]], window: tuple[float, float]) -> float | None:
    """Epochs per second that ended inside ``window``, over its length; None if it is empty."""
    start, stop = window
    if stop <= start:
        return None
    return sum(start < t <= stop for e in ends for t in e) / (stop - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packing", default="1,2,4,8,16", help="trials per GPU to measure")
    parser.add_argument("--trials", type=int, default=0, help="trials per sweep (default: k)")
    parser.add_argument("--sequential", type=int, default=0, help="also: N trials, 1 at a time")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--process", default="per-trial", help="per-trial, per-gpu or per-trial,per-gpu"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a train config override for every sweep (YAML value), e.g. compile=false",
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    train = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    storage = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    runs = [
        (process, k, args.trials or k)
        for process in args.process.split(",")
        for k in map(int, args.packing.split(","))
    ]
    if args.sequential:
        runs.append(("per-trial", 1, args.sequential))
    rows = []
    for process, k, n_trials in runs:
        rows.append(run_packing(k, n_trials, args.epochs, storage, process, train))
        print_table(rows)  # after every sweep: a cut-short run keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    shutil.rmtree(storage, ignore_errors=True)


def print_table(rows: list[dict]) -> None:
    card = torch.cuda.get_device_name()
    print(f"device={card} torch={torch.__version__} cuda={torch.version.cuda}", flush=True)
    print("  ".join(f"{c:>14}" for c in rows[0]))
    for r in rows:
        print(
            "  ".join(f"{v:>14.4g}" if isinstance(v, float) else f"{v!s:>14}" for v in r.values()),
            flush=True,
        )


if __name__ == "__main__":
    main()
