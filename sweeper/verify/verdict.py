"""The verification for a terminal: the seal, one row per group, the findings, the verdict."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

from sweeper.report import format_table, params_text
from sweeper.verify.records import (
    DIVERGED,
    IDENTICAL,
    INCOMPLETE,
    NOT_COMPARABLE,
    SEVERITY,
    Alteration,
    GroupVerdict,
    SealCheck,
    Verification,
)

if TYPE_CHECKING:  # the rerun's record type only: printing a verdict needs no torch
    from sweeper.verify.reproduce import Reproduction

MAX_NAMES = 8  # files, tensors or epochs named in one line of the terminal verdict


def format_verdict(verification: Verification) -> str:
    """The verification for a terminal: the seal, one row per group, findings, the verdict.

    Returns:
        The seal line, the groups table (worst first), one line per alteration and per missing
        or unreadable file, any group notes, a blank line and the one-line verdict.
    """
    groups = verification.groups
    lines = [seal_line(verification.seal)]
    if groups:
        lines.append(format_table([overview_row(i, g) for i, g in by_severity(groups)]))
    lines += [f"altered: {alteration_line(a)}" for a in verification.all_alterations]
    lines += [f"missing or unreadable: {p.path}: {p.reason}" for p in verification.problems]
    lines += [f"group {i}: {g.note}" for i, g in enumerate(groups) if g.note]
    return "\n".join([*lines, "", verdict_line(verification)])


def seal_line(seal: SealCheck) -> str:
    """``seal: SHA256SUMS <digest>: 57 files intact`` or what was added, missing or changed."""
    if not seal.found:
        return f"seal: {seal.file}: {seal.error}"
    head = f"seal: {seal.file} sha256 {seal.sha256}: "
    if seal.intact:
        return head + f"{plural(seal.n_sealed, 'file')} intact"
    found = [
        f"{len(paths)} {what}: {names_text(paths)}"
        for what, paths in (
            ("changed", seal.changed),
            ("missing", seal.missing),
            ("added", seal.added),
        )
        if paths
    ]
    return head + f"of {plural(seal.n_sealed, 'sealed file')}, " + "; ".join(found)


def alteration_line(alteration: Alteration) -> str:
    """One alteration: files, part, what disagrees, and which tensors, epochs or optimizers."""
    where = {
        "tensors": alteration.tensors,
        "epochs": tuple(map(str, alteration.epochs)),
        "optimizers": tuple(map(str, alteration.optimizers)),
    }
    located = "; ".join(f"{k}: {names_text(v)}" for k, v in where.items() if v)
    return f"{files_text(alteration)}: {alteration.part}: {alteration.detail}" + (
        f" ({located})" if located else ""
    )


def files_text(alteration: Alteration) -> str:
    """``dir: model.pt, run.json`` for files of one folder, else the paths."""
    files = [f for f in alteration.files if f]
    folders = {posixpath.dirname(f) for f in files}
    if len(folders) == 1 and "" not in folders:
        return f"{folders.pop()}: " + ", ".join(posixpath.basename(f) for f in files)
    return ", ".join(files)


def verdict_line(verification: Verification) -> str:
    """``PASS``, ``FAIL``, ``INCOMPLETE`` or ``INCONCLUSIVE``, and what was found."""
    counts, n = verification.counts, len(verification.groups)
    seal = verification.seal
    findings = []
    if verification.problems:
        paths = [p.path.removeprefix(verification.sweep + "/") for p in verification.problems]
        findings.append(f"{plural(len(paths), 'file')} missing or unreadable: {names_text(paths)}")
    for what, paths in (("changed", seal.changed), ("added", seal.added)):
        if paths:
            findings.append(
                f"{plural(len(paths), 'file')} {what} since sealing: {names_text(paths)}"
            )
    altered_runs = sum(bool(m.altered) for g in verification.groups for m in g.members)
    if altered_runs:
        findings.append(f"{plural(altered_runs, 'run')} altered")
    if verification.altered:
        findings.append(f"{plural(len(verification.altered), 'sweep record')} altered")
    if counts[DIVERGED]:
        findings.append(f"{counts[DIVERGED]} of {groups_text(n)} diverged")
    if verification.verdict == "PASS":
        if counts[IDENTICAL] == n:
            return f"PASS: {groups_text(n)} identical"
        head = f"PASS: {counts[IDENTICAL]} of {groups_text(n)} identical"
    elif verification.verdict == "INCONCLUSIVE":
        head = f"INCONCLUSIVE: none of {groups_text(n)} compared bit for bit"
    else:
        head = f"{verification.verdict}: " + "; ".join(findings)
    shown = (IDENTICAL, INCOMPLETE, NOT_COMPARABLE) if findings else (INCOMPLETE, NOT_COMPARABLE)
    others = [f"{counts[s]} {s.replace('_', ' ')}" for s in shown if counts[s]]
    return head + (f" ({', '.join(others)})" if others else "")


def overview_row(index: int, group: GroupVerdict) -> dict[str, Any]:
    """One table row of a group: status, seed, params, members compared, where it differs."""
    diffs = [c for c in group.comparisons if not c.identical]
    tensors: dict[str, float] = {}
    for t in (t for c in diffs for t in c.differing_tensors):
        tensors[t.name] = max(tensors.get(t.name, 0.0), t.max_abs_diff)
    found = [c.first_divergence for c in diffs if c.first_divergence]
    first = "-"
    if found:
        earliest = min(found, key=lambda d: d.epoch)
        names = list(earliest.metrics) or ["history length"]
        more = f" +{len(names) - 1}" if len(names) > 1 else ""
        first = f"epoch {earliest.epoch} {names[0]}{more}"
    compared = bool(group.comparisons)  # False: nothing to compare, so no figures
    return {
        "#": index,
        "status": group.status,
        "seed": group.seed,
        "params": shorten(params_text(group.params), 48),
        "members": f"{len(group.histories)}/{len(group.members)}",
        "first divergence": first,
        "tensors": len(tensors) if compared else "-",
        "max |Δw|": max(tensors.values(), default=0.0) if compared else "-",
    }


def by_severity(groups: tuple[GroupVerdict, ...]) -> list[tuple[int, GroupVerdict]]:
    """``(index, group)`` pairs, worst status first, then in their order."""
    rank = {s: i for i, s in enumerate(SEVERITY)}
    return sorted(enumerate(groups), key=lambda ig: (rank.get(ig[1].status, -1), ig[0]))


def groups_text(n: int) -> str:
    """``1 group``, ``2 groups``."""
    return plural(n, "group")


def plural(n: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def names_text(names: tuple[str, ...] | list[str], limit: int = MAX_NAMES) -> str:
    """Names joined by commas, the first ``limit`` of them, and how many more."""
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with ``...`` where it was cut."""
    return text if len(text) <= width else text[: width - 3] + "..."


