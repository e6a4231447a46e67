"""Command-line entry points. Each is thin: parse, load config, call a library function, exit.

Exit codes: 0 success, 1 a run failed, 2 bad usage, config or input data (one line naming the
file, option or key), 130 interrupted (Ctrl-C; one line).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sweeper.benchmark.records import TRAINED_BASELINES
from sweeper.overrides import load_configs, parse_overrides
from trainables.schema import ConfigError

if TYPE_CHECKING:  # for annotations: the commands import sweeper.options where they use it
    from sweeper.options import DriverOptions

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a reader that went away

# Overrides that make any command small enough to finish in seconds on a CPU.
SMOKE_TRAIN = {"n_epochs": 2, "batch_size": 64, "model.hidden": [32, 32]}
SMOKE_DATA = {
    "simulation.n_cells": 400,
    "simulation.n_genes": 300,
    "simulation.n_batches": 2,
    "simulation.n_cell_types": 3,
    "n_top_genes": 200,
}


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run a command: a user error is one line and exit 2, Ctrl-C one line and exit 130.

    User errors are bad configs, options, data or result files and folders that cannot be
    used; anything else is a bug and keeps its traceback. Data warnings print as one line.
    """
    from sweeper.spec import SweepError
    from trainables.datasets import DataError, DataWarning
    from trainables.files import OutputFolderError, ResultFileError

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, DataWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        try:
            return command()
        except KeyboardInterrupt as err:
            detail = str(err) or "nothing half-written was left behind"
            print(f"{prog}: interrupted: {detail}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (ConfigError, SweepError, DataError, ResultFileError, OutputFolderError) as err:
            return _fail(prog, err, EXIT_USAGE)
        except BrokenPipeError:
            if not _stdout_is_gone():
                raise  # another pipe broke: a bug, with its traceback
            return EXIT_BROKEN_PIPE  # output piped into `head`: stop quietly, as cat does


def _stdout_is_gone() -> bool:
    """Whether stdout is a pipe whose reader went away; if so, it now writes to /dev/null.

    The write end of such a pipe polls as an error. Python flushes stdout once more at exit,
    which would fail again on the closed pipe.
    """
    import select

    poll = select.poll()
    poll.register(sys.stdout.fileno(), select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poll.poll(0)):
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return True


def _fail(prog: str, err: BaseException, code: int) -> int:
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def train_main(argv: Sequence[str] | None = None) -> int:
    """``invae-train``: one training run without Ray, written to ``--out``."""
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
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
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
    return run_command(parser.prog, lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from trainables.standalone import print_progress, run_standalone
    from trainables.train import NonFiniteLossError
    from trainables.wandb_run import WandbSettings

    train_over, data_over = parse_overrides(args.set)
    if args.smoke:
        train_over, data_over = SMOKE_TRAIN | train_over, SMOKE_DATA | data_over
    train_cfg, data_cfg = load_configs(args.config, args.data_config, train_over, data_over)
    try:
        result = run_standalone(
            train_cfg,
            data_cfg,
            args.out,
            WandbSettings(mode=args.wandb, project=args.wandb_project),
            progress=print_progress(train_cfg.n_epochs),
            overwrite=args.overwrite,
        )
    except NonFiniteLossError as err:
        return _fail("invae-train", err, EXIT_FAILED)
    print(f"wrote {args.out}/run.json  weights sha256 {result.fingerprint.weights[:16]}…")
    return EXIT_OK


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """``invae-sweep``: run a Ray Tune sweep of inVAE trials from one YAML file."""
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
    return run_command(parser.prog, lambda: _sweep(parser.prog, args))


def _sweep(prog: str, args: argparse.Namespace) -> int:
    from sweeper.driver import placement_text, run_sweep, trial_table
    from sweeper.options import apply_options, sweep_dir
    from sweeper.report import format_summary, format_table
    from sweeper.searchers import plan_text
    from sweeper.spec import load_sweep
    from sweeper.verify.verdict import verdict_line

    options = _driver_options(args, resume=args.resume)
    overrides = _smoke_sweep_overrides() if args.smoke else None
    sweep = apply_options(load_sweep(args.config, overrides), options)
    if args.dry_run:
        n_gpus, n_cpus = _dry_run_gpus(args.gpus), _dry_run_cpus(options)
        print(f"{plan_text(sweep)} -> {sweep_dir(sweep)}")
        print(format_table(trial_table(sweep, n_gpus, n_cpus)))
        print(placement_text(sweep, n_gpus, n_cpus))
        return EXIT_OK
    outcome = run_sweep(sweep, options)
    summary = outcome.summary
    print(format_summary(summary))
    print(f"verification: {verdict_line(outcome.verification)} (report: {outcome.report})")
    print(f"results: {sweep_dir(sweep)}")
    failed = _outputs_failed(prog, summary) or outcome.verification.exit_code != 0
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


def _driver_options(args: argparse.Namespace, resume: bool = False) -> Any:
    from sweeper.options import DriverOptions

    return DriverOptions(
        gpus=args.gpus,
        cpus=args.cpus,
        address=args.address,
        name=args.name,
        storage=args.storage,
        resume=resume,
    )


def _smoke_sweep_overrides() -> dict[str, Any]:
    return {f"train.{k}": v for k, v in SMOKE_TRAIN.items()} | {
        f"data.{k}": v for k, v in SMOKE_DATA.items()
    }


def _dry_run_cpus(options: DriverOptions) -> float | None:
    """The CPUs a Ray started here would have: ``--cpus``, else this machine's as Ray counts them.

    None for a cluster (``--address`` or ``RAY_ADDRESS``), whose CPUs a dry run does not ask for.
    """
    if options.cluster_address:
        return None
    if options.cpus is not None:
        return options.cpus
    from ray._private.utils import get_num_cpus  # what ray.init(num_cpus=None) counts

    return get_num_cpus()


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
    parser = argparse.ArgumentParser(
        prog="invae-verify",
        description=verify_main.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", help="a sweep folder (holding summary.json), or its URI")
    parser.add_argument("--json", metavar="OUT", help="also write the verification JSON here")
    args = parser.parse_args(argv)
    return run_command(parser.prog, lambda: _verify(args))


def _verify(args: argparse.Namespace) -> int:
    from sweeper.storage import SweepFolder
    from sweeper.verify.analysis import write_verification
    from sweeper.verify.report import publish_verification
    from sweeper.verify.verdict import format_verdict
    from trainables.files import ResultFileError

    try:
        verification, html = publish_verification(SweepFolder(args.sweep_dir))
        if args.json:
            write_verification(verification, args.json)
    except OSError as err:  # the reports cannot be written there
        raise ResultFileError(args.sweep_dir, f"cannot write the verification ({err})") from None
    print(format_verdict(verification))
    print(f"report: {html}")
    return verification.exit_code


def audit_main(argv: Sequence[str] | None = None) -> int:
    """``invae-audit``: run N replicates of one config as Ray trials and verify them."""
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
    return run_command(parser.prog, lambda: _audit(parser.prog, args))


def _audit(prog: str, args: argparse.Namespace) -> int:
    from sweeper.audit import audit_sweep, run_audit
    from sweeper.options import apply_options
    from sweeper.spec import load_sweep
    from sweeper.verify.verdict import format_verdict

    if args.repeats is not None and args.repeats < 2:
        raise ConfigError(
            "", f"got {args.repeats}; allowed: >= 2, to compare anything", "--repeats"
        )
    if args.seed is not None and args.seed < 0:
        raise ConfigError("", f"got {args.seed}; allowed: an integer >= 0", "--seed")
    options = _driver_options(args)
    sweep = load_sweep(args.config, _smoke_sweep_overrides() if args.smoke else None)
    deterministic = None if args.deterministic is None else args.deterministic == "true"
    sweep = apply_options(audit_sweep(sweep, args.seed, args.repeats, deterministic), options)

    def show(verification: Any, html: str) -> None:  # the verdict, before the outputs
        print(format_verdict(verification))
        print(f"report: {html}", flush=True)

    outcome = run_audit(sweep, options, on_verdict=show)
    failed = _outputs_failed(prog, outcome.summary)
    return outcome.verification.exit_code or (EXIT_FAILED if failed else EXIT_OK)


def reproduce_main(argv: Sequence[str] | None = None) -> int:
    """``invae-reproduce``: rerun a recorded run and compare fingerprints bit for bit."""
    parser = argparse.ArgumentParser(prog="invae-reproduce", description=reproduce_main.__doc__)
    parser.add_argument("run_dir", help="a folder holding run.json (a trial folder, best/, ...)")
    parser.add_argument("--out", help="where the rerun goes (default: a temporary folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    args = parser.parse_args(argv)
    return run_command(parser.prog, lambda: _reproduce(args))


def _reproduce(args: argparse.Namespace) -> int:
    import tempfile

    from sweeper.verify.reproduce import reproduce_run
    from sweeper.verify.verdict import format_reproduction

    out = args.out or tempfile.mkdtemp(prefix="invae-reproduce-")
    outcome = reproduce_run(args.run_dir, out, overwrite=args.overwrite)
    print(format_reproduction(outcome))
    return EXIT_OK if outcome.reproduced else EXIT_FAILED


def embed_main(argv: Sequence[str] | None = None) -> int:
    """``invae-embed``: every cell's z_i and z_s from a trained run, written to an .h5ad."""
    parser = argparse.ArgumentParser(prog="invae-embed", description=embed_main.__doc__)
    parser.add_argument("run_dir", help="a folder holding run.json and model.pt")
    parser.add_argument("--data", help="an .h5ad to embed (default: the run's own input data)")
    parser.add_argument("--counts-layer", help="layer holding raw counts (default: the run's)")
    parser.add_argument("--umap", action="store_true", help="also store a UMAP of z_i")
    parser.add_argument("--out", required=True, help="the .h5ad to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    return run_command(parser.prog, lambda: _embed(args))


def _embed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainables.embed import embed_run
    from trainables.files import prepare_output_folder, remove_if_empty

    out = Path(args.out)
    created = prepare_output_folder(out.parent, (out.name,), args.overwrite)
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
        path, embedded = embed_run(args.run_dir, out, overrides, extra)
    except BaseException:  # leave no empty folders behind
        if created is not None:
            remove_if_empty(created)
        raise
    n_cells = len(embedded["obs"])
    print(f"wrote {path}: {n_cells} cells, obsm {', '.join(embedded['obsm'])}")
    return EXIT_OK


def benchmark_main(argv: Sequence[str] | None = None) -> int:
    """``invae-benchmark``: the scIB benchmark (scib-metrics) of a finished sweep's best trials.

    Each embedded best trial's z_i is scored on every cell beside PCA and, when installed, the
    original inVAE's FinVAE and scVI, trained on the trial's training cells for its epochs. The
    table and plot go into the report, summary.json and W&B; the folder is sealed anew.
    """
    parser = argparse.ArgumentParser(prog="invae-benchmark", description=benchmark_main.__doc__)
    parser.add_argument("sweep_dir", help="a finished sweep folder (holding summary.json)")
    parser.add_argument(
        "--baselines",
        nargs="*",
        choices=TRAINED_BASELINES,
        metavar="NAME",
        help=f"trained baselines beside PCA, of {', '.join(TRAINED_BASELINES)}; none: PCA only "
        "(default: the sweep's outputs.baselines)",
    )
    args = parser.parse_args(argv)
    return run_command(parser.prog, lambda: _benchmark(parser.prog, args))


def _benchmark(prog: str, args: argparse.Namespace) -> int:
    from sweeper.benchmark.publish import benchmark_sweep
    from sweeper.benchmark.scib import missing_reason

    if args.baselines is not None and len(set(args.baselines)) < len(args.baselines):
        allowed = ", ".join(TRAINED_BASELINES)
        why = f"--baselines: got {' '.join(args.baselines)}; allowed: distinct names of {allowed}"
        return _fail(prog, ValueError(why), EXIT_USAGE)
    missing = missing_reason()
    if missing is not None:
        return _fail(prog, ValueError(missing), EXIT_USAGE)
    baselines = None if args.baselines is None else tuple(args.baselines)
    summary, seal = benchmark_sweep(args.sweep_dir, baselines)
    for trial in summary.outputs.benchmark.trials:
        totals = ", ".join(f"{row.embedding} {row.total:.3f}" for row in trial.rows)
        print(f"trial {trial.trial_id}: scIB total {totals} ({args.sweep_dir}/{trial.folder})")
        for line in trial.absent:
            print(f"  baseline absent: {line}")
    print(f"report: {args.sweep_dir}/report.html; sealed anew: SHA256SUMS sha256 {seal}")
    return EXIT_OK
