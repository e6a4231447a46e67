"""Command-line entry points. Each is thin: parse, load config, call a library function, exit.

Exit codes: 0 success, 1 a run failed, 2 bad usage, config or input data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import yaml

from trainables.config import load_data_config, load_train_config
from trainables.schema import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Overrides that make any command small enough to finish in seconds on a CPU.
SMOKE_TRAIN = {"n_epochs": 2, "batch_size": 64, "model.hidden": [32, 32]}
SMOKE_DATA = {
    "simulation.n_cells": 400,
    "simulation.n_genes": 300,
    "simulation.n_batches": 2,
    "simulation.n_cell_types": 3,
    "n_top_genes": 200,
}


def parse_overrides(pairs: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``key=value`` strings into train and data overrides (``data.`` prefix: data).

    Values are parsed as YAML, so ``--set model.hidden=[64,64]`` gives a list.

    Raises:
        ConfigError: A pair has no ``=`` or an empty key.
    """
    train, data = {}, {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(pair, "expected key=value (e.g. model.z_i_dim=10)", "--set")
        value = yaml.safe_load(raw) if raw else None
        if key.startswith("data."):
            data[key.removeprefix("data.")] = value
        else:
            train[key] = value
    return train, data


def _fail(prog: str, err: BaseException, code: int) -> int:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def train_main(argv: Sequence[str] | None = None) -> int:
    """``invae-train``: one training run without Ray, written to ``--out``."""
    from trainables.datasets import DataError
    from trainables.standalone import WandbSettings, print_progress, run_standalone
    from trainables.train import NonFiniteLossError

    parser = argparse.ArgumentParser(prog="invae-train", description=train_main.__doc__)
    parser.add_argument("--config", help="training config YAML (default: built-in defaults)")
    parser.add_argument("--data-config", help="data config YAML (default: simulated data)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value; data.KEY for the data config (repeatable)",
    )
    parser.add_argument("--out", required=True, help="output folder for run.json and model.pt")
    parser.add_argument(
        "--wandb",
        choices=["off", "offline", "online"],
        default="off",
        help="log to W&B (offline writes a local run you can sync later)",
    )
    parser.add_argument("--wandb-project", default="invae-sweep")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny simulated data and 2 epochs: checks the installation in seconds",
    )
    args = parser.parse_args(argv)
    try:
        train_over, data_over = parse_overrides(args.set)
        if args.smoke:
            train_over, data_over = SMOKE_TRAIN | train_over, SMOKE_DATA | data_over
        train_cfg = load_train_config(args.config, train_over)
        data_cfg = load_data_config(args.data_config, data_over)
        result = run_standalone(
            train_cfg,
            data_cfg,
            args.out,
            WandbSettings(mode=args.wandb, project=args.wandb_project),
            progress=print_progress(train_cfg.n_epochs),
        )
    except (ConfigError, DataError) as err:
        return _fail(parser.prog, err, EXIT_USAGE)
    except NonFiniteLossError as err:
        return _fail(parser.prog, err, EXIT_FAILED)
    print(f"wrote {args.out}/run.json  weights sha256 {result.fingerprint.weights[:16]}…")
    return EXIT_OK


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """``invae-sweep``: run a Ray Tune sweep of inVAE trials from one YAML file."""
    from sweeper.driver import apply_options, run_sweep, sweep_dir, trial_table
    from sweeper.report import format_summary, format_table
    from sweeper.spec import SweepError, load_sweep

    parser = argparse.ArgumentParser(prog="invae-sweep", description=sweep_main.__doc__)
    parser.add_argument("--config", required=True, help="sweep YAML (e.g. configs/sweep.yaml)")
    _add_ray_options(parser, "sweep name: the results folder under the storage path")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    parser.add_argument("--dry-run", action="store_true", help="print the trials, run nothing")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny data and 2 epochs: checks a sweep end to end in a minute",
    )
    args = parser.parse_args(argv)
    options = replace(_driver_options(args), resume=args.resume)
    try:
        overrides = _smoke_sweep_overrides() if args.smoke else None
        sweep = apply_options(load_sweep(args.config, overrides), options)
        if args.dry_run:
            rows = trial_table(sweep, _dry_run_gpus(args.gpus))
            print(f"{len(rows)} trials -> {sweep_dir(sweep)}")
            print(format_table(rows))
            return EXIT_OK
        summary = run_sweep(sweep, options)
    except (ConfigError, SweepError) as err:
        return _fail(parser.prog, err, EXIT_USAGE)
    print(format_summary(summary))
    print(f"results: {sweep_dir(sweep)}")
    failed = _outputs_failed(parser.prog, summary)
    return EXIT_FAILED if summary.n_errored or failed else EXIT_OK


