"""The verification of a finished sweep folder, recomputed from its files. No Ray.

1. The seal: every file against ``SHA256SUMS`` (added, missing, changed).
2. Every run: its ``run.json`` and ``model.pt`` read once, its fingerprint recomputed and
   checked against its record (``evidence``). A run whose files disagree with its record is
   ``altered`` and compared with nothing.
3. Replicate groups: trials that share hyperparameters, seed and deterministic flag and differ
   only in their replicate index, compared on their recomputed digests (``comparison``). A
   group is ``identical``, ``diverged`` (with where and by how much), ``not_comparable``
   (their environments rule out bit equality: tolerance figures instead), ``incomplete`` (a
   member did not complete, or its files are missing or unreadable) or ``altered``.
4. ``summary.json`` and ``best/`` against the runs they describe.

Nothing a file says about itself is taken on trust: ``summary.json`` only says which trials
exist and where; their digests and environments come from their own files.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sweeper.results import BEST_DIR, COMPLETED, SUMMARY_FILE, Summary, TrialEntry
from sweeper.storage import SweepFolder
from sweeper.verify.comparison import bit_environment, compare_runs, loss_spread
from sweeper.verify.evidence import RunEvidence, read_evidence
from sweeper.verify.records import (
    ALTERED,
    DIVERGED,
    EXIT_FAIL,
    EXIT_INCOMPLETE,
    EXIT_PASS,
    IDENTICAL,
    INCOMPLETE,
    NOT_COMPARABLE,
    SEVERITY,
    VERIFICATION_FILE,
    Alteration,
    FileProblem,
    GroupVerdict,
    Member,
    SealCheck,
    Verification,
)
from sweeper.verify.seal import FolderReader, check_seal
from trainables.constants import MODEL_FILE, RUN_FILE
from trainables.files import ResultFileError, atomic_write_json
from trainables.schema import config_to_dict, parse_record


def verify_sweep(folder: str | Path) -> Verification:
    """Verify a finished sweep folder on a local or shared filesystem.

    Raises:
        ResultFileError: ``summary.json`` is missing, corrupt or not a sweep summary, so there
            is nothing to verify (the message names the file and the key).
    """
    reader = FolderReader(SweepFolder(folder))
    summary = _read_summary(reader)
    groups: dict[str, list[TrialEntry]] = {}
    for trial in summary.trials:
        groups.setdefault(json.dumps([trial.params, trial.seed], sort_keys=True), []).append(trial)
    altered: list[Alteration] = []
    problems: list[FileProblem] = []
    verdicts = []
    for members in groups.values():
        verdict, found = verify_group(reader, members)
        verdicts.append(verdict)
        altered += found
        problems += [_problem(m.problem) for m in verdict.members if m.problem]
    best_altered, best_problems = _check_best(reader, summary)
    seal = check_seal(reader)  # last: every file read above is hashed already
    if not seal.found:
        problems.insert(0, FileProblem(f"{reader.folder}/{seal.file}", seal.error or ""))
    problems += best_problems
    problems += [
        FileProblem(f"{reader.folder}/{path}", "sealed, but missing") for path in seal.missing
    ]
    unique = {p.path: p for p in reversed(problems)}  # a file named twice: its first reason
    return _finish(
        str(reader.folder),
        summary.metric,
        seal,
        verdicts,
        tuple(altered + best_altered),
        tuple(p for p in problems if unique[p.path] is p),
    )


def verify_group(
    reader: FolderReader, trials: list[TrialEntry]
) -> tuple[GroupVerdict, list[Alteration]]:
    """Read every member's files once, check each against itself, compare the usable ones.

    Returns:
        The group's verdict, and where ``summary.json`` disagrees with the members' records.
    """
    trials = sorted(trials, key=lambda t: t.replicate)
    members, evidence, summary_altered = [], [], []
    for trial in trials:
        member, run = _read_member(reader, trial)
        members.append(member)
        if run is None:
            continue
        disagreements = _summary_disagreements(trial, run, evidence[0] if evidence else None)
        summary_altered += disagreements
        if member.usable and not disagreements:
            evidence.append(run)
    comparisons = tuple(compare_runs(evidence[0], other) for other in evidence[1:])
    deterministic = evidence[0].record.seeding.deterministic if evidence else None
    histories = {run.label: _curve(run) for run in evidence}
    status = _group_status(members, comparisons)
    verdict = GroupVerdict(
        status=status,
        params=trials[0].params,
        seed=trials[0].seed,
        deterministic=deterministic,
        members=tuple(members),
        histories=histories,
        comparisons=comparisons,
        loss_spread=loss_spread(list(histories.values()))
        if status != IDENTICAL and len(histories) >= 2
        else None,
        note="identical, although deterministic mode was off"
        if status == IDENTICAL and deterministic is False
        else None,
    )
    return verdict, summary_altered


def write_verification(verification: Verification, path: str | Path) -> Path:
    """Write a verification as JSON (atomically) to ``path``."""
    return atomic_write_json(path, config_to_dict(verification))


def verification_path(folder: str | Path) -> Path:
    """Where a sweep folder's ``verification.json`` goes."""
    return Path(folder) / VERIFICATION_FILE


