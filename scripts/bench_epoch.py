"""Seconds per training epoch of inVAE on pancreas-shape data, against the original inVAE.

Same data (the simulated pancreas shape: 16,382 cells, 4,000 HVGs, the training split), same
sizes (z 30/5, hidden [128, 128], batch 256), same card, one process:

    python scripts/bench_epoch.py --device cuda --epochs 6 --json bench_epoch.json
    python scripts/bench_epoch.py --device cuda --impl ours --modes deterministic --profile \
        --top 40 --group-width 16    # the kernels of a group of 16's step
    python scripts/bench_epoch.py --device cuda --impl ours --modes deterministic \
        --inductor combo_kernels=true    # with an Inductor option set
    python scripts/bench_epoch.py --device cpu --epochs 3 --impl ours,original

Rows: ``ours`` (CUDA graphs and torch.compile, the defaults; on the CPU compiled too, as
``cpu_compile: true`` does), ``ours-nocompile`` (graphs only; on the CPU the default, eager),
``ours-eager`` (neither), each in deterministic and fast (non-deterministic) mode and
each ``--precisions`` of CUDA float32 matmuls (``ieee``, the default, or ``tf32``), and
``original`` (PyPI ``invae==0.1.0`` ``FinVAE``, installed with
``pip install --no-deps invae==0.1.0``). The first epoch is warm-up (allocation, graph capture)
and reported apart; the figure quoted is the median of the others.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time

import torch

from trainables.config import DataConfig, load_train_config
from trainables.data import prepare_data
from trainables.model import InVAE
from trainables.prepared import PreparedData
from trainables.train import train


def epoch_times(run) -> list[float]:
    """Run ``run(report)`` and return the seconds between successive report calls."""
    stamps = [time.perf_counter()]
    run(lambda *_: stamps.append(time.perf_counter()))
    return [b - a for a, b in itertools.pairwise(stamps)]


def bench_ours(data: PreparedData, args, mode: str, impl: str, precision: str) -> list[float]:
    cfg = load_train_config(
        overrides={
            "n_epochs": args.epochs,
            "device": args.device,
            "cpu_threads": args.threads,
            "deterministic": mode == "deterministic",
            "cuda_matmul_precision": precision,
            "cuda_graphs": impl != "ours-eager",
            "compile": impl == "ours",
            "cpu_compile": impl == "ours",  # on the CPU, "ours" compiles too (opt-in there)
            "group_width": args.group_width,
        }
    )
    return epoch_times(lambda report: train(cfg, data, report=report))


def bench_original(data: PreparedData, args) -> list[float]:
    """The original FinVAE: its own AnnLoader pipeline, Adam, same sizes (one call per epoch)."""
    import anndata as ad
    import pandas as pd
    from inVAE import FinVAE

    split = data.train
    obs = pd.DataFrame(
        {
            "celltype": pd.Categorical(split.bio_codes[:, 0].astype(str)),
            "tech": pd.Categorical(split.tech_codes[:, 0].astype(str)),
        }
    )
    model = FinVAE(
        adata=ad.AnnData(X=split.counts, obs=obs),
        layer=None,
        inv_covar_keys={"cat": ["celltype"], "cont": []},
        spur_covar_keys={"cat": ["tech"], "cont": []},
        latent_dim_inv=30,
        latent_dim_spur=5,
        n_layers=2,
        hidden_dim=128,
        device="cuda" if args.device.startswith("cuda") else "cpu",
        batch_size=256,
        dropout_rate=0.1,
    )

    def run(report):
        for _ in range(args.epochs):
            model.train(n_epochs=1, lr_train=1e-3, weight_decay=1e-4, print_every_n_epochs=10**6)
            report()

    return epoch_times(run)


def profile_kernels(data: PreparedData, args, compile_: bool) -> dict[str, object]:
    """Kernels per training step and their GPU time, eager (one profiled epoch after a warm one)."""
    from torch.profiler import ProfilerActivity, profile

    overrides = {
        "device": args.device,
        "cuda_graphs": False,
        "compile": compile_,
        "group_width": args.group_width,
    }
    train(load_train_config(overrides={**overrides, "n_epochs": 1}), data)  # compile, warm up
    cfg = load_train_config(overrides={**overrides, "n_epochs": 1})
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        train(cfg, data)
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    steps = data.train.n_cells // cfg.batch_size
    total_us = sum(e.self_device_time_total for e in kernels)
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[: args.top]
    return {
        "compile": compile_,
        "kernels_per_step": sum(e.count for e in kernels) / steps,
        "gpu_ms_per_step": total_us / steps / 1000,
        "top": [
            (e.key[:60], round(e.self_device_time_total / steps, 1), e.count // steps) for e in top
        ],
    }


def floor_counts(data: PreparedData, batch_size: int) -> dict[str, float]:
    """Arithmetic of one epoch: matmul FLOPs (forward + backward = 3x forward) and steps."""
    cfg = load_train_config()
    model = InVAE(data.n_genes, data.n_bio, data.n_tech, cfg.model)
    macs_per_cell = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    steps = data.train.n_cells // batch_size
    return {
        "steps_per_epoch": steps,
        "matmul_gflop_per_epoch": 3 * 2 * macs_per_cell * steps * batch_size / 1e9,
        "counts_mb_per_epoch": steps * batch_size * data.n_genes * 4 / 1e6,
    }


def set_inductor_options(assignments: list[str]) -> None:
    """Apply ``KEY=VALUE`` settings to ``torch._inductor.config`` (an unknown key is an error)."""
    import torch._inductor.config as inductor_config
    import yaml

    for assignment in assignments:
        key, _, value = assignment.partition("=")
        if not hasattr(inductor_config, key):
            raise SystemExit(f"--inductor: torch._inductor.config has no option {key!r}")
        setattr(inductor_config, key, yaml.safe_load(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--impl", default="ours,ours-nocompile,ours-eager,original")
    parser.add_argument("--modes", default="deterministic,fast")
    parser.add_argument(
        "--precisions", default="ieee", help="CUDA float32 matmuls of ours: ieee, tf32 or both"
    )
    parser.add_argument(
        "--group-width",
        type=int,
        default=1,
        help="ours: the trial trains in a group of this width, its other slots empty (a "
        "group computes every slot whether a trial holds it or not)",
    )
    parser.add_argument(
        "--inductor",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set torch._inductor.config.KEY (a YAML value) before anything compiles, e.g. "
        "combo_kernels=true",
    )
    parser.add_argument("--profile", action="store_true", help="count kernels per step (CUDA)")
    parser.add_argument("--top", type=int, default=6, help="kernels listed by the profile")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    set_inductor_options(args.inductor)

    data = prepare_data(DataConfig())
    rows = []
    for impl in args.impl.split(","):
        if impl == "original":
            settings = [("(its own)", "ieee")]
        else:
            settings = list(itertools.product(args.modes.split(","), args.precisions.split(",")))
        for mode, precision in settings:
            if impl == "original":
                times = bench_original(data, args)
            else:
                times = bench_ours(data, args, mode, impl, precision)
            later = times[1:] or times
            rows.append(
                {
                    "impl": impl,
                    "mode": mode,
                    "precision": precision,
                    "first_epoch_s": times[0],
                    "median_epoch_s": statistics.median(later),
                    "min_epoch_s": min(later),
                }
            )
    baseline = next((r["median_epoch_s"] for r in rows if r["impl"] == "original"), None)
    on_gpu = args.device.startswith("cuda")
    header = {
        "device": torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": args.threads,
        "cells_train": data.train.n_cells,
        "genes": data.n_genes,
        "inductor": ",".join(args.inductor) or "-",
        **floor_counts(data, 256),
    }
    print(
        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in header.items())
    )
    print(
        f"{'impl':<12}{'mode':<15}{'precision':<10}{'first s':>9}{'median s/epoch':>16}"
        f"{'min':>9}{'speed-up':>10}"
    )
    for r in rows:
        speedup = f"{baseline / r['median_epoch_s']:.1f}x" if baseline else "-"
        print(
            f"{r['impl']:<12}{r['mode']:<15}{r['precision']:<10}{r['first_epoch_s']:>9.3f}"
            f"{r['median_epoch_s']:>16.4f}{r['min_epoch_s']:>9.4f}{speedup:>10}"
        )
    profiles = [profile_kernels(data, args, c) for c in (False, True)] if args.profile else []
    for p in profiles:
        print(
            f"compile={p['compile']}: {p['kernels_per_step']:.0f} kernels/step, "
            f"{p['gpu_ms_per_step']:.3f} ms GPU/step; top (name, us/step, launches/step):"
        )
        for name, us, n in p["top"]:
            print(f"    {us:>8.1f} us  x{n:<3} {name}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "rows": rows, "profiles": profiles}, handle, indent=2)


if __name__ == "__main__":
    main()
