"""Trainings side by side in one process, without Ray: the ceiling of packing on one GPU.

Runs k trainings (pancreas-shape data, default model, seeds 0..k-1) at once, each in a thread
of its own, as a shared-process sweep's training host does. Each waits after its second epoch
(the first replay of its CUDA graph) until all k are there, so they train together from one
moment on, whatever their serialized warm-up took:

    python scripts/bench_host.py --trainings 1,8,16,32 --epochs 62 --json bench_host.json

Aggregate epochs/s: epochs that ended between that moment and the end of the first training's
second-to-last epoch (the last one also scores integration on the CPU), over that time. Also
per training: its mean s/epoch over those epochs, torch's peak GPU memory of the process over
k, and the warm-up (start to release). Sets CUDA_DEVICE_MAX_CONNECTIONS=32
unless set, as the sweep does for its shared processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import threading
import time

import torch
from bench_sweep import together_rate

from trainables.concurrency import shared_process_env
from trainables.config import DataConfig, load_train_config
from trainables.data import prepare_data
from trainables.prepared import PreparedData
from trainables.train import train

RELEASE_AFTER_EPOCH = 2  # the first epoch is eager; the second is the first graph replay


def run_together(
    data: PreparedData, k: int, epochs: int, device: str, precision: str = "ieee"
) -> dict[str, float]:
    """Train k seeds at once, released together after their warm-up; return the figures."""
    release = threading.Barrier(k + 1)
    ends: list[list[float]] = [[] for _ in range(k)]
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        def report(row: dict, state: dict | None = None) -> None:
            if row["epoch"] == RELEASE_AFTER_EPOCH:
                release.wait()
            elif RELEASE_AFTER_EPOCH < row["epoch"] < epochs:
                ends[seed].append(time.perf_counter())

        cfg = load_train_config(
            overrides={
                "device": device,
                "n_epochs": epochs,
                "seed": seed,
                "cuda_matmul_precision": precision,
            }
        )
        try:
            train(cfg, data, report=report)
        except BaseException as err:  # re-raised by the main thread
            errors.append(err)
            release.abort()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(k)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a training failed: raised below
        release.wait()
    released = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    first_end = min(e[-1] for e in ends)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    return {
        "trainings": k,
        "aggregate_epochs_per_s": together_rate(ends, (released, first_end)),
        "per_training_s_per_epoch": statistics.fmean((e[-1] - released) / len(e) for e in ends),
        "torch_peak_mb_per_training": peak / 2**20 / k,
        "warmup_s": released - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", default="1,8,16,32", help="trainings at once to measure")
    parser.add_argument("--epochs", type=int, default=62)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--cuda-matmul-precision", default="ieee", help="the trainings' float32 matmuls: ieee, tf32"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.epochs <= RELEASE_AFTER_EPOCH + 2:
        parser.error(f"--epochs must be > {RELEASE_AFTER_EPOCH + 2}")

    os.environ.update(shared_process_env())  # before CUDA starts, as a sweep's host does
    data = prepare_data(DataConfig())
    on_gpu = args.device.startswith("cuda")
    header = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "max_connections": os.environ["CUDA_DEVICE_MAX_CONNECTIONS"],
        "cuda_matmul_precision": args.cuda_matmul_precision,
    }
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    print(f"{'trainings':>9} {'epochs/s':>9} {'s/epoch':>9} {'torch MB':>9} {'warm-up s':>9}")
    rows = []
    for k in map(int, args.trainings.split(",")):
        row = run_together(data, k, args.epochs, args.device, args.cuda_matmul_precision)
        rows.append(row)
        print(
            f"{k:>9} {row['aggregate_epochs_per_s']:>9.1f} {row['per_training_s_per_epoch']:>9.4f}"
            f" {row['torch_peak_mb_per_training']:>9.0f} {row['warmup_s']:>9.1f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