def _read_summary(reader: FolderReader) -> Summary:
    where = f"{reader.folder}/{SUMMARY_FILE}"
    if not reader.folder.exists(SUMMARY_FILE):
        raise ResultFileError(where, "not found: not a finished sweep folder")
    return parse_record(Summary, reader.read(SUMMARY_FILE), where)


def _read_member(reader: FolderReader, trial: TrialEntry) -> tuple[Member, RunEvidence | None]:
    base = Member(trial.trial_id, trial.replicate, trial.status, trial.run_json)
    if trial.status != COMPLETED or trial.run_json is None:
        return base, None
    run_dir = trial.run_json.rsplit("/", 1)[0] if "/" in trial.run_json else ""
    try:
        run = read_evidence(reader, run_dir, trial.trial_id)
    except ResultFileError as err:
        return replace(base, problem=str(err)), None
    member = replace(
        base,
        digests=run.recomputed.digests,
        environment=bit_environment(run.record),
        altered=run.altered,
    )
    return member, run


def _summary_disagreements(
    trial: TrialEntry, run: RunEvidence, reference: RunEvidence | None
) -> list[Alteration]:
    """Where ``summary.json``'s entry of a trial is not what the trial's own files say.

    A trial whose config is not the group reference's is no replicate of it, whatever the
    summary says.
    """
    record = run.record
    facts = {
        "seed": (trial.seed, record.config.train.get("seed")),
        "replicate": (trial.replicate, record.trial.replicate if record.trial else None),
        "trial id": (trial.trial_id, record.trial.trial_id if record.trial else None),
        "fingerprint": (trial.fingerprint, record.fingerprint.digests),
    }
    found = [
        f"gives trial {trial.trial_id} another {what} than its {RUN_FILE} does"
        for what, (claimed, actual) in facts.items()
        if claimed != actual
    ]
    if reference is not None and reference.record.config != record.config:
        found.append(
            f"groups trial {trial.trial_id} with {reference.label} as replicates, but their "
            f"{RUN_FILE} configs differ"
        )
    files = (SUMMARY_FILE, trial.run_json or "")
    return [Alteration(files, "summary", f"{SUMMARY_FILE} {what}") for what in found]


def _check_best(reader: FolderReader, summary: Summary) -> tuple[list, list]:
    """``best/`` must hold byte-identical copies of the best trial's run.json and model.pt."""
    if summary.best_trial is None:
        return [], []
    try:
        best = summary.trial(summary.best_trial)
    except KeyError:
        detail = f"{SUMMARY_FILE} names best trial {summary.best_trial}, which it does not list"
        return [Alteration((SUMMARY_FILE,), "summary", detail)], []
    altered, problems = [], []
    for name in (RUN_FILE, MODEL_FILE):
        copy, original = f"{BEST_DIR}/{name}", f"{best.trial_dir}/{name}"
        try:
            same = reader.digest(copy) == reader.digest(original)
        except ResultFileError as err:
            problems.append(_problem(str(err)))
            continue
        if not same:
            detail = f"{copy} is not a copy of the best trial's {name} ({original})"
            altered.append(Alteration((copy,), "best copy", detail))
    return altered, problems


def _group_status(members: list[Member], comparisons: tuple) -> str:
    if any(m.altered for m in members):
        return ALTERED
    outcomes = {
        IDENTICAL if c.identical else NOT_COMPARABLE if c.not_comparable_because else DIVERGED
        for c in comparisons
    }
    if DIVERGED in outcomes:  # one diverged comparison fails the group, whatever else is
        return DIVERGED
    if len(comparisons) + 1 < len(members) or not comparisons:
        return INCOMPLETE
    return NOT_COMPARABLE if NOT_COMPARABLE in outcomes else IDENTICAL


def _finish(
    sweep: str,
    metric: str,
    seal: SealCheck,
    groups: list[GroupVerdict],
    altered: tuple[Alteration, ...],
    problems: tuple[FileProblem, ...],
) -> Verification:
    counts = Counter(g.status for g in groups)
    any_altered = altered or counts[ALTERED] or seal.added or seal.changed
    if problems:
        verdict, code = "INCOMPLETE", EXIT_INCOMPLETE
    elif any_altered or counts[DIVERGED]:
        verdict, code = "FAIL", EXIT_FAIL
    elif counts[IDENTICAL]:
        verdict, code = "PASS", EXIT_PASS
    else:
        verdict, code = "INCONCLUSIVE", EXIT_PASS
    return Verification(
        sweep=sweep,
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
        metric=metric,
        seal=seal,
        groups=tuple(groups),
        altered=altered,
        problems=problems,
        counts={s: counts[s] for s in SEVERITY},
        verdict=verdict,
        exit_code=code,
    )


def _curve(run: RunEvidence) -> dict[str, tuple[float, ...]]:
    history = run.record.history
    return {k: tuple(row[k] for row in history) for k in ("epoch", "train_loss", "val_loss")}


def _problem(message: str) -> FileProblem:
    path, _, reason = message.partition(": ")
    return FileProblem(path, reason or message)