def format_reproduction(outcome: Reproduction) -> str:
    """A rerun against its record for a terminal: environment, digests, where they differ."""
    comparison = outcome.comparison
    lines = [f"recorded run altered: {alteration_line(a)}" for a in outcome.recorded_altered]
    rows = [
        {"field": d.field, "recorded": d.values[0], "current": d.values[1], "decisive": d.decisive}
        for d in comparison.environment
    ]
    lines.append("environment: " + ("differs from the record:" if rows else "as recorded"))
    lines += [format_table(rows)] if rows else []
    lines += [
        f"{k:>9}: {'identical' if same else 'DIFFERENT'}" for k, same in comparison.same.items()
    ]
    if comparison.not_comparable_because:
        lines.append("not comparable bit for bit: " + ", ".join(comparison.not_comparable_because))
    if comparison.first_divergence:
        first = comparison.first_divergence
        lines.append(f"first divergence: epoch {first.epoch}: {', '.join(first.metrics)}")
    if comparison.differing_tensors:
        lines.append(format_table([dict(vars(t)) for t in comparison.differing_tensors[:10]]))
    lines.append(f"rerun: {outcome.rerun}")
    lines.append("REPRODUCED bit for bit" if outcome.reproduced else "NOT REPRODUCED")
    return "\n".join(lines)
