"""Reproducibility audits: run N replicates of one config, then verify them bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sweeper.driver import publish_outputs, run_trials
from sweeper.options import DriverOptions, sweep_dir
from sweeper.results import Summary
from sweeper.spec import LoadedSweep
from sweeper.storage import SweepFolder
from sweeper.verify.analysis import verification_path, verify_sweep, write_verification
from sweeper.verify.records import Verification
from sweeper.verify.seal import write_seal


@dataclass(frozen=True)
class AuditOutcome:
    """What an audit found and made: the verdict, its HTML report, the sweep's summary."""

    verification: Verification
    report: str
    summary: Summary


def audit_sweep(
    sweep: LoadedSweep,
    seed: int | None = None,
    repeats: int | None = None,
    deterministic: bool | None = None,
) -> LoadedSweep:
    """Turn a sweep into an audit: one config (no search), one seed, ``repeats`` replicates.

    Args:
        sweep: The loaded sweep file (``configs/audit.yaml``, or any sweep).
        seed: The seed to audit (default: the file's first seed).
        repeats: Number of replicates (default: the file's).
        deterministic: Audit deterministic (True) or non-deterministic (False) mode.

    Returns:
        The audit sweep, named ``<name>-<time>`` so audits never collide.
    """
    spec = replace(
        sweep.spec,
        seeds=(sweep.spec.seeds[0] if seed is None else seed,),
        replicates=repeats or sweep.spec.replicates,
        search={},
        num_samples=1,
        scheduler=None,  # early stopping would cut replicates short
        name=f"{sweep.spec.name}-{datetime.now():%Y%m%d-%H%M%S}",
    )
    train = sweep.train
    if deterministic is not None:
        train = replace(train, deterministic=deterministic)
    return replace(sweep, spec=spec, train=train)


def run_audit(
    sweep: LoadedSweep,
    options: DriverOptions,
    on_verdict: Callable[[Verification, str], None] | None = None,
) -> AuditOutcome:
    """Run the audit's replicates as Ray trials, verify them, then make the sweep's outputs.

    The verdict comes first: the trials' files are sealed and verified, and the verification
    written, before any embedding, picture, report or W&B report run is made, so a failing
    output can neither hide nor prevent it. The outputs are sealed too, at the end.
    Replicates run on different nodes where the cluster has several.

    Args:
        sweep: The audit (``audit_sweep``), with ``apply_options`` applied.
        options: Where the trials run.
        on_verdict: Called with the verification and its report's location as soon as they
            are written (the command line prints them there).

    Returns:
        The verification, its report and the summary (``outputs.error`` if outputs failed).
    """
    folder = sweep_dir(sweep)
    summary = run_trials(sweep, replace(options, spread_replicates=True))
    write_seal(folder)
    verification, html = verify_and_publish(folder)
    if on_verdict is not None:
        on_verdict(verification, html)
    summary = publish_outputs(sweep, folder, summary)
    write_seal(folder)
    return AuditOutcome(verification, html, summary)


def verify_and_publish(folder: SweepFolder) -> tuple[Verification, str]:
    """Verify a sweep folder and write the verification JSON, markdown and HTML report into it.

    A remote folder is verified through a local copy.

    Returns:
        The verification and the HTML report's location.

    Raises:
        ResultFileError: ``summary.json`` is missing or not a sweep summary (named).
    """
    from sweeper.verify.report import write_verification_report

    local = folder.download()
    verification = verify_sweep(local)
    write_verification(verification, verification_path(local))
    _, html = write_verification_report(verification, local)
    if folder.local is not None:
        return verification, str(html)
    for path in sorted(local.glob("verification*")):
        folder.write_bytes(path.name, path.read_bytes())
    return verification, f"{folder}/{html.name}"