def _outputs_failed(prog: str, summary: Any) -> bool:
    """Say in one line why the post-sweep outputs failed, if they did."""
    error = summary.outputs.error if summary.outputs else None
    if error:
        print(f"{prog}: outputs failed: {error}", file=sys.stderr)
    return bool(error)


def _add_ray_options(parser: argparse.ArgumentParser, name_help: str) -> None:
    """The options saying where trials run and where results go (sweeps and audits)."""
    parser.add_argument("--gpus", type=int, help="GPUs to use (0: CPU trials; default: all)")
    parser.add_argument("--cpus", type=int, help="CPUs of a local Ray (default: all)")
    parser.add_argument("--address", help="an existing Ray cluster (or set RAY_ADDRESS)")
    parser.add_argument("--name", help=name_help)
    parser.add_argument("--storage", help="where result folders go (default: the file's)")


def _driver_options(args: argparse.Namespace) -> Any:
    from sweeper.driver import DriverOptions

    return DriverOptions(
        gpus=args.gpus, cpus=args.cpus, address=args.address, name=args.name, storage=args.storage
    )


def _smoke_sweep_overrides() -> dict[str, Any]:
    return {f"train.{k}": v for k, v in SMOKE_TRAIN.items()} | {
        f"data.{k}": v for k, v in SMOKE_DATA.items()
    }


def _dry_run_gpus(gpus: int | None) -> int:
    if gpus is not None:
        return gpus
    import torch

    return torch.cuda.device_count()


