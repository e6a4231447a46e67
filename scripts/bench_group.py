"""Trials trained as one batched computation, without Ray: the ceiling of a GPU's host.

For each group width W asked for, trains one trial alone in a group of W, then W trials (seeds
and learning rates varying) filling it, on the pancreas-shape data with the default model, and
prints a table: ms per group epoch (median after the first two: compilation, capture), epochs/s
of all the group's trials while they train and over the whole call (compilation included), the
first epoch's seconds (compiling; from Inductor's on-disk cache when it holds the code) and the
second's (capturing the CUDA graph), torch's peak GPU memory, and whether the middle slot's
trial ended with the bits of the trial alone:

    python scripts/bench_group.py --widths 1,8,16,32 --epochs 20 --json bench_group.json

``--groups 2,4`` adds, per width, rows of that many full groups trained side by side by one
training host (``trainables.host.TrainingHost``, as a sweep's GPU process does: each group's
epoch queued on its own CUDA stream before any is read), e.g. 64 trials as 4 groups of 16 or
16 trials as 4 groups of 4.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
import yaml

from trainables.config import DataConfig, load_train_config
from trainables.data import prepare_data
from trainables.host import TrainingHost
from trainables.train import Trial, train_group


def trial_configs(width: int, n_trials: int, epochs: int, device: str, overrides: dict):
    """The measured trial's config, and ``n_trials - 1`` others (seeds, learning rates varying)."""
    base = load_train_config(overrides={**overrides, "device": device, "n_epochs": epochs})
    base = dataclasses.replace(base, group_width=width)
    others = [
        dataclasses.replace(base, seed=s, learning_rate=1e-3 * (1 + s % 3))
        for s in range(n_trials - 1)
    ]
    return base, others


def figures(width: int, groups: int, n_trials: int, mine, wall: float, epochs: int, device: str):
    """A table row: the measured trial's epochs (``mine``: its result) and the call's wall time."""
    epoch_s = statistics.median(mine.timing["epoch_s"][2:])
    return {
        "width": width,
        "groups": groups,
        "trials": n_trials,
        "ms_per_epoch": 1000 * epoch_s,
        "epochs_per_s_training": n_trials / epoch_s,
        "epochs_per_s_wall": n_trials * epochs / wall,
        "first_epoch_s": mine.timing["epoch_s"][0],
        "second_epoch_s": mine.timing["epoch_s"][1],
        "gpu_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
        ),
        "weights": mine.fingerprint.weights,
    }


def measure(data, width: int, epochs: int, device: str, fill: bool, overrides: dict) -> dict:
    """Train one trial alone (``fill`` False) or ``width`` trials in a group of ``width``."""
    base, others = trial_configs(width, width if fill else 1, epochs, device, overrides)
    configs = [*others[: width // 2], base, *others[width // 2 :]]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    outcomes = train_group([Trial(c) for c in configs], data)
    wall = time.perf_counter() - start
    failed = [o for o in outcomes if isinstance(o, Exception)]
    if failed:
        raise failed[0]
    mine = outcomes[configs.index(base)]
    return figures(width, 1, len(configs), mine, wall, epochs, device)


def measure_host(data, width: int, groups: int, epochs: int, device: str, overrides: dict):
    """Train ``groups`` full groups of ``width`` trials side by side on one training host."""
    n = width * groups
    base, others = trial_configs(width, n, epochs, device, overrides)
    configs = [base, *others]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    host = TrainingHost(slots=n, data=data)
    start = time.perf_counter()
    for i, cfg in enumerate(configs):
        host.start(str(i), cfg, None)
    results = {}
    while len(results) < n:
        for key in (str(i) for i in range(n) if str(i) not in results):
            for item in host.take(key, timeout=0.05):
                if item[0] == "failed":
                    raise item[1]
                if item[0] == "done":
                    results[key] = item[1]
    wall = time.perf_counter() - start
    return figures(width, groups, n, results["0"], wall, epochs, device)


def main() -> None:
    """Print the table (and write it as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="1,8,16,32")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--groups", default="", help="also: this many groups side by side")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a train config override (YAML value), e.g. compile=false",
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.epochs < 4:
        parser.error("--epochs must be >= 4 (the first two epochs compile and capture)")
    data = prepare_data(DataConfig())
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device={name} torch={torch.__version__} cuda={torch.version.cuda} {args.set}")
    print(
        "| W | groups | trials | ms/epoch | epochs/s training | epochs/s wall | first epoch s "
        "| second epoch s | GPU GiB | slot bits = alone |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        alone = measure(data, width, args.epochs, args.device, False, overrides)
        runs = [alone]
        if width > 1:
            runs.append(measure(data, width, args.epochs, args.device, True, overrides))
        for groups in (int(g) for g in args.groups.split(",") if g):
            runs.append(measure_host(data, width, groups, args.epochs, args.device, overrides))
        for row in runs:
            row["same_bits_as_alone"] = row["weights"] == alone["weights"]
            memory = "-" if row["gpu_memory_gib"] is None else f"{row['gpu_memory_gib']:.1f}"
            print(
                f"| {row['width']} | {row['groups']} | {row['trials']} "
                f"| {row['ms_per_epoch']:.1f} "
                f"| {row['epochs_per_s_training']:.0f} | {row['epochs_per_s_wall']:.0f} "
                f"| {row['first_epoch_s']:.1f} | {row['second_epoch_s']:.1f} | {memory} "
                f"| {row['same_bits_as_alone']} |",
                flush=True,
            )
            rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
