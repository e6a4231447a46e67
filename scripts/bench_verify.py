"""How long ``invae-verify`` takes on the default sweep's shape: 24 trials of pancreas-size models.

    python scripts/bench_verify.py                      # run the sweep (1 epoch), then verify
    python scripts/bench_verify.py --folder runs/x      # verify an existing sweep folder

Runs ``configs/sweep.yaml`` (24 trials, 4,000 genes, hidden 128 x 128) on the CPU for
``--epochs`` epochs (the files a trial leaves have the same size whatever its epoch count, but
for its history), then times, each ``--repeats`` times: ``invae-verify`` as a user runs it (a
fresh process: imports, the seal check, every run recomputed, the reports written), and the
seal alone (``write_seal``). Prints one table row per measurement with the folder's size.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).parents[1] / "configs" / "sweep.yaml"


def build(storage: Path, epochs: int) -> Path:
    """Run the default sweep's 24 trials on the CPU for a few epochs; return its folder."""
    from sweeper.driver import run_sweep
    from sweeper.options import DriverOptions
    from sweeper.spec import load_sweep

    overrides = {
        "name": "verify-bench",
        "storage_path": str(storage),
        "train.n_epochs": epochs,
        "train.device": "cpu",
        "train.compile": False,
        "checkpoint_every": 0,
        "outputs.best_n": 0,
        "wandb.mode": "disabled",
    }
    summary = run_sweep(load_sweep(CONFIG, overrides), DriverOptions(gpus=0)).summary
    if summary.n_completed != summary.n_trials:
        sys.exit(f"only {summary.n_completed} of {summary.n_trials} trials completed")
    return storage / "verify-bench"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="verify this sweep folder (no new sweep)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the sweep's trials")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = args.folder or build(Path(tempfile.mkdtemp(prefix="bench-verify-")), args.epochs)
    from sweeper.results import load_summary
    from sweeper.storage import SweepFolder
    from sweeper.verify.seal import write_seal

    summary = load_summary(folder)
    sweep = SweepFolder(folder)
    files = sweep.list_files()
    size = sum((folder / f).stat().st_size for f in files)
    model_mb = statistics.median(
        (folder / t.trial_dir / "model.pt").stat().st_size / 2**20 for t in summary.trials
    )
    verify = [timed(["invae-verify", str(folder)]) for _ in range(args.repeats)]
    seal = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        write_seal(sweep)
        seal.append(time.perf_counter() - started)
    print(
        f"folder: {folder}  ({summary.n_trials} trials, {len(files)} files, {size / 2**20:.0f} MB)"
    )
    print(f"{'what':<32} {'median s':>9} {'min s':>7} {'max s':>7} {'model.pt MB':>12}")
    for what, times in (("invae-verify (a new process)", verify), ("write_seal", seal)):
        row = f"{what:<32} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}"
        print(f"{row} {model_mb:>12.2f}")


if __name__ == "__main__":
    main()