def verify_main(argv: Sequence[str] | None = None) -> int:
    """``invae-verify``: prove a finished sweep's files and its replicates' bits.

    Every fingerprint is recomputed from the files; the folder is checked against its seal.
    Exit 0: every check passed; 1: something was altered or replicates diverged; 2: a file is
    missing or unreadable.
    """
    from sweeper.audit import verify_and_publish
    from sweeper.storage import SweepFolder
    from sweeper.verify.analysis import write_verification
    from sweeper.verify.verdict import format_verdict
    from trainables.files import ResultFileError

    parser = argparse.ArgumentParser(
        prog="invae-verify",
        description=verify_main.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", help="a sweep folder (holding summary.json), or its URI")
    parser.add_argument("--json", metavar="OUT", help="also write the verification JSON here")
    args = parser.parse_args(argv)
    try:
        verification, html = verify_and_publish(SweepFolder(args.sweep_dir))
        if args.json:
            write_verification(verification, args.json)
    except (ResultFileError, OSError) as err:
        return _fail(parser.prog, err, EXIT_USAGE)
    print(format_verdict(verification))
    print(f"report: {html}")
    return verification.exit_code


def audit_main(argv: Sequence[str] | None = None) -> int:
    """``invae-audit``: run N replicates of one config as Ray trials and verify them."""
    from sweeper.audit import audit_sweep, run_audit
    from sweeper.driver import apply_options
    from sweeper.spec import SweepError, load_sweep
    from sweeper.verify.verdict import format_verdict
    from trainables.files import ResultFileError

    parser = argparse.ArgumentParser(prog="invae-audit", description=audit_main.__doc__)
    parser.add_argument("--config", default="configs/audit.yaml", help="audit (or sweep) YAML")
    parser.add_argument("--seed", type=int, help="the seed to audit (default: the file's)")
    parser.add_argument("--repeats", type=int, help="replicates (default: the file's)")
    parser.add_argument(
        "--deterministic",
        choices=["true", "false"],
        help="audit deterministic (default) or non-deterministic mode",
    )
    _add_ray_options(parser, "audit folder name (default: <name>-<date>-<time>)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 2 epochs")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 2:
        return _fail(parser.prog, ValueError("--repeats must be >= 2 to compare anything"), 2)
    options = _driver_options(args)
    try:
        sweep = load_sweep(args.config, _smoke_sweep_overrides() if args.smoke else None)
        deterministic = None if args.deterministic is None else args.deterministic == "true"
        sweep = apply_options(audit_sweep(sweep, args.seed, args.repeats, deterministic), options)

        def show(verification: Any, html: str) -> None:  # the verdict, before the outputs
            print(format_verdict(verification))
            print(f"report: {html}", flush=True)

        outcome = run_audit(sweep, options, on_verdict=show)
    except (ConfigError, SweepError, ResultFileError) as err:
        return _fail(parser.prog, err, EXIT_USAGE)
    failed = _outputs_failed(parser.prog, outcome.summary)
    return outcome.verification.exit_code or (EXIT_FAILED if failed else EXIT_OK)


def reproduce_main(argv: Sequence[str] | None = None) -> int:
    """``invae-reproduce``: rerun a recorded run and compare fingerprints bit for bit."""
    import tempfile

    from sweeper.report import format_table
    from sweeper.verify.reproduce import reproduce_run
    from sweeper.verify.verdict import alteration_line
    from trainables.datasets import DataError
    from trainables.files import ResultFileError

    parser = argparse.ArgumentParser(prog="invae-reproduce", description=reproduce_main.__doc__)
    parser.add_argument("run_dir", help="a folder holding run.json (a trial folder, best/, ...)")
    parser.add_argument("--out", help="where the rerun goes (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="invae-reproduce-")
    try:
        outcome = reproduce_run(args.run_dir, out)
    except (ConfigError, DataError, ResultFileError) as err:
        return _fail(parser.prog, err, EXIT_USAGE)
    comparison = outcome.comparison
    for alteration in outcome.recorded_altered:
        print(f"recorded run altered: {alteration_line(alteration)}")
    differences = [
        {"field": d.field, "recorded": d.values[0], "current": d.values[1], "decisive": d.decisive}
        for d in comparison.environment
    ]
    print("environment: " + ("as recorded" if not differences else "differs from the record:"))
    if differences:
        print(format_table(differences))
    for key, same in comparison.same.items():
        print(f"{key:>9}: {'identical' if same else 'DIFFERENT'}")
    if comparison.not_comparable_because:
        print("not comparable bit for bit: " + ", ".join(comparison.not_comparable_because))
    if comparison.first_divergence:
        first = comparison.first_divergence
        print(f"first divergence: epoch {first.epoch}: {', '.join(first.metrics)}")
    if comparison.differing_tensors:
        rows = [dict(vars(t)) for t in comparison.differing_tensors[:10]]
        print(format_table(rows))
    print(f"rerun: {outcome.rerun}")
    print("REPRODUCED bit for bit" if outcome.reproduced else "NOT REPRODUCED")
    return EXIT_OK if outcome.reproduced else EXIT_FAILED


def embed_main(argv: Sequence[str] | None = None) -> int:
    """``invae-embed``: every cell's z_i and z_s from a trained run, written to an .h5ad."""
    from pathlib import Path

    from trainables.datasets import DataError
    from trainables.embed import embed_run
    from trainables.files import ResultFileError

    parser = argparse.ArgumentParser(prog="invae-embed", description=embed_main.__doc__)
    parser.add_argument("run_dir", help="a folder holding run.json and model.pt")
    parser.add_argument("--data", help="an .h5ad to embed (default: the run's own input data)")
    parser.add_argument("--counts-layer", help="layer holding raw counts (default: the run's)")
    parser.add_argument("--umap", action="store_true", help="also store a UMAP of z_i")
    parser.add_argument("--out", required=True, help="the .h5ad to write")
    args = parser.parse_args(argv)
    overrides = {}
    if args.data:
        overrides["data_path"] = str(Path(args.data).expanduser().resolve())
    if args.counts_layer:
        overrides["counts_layer"] = args.counts_layer
    extra = None
    if args.umap:
        from sweeper.outputs import umap_obsm

        extra = umap_obsm
    try:
        path, embedded = embed_run(args.run_dir, args.out, overrides, extra)
    except (ConfigError, DataError, ResultFileError) as err:
        return _fail(parser.prog, err, EXIT_USAGE)
    n_cells = len(embedded["obs"])
    print(f"wrote {path}: {n_cells} cells, obsm {', '.join(embedded['obsm'])}")
    return EXIT_OK
