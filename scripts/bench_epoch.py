"""Seconds per training epoch of inVAE on pancreas-shape simulated data.

Prints a table (and optionally writes JSON) with the device, torch version and settings:

    python scripts/bench_epoch.py --device cpu --epochs 3
    python scripts/bench_epoch.py --device cuda --epochs 5 --json bench_epoch.json

The first epoch is reported separately (warm-up: allocator, kernel selection); the figure to
quote is the median of the others.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time

import torch

from trainables.config import DataConfig, TrainConfig, load_train_config
from trainables.data import prepare_data
from trainables.train import train


def bench(train_cfg: TrainConfig, data) -> dict:
    """Train ``train_cfg.n_epochs`` epochs and time each one from the report calls."""
    stamps = [time.perf_counter()]
    train(train_cfg, data, report=lambda row, state=None: stamps.append(time.perf_counter()))
    per_epoch = [b - a for a, b in itertools.pairwise(stamps)]
    later = per_epoch[1:] or per_epoch
    return {
        "first_epoch_s": per_epoch[0],
        "median_epoch_s": statistics.median(later),
        "min_epoch_s": min(later),
        "max_epoch_s": max(later),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--modes", default="deterministic", help="comma list: deterministic,fast")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    data = prepare_data(DataConfig())  # pancreas shape, 4,000 HVGs
    rows = []
    for mode in args.modes.split(","):
        cfg = load_train_config(
            overrides={
                "n_epochs": args.epochs,
                "device": args.device,
                "cpu_threads": args.threads,
                "batch_size": args.batch_size,
                "deterministic": mode == "deterministic",
            }
        )
        rows.append({"mode": mode, "batch_size": args.batch_size, **bench(cfg, data)})

    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    device = torch.cuda.get_device_name() if on_gpu else platform.processor() or platform.machine()
    header = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": args.threads,
        "cells_train": data.train.n_cells,
        "genes": data.n_genes,
    }
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    print(f"{'mode':<14}{'batch':>6}{'first s':>10}{'median s/epoch':>16}{'min':>8}{'max':>8}")
    for r in rows:
        print(
            f"{r['mode']:<14}{r['batch_size']:>6}{r['first_epoch_s']:>10.3f}"
            f"{r['median_epoch_s']:>16.3f}{r['min_epoch_s']:>8.3f}{r['max_epoch_s']:>8.3f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
