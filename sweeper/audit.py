"""Reproducibility audits: run N replicates of one config, then verify them bit for bit."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sweeper.analysis import verify_sweep, write_verification
from sweeper.driver import DriverOptions, run_sweep, sweep_dir
from sweeper.spec import LoadedSweep
from sweeper.storage import SweepFolder


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


def run_audit(sweep: LoadedSweep, options: DriverOptions) -> tuple[dict[str, Any], str]:
    """Run the audit's replicates as Ray trials, verify them and write the verification files.

    Replicates run on different nodes where the cluster has several.

    Returns:
        The verification (see ``sweeper.analysis.verify_sweep``) and the HTML report's location.
    """
    run_sweep(sweep, replace(options, spread_replicates=True))
    return verify_and_publish(sweep_dir(sweep))


def verify_and_publish(folder: SweepFolder) -> tuple[dict[str, Any], str]:
    """Verify a sweep folder and write the verification JSON, markdown and HTML report into it.

    A remote folder is verified through a local copy.

    Returns:
        The verification and the HTML report's location.

    Raises:
        ResultFileError: A result file is missing or corrupt (named).
    """
    from sweeper.verification_report import write_verification_report

    local = folder.download()
    verification = verify_sweep(local)
    write_verification(local, verification)
    _, html = write_verification_report(verification, local)
    if folder.local is not None:
        return verification, str(html)
    for path in sorted(local.glob("verification*")):
        folder.write_bytes(path.name, path.read_bytes())
    return verification, f"{folder}/{html.name}"
