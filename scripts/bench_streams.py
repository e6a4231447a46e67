"""Several inVAE trainings in one process, each replaying its own CUDA graph on its own stream.

Trials packed on a GPU as separate processes are time-sliced: kernels of different processes
do not run at the same time, so their aggregate saturates near one trial's kernel rate
(``bench_sweep.py``). Kernels on different streams of one process do run at the same time.
This measures the aggregate that gives (training epochs only, pancreas shape, default model)
and checks that running beside others leaves a training's bits as they are alone:

    python scripts/bench_streams.py --trainings 1,2,4,8,16,32 --epochs 4 --json streams.json

Each training has its own model, optimizers, CUDA graph, streams, shuffling generator and
a CUDA generator of its own for dropout and the reparameterisation noise (swapped in as torch's
default generator while it runs, in the graph-safe way), seeded with its seed. Training i has
seed i; "same bits as alone" compares training 0's weights and optimizer states with those of
training 0 run by itself. The driver does not run trials this way (one Tune trial is one
process); this measures what it could gain.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from trainables.config import DataConfig, load_train_config
from trainables.data import prepare_data
from trainables.fingerprint import fingerprint
from trainables.model import InVAE
from trainables.optim import build_optimizers
from trainables.seeding import set_seed, torch_generator
from trainables.step import GraphedStep, make_step
from trainables.train import DeviceSplit, minibatches


def unique_stream() -> torch.cuda.ExternalStream:
    """A CUDA stream of its own.

    ``torch.cuda.Stream()`` hands out 32 pooled streams in turn, and cuBLAS keys its workspace
    by stream; a captured graph keeps the workspace of each stream it was captured on. Two
    trainings whose graphs were captured on one stream share a workspace and, replayed at the
    same time, race on it: measured, 16 trainings on pooled streams gave other bits. So every
    training's capture and optimizer streams are made here.
    """
    handle = ctypes.c_void_p()
    error = torch.cuda.cudart().cudaStreamCreate(ctypes.addressof(handle))
    if int(error) != 0:
        raise RuntimeError(f"cudaStreamCreate failed: {error}")
    return torch.cuda.ExternalStream(handle.value)


@dataclass
class Training:
    """One training's own model, step, generators and stream."""

    model: InVAE
    step: GraphedStep
    noise: torch.Generator  # dropout and reparameterisation draws
    shuffle: torch.Generator
    stream: torch.cuda.Stream


def start(seed: int, tensors, n_genes: int, n_bio: int, n_tech: int, cfg) -> Training:
    torch.manual_seed(seed)  # parameter initialisation, as set_seed does for a lone run
    device = tensors[0].device
    model = InVAE(n_genes, n_bio, n_tech, cfg.model).to(device)
    step = make_step(model, build_optimizers(model, cfg), tensors, cfg)
    assert isinstance(step, GraphedStep), "needs CUDA graphs"
    step.capture_stream = unique_stream()
    step.optimizer_streams = [unique_stream() for _ in step.optimizers]
    noise = torch.Generator(device=device).manual_seed(seed)
    return Training(model, step, noise, torch_generator(seed, device), unique_stream())


def run(trainings: list[Training], n_cells: int, epochs: int) -> list[float]:
    """Train all for ``epochs`` epochs, interleaving their steps; return each epoch's seconds."""
    default = torch.cuda.default_generators[torch.cuda.current_device()]
    own_state = default.graphsafe_get_state()
    torch.cuda.synchronize()  # the data was written on the default stream
    seconds, step = [], 0
    for _ in range(epochs):
        tick = time.perf_counter()
        batches = []
        for t in trainings:
            with torch.cuda.stream(t.stream):
                batches.append(minibatches(n_cells, 256, t.shuffle, t.stream.device))
        for j in range(batches[0].shape[0]):
            for t, b in zip(trainings, batches, strict=True):
                default.graphsafe_set_state(t.noise.graphsafe_get_state())
                with torch.cuda.stream(t.stream):
                    t.step(b[j], step)
            step += 1
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - tick)
    default.graphsafe_set_state(own_state)
    return seconds


def measure(k: int, data, tensors, cfg, epochs: int) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    trainings = [start(i, tensors, data.n_genes, data.n_bio, data.n_tech, cfg) for i in range(k)]
    seconds = run(trainings, data.train.n_cells, epochs)
    steady = seconds[1:] or seconds  # the first epoch includes compilation and capture
    per_epoch = sum(steady) / len(steady)
    row = {
        "trainings": k,
        "aggregate_epochs_per_s": k / per_epoch,
        "per_training_s_per_epoch": per_epoch,
        "first_epoch_s": seconds[0],
        "gpu_mem_per_training_mb": (torch.cuda.max_memory_allocated() - tensors_bytes(tensors))
        / k
        / 2**20,
        "training0": fingerprint(
            trainings[0].model.state_dict(),
            [o.state_dict() for o in trainings[0].step.optimizers],
            [],
        ),
    }
    del trainings
    return row


def tensors_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", default="1,2,4,8,16,32", help="trainings per process")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--fast", action="store_true", help="non-deterministic mode")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    data = prepare_data(DataConfig())
    cfg = load_train_config(overrides={"device": "cuda", "deterministic": not args.fast})
    set_seed(0, cfg.deterministic, cfg.cpu_threads)
    device = torch.device("cuda")
    train_set = DeviceSplit.from_split(data.train, device)
    tensors = (train_set.counts, train_set.bio, train_set.tech)
    alone = measure(1, data, tensors, cfg, args.epochs)["training0"]
    rows = [measure(int(k), data, tensors, cfg, args.epochs) for k in args.trainings.split(",")]
    for row in rows:
        row["same_bits_as_alone"] = row.pop("training0") == alone

    print(
        f"device={torch.cuda.get_device_name()} torch={torch.__version__} "
        f"cuda={torch.version.cuda} deterministic={cfg.deterministic} epochs={args.epochs} "
        "(the first, with compilation, left out)"
    )
    print("  ".join(f"{c:>24}" for c in rows[0]))
    for row in rows:
        cells = (f"{v:>24.4g}" if isinstance(v, float) else f"{v!s:>24}" for v in row.values())
        print("  ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
