"""Reproducibility audits: run N replicates of one config, then verify them bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sweeper.driver import SweepOutcome, run_sweep
from sweeper.options import DriverOptions
from sweeper.spec import LoadedSweep, SearcherSpec
from sweeper.verify.records import Verification


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
        searcher=SearcherSpec(),  # one config: nothing to search
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
) -> SweepOutcome:
    """Run an audit's replicates as a sweep: verified, then its outputs made (``run_sweep``).

    Replicates run on different nodes where the cluster has several.

    Args:
        sweep: The audit (``audit_sweep``), with ``apply_options`` applied.
        options: Where the trials run.
        on_verdict: Called with the verification and its report's location as soon as they
            are written (the command line prints them there).
    """
    return run_sweep(sweep, replace(options, spread_replicates=True), on_verdict=on_verdict)
