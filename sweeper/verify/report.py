"""The verification, for people: markdown and a self-contained HTML page.

The report is one list of blocks (text, tables, figures), rendered twice: as markdown with PNG
files beside it, and as a self-contained HTML page. Both always agree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sweeper.document import Image, Table, Text, render
from sweeper.report import params_text
from sweeper.storage import SweepFolder
from sweeper.verify.analysis import verification_path, verify_sweep, write_verification
from sweeper.verify.records import (
    ALTERED,
    DIVERGED,
    IDENTICAL,
    Alteration,
    Comparison,
    Divergence,
    GroupVerdict,
    TensorDifference,
    Verification,
)
from sweeper.verify.verdict import (
    by_severity,
    files_text,
    groups_text,
    names_text,
    overview_row,
    seal_line,
    verdict_line,
)
from trainables.files import atomic_write_bytes

REPORT_MD, REPORT_HTML = "verification.md", "verification.html"
IMAGE_NAME = "verification_group_{}.png"
MAX_TENSORS = 20  # differing tensors listed per comparison, largest max abs diff first
WHAT_IS_CHECKED = (
    "What is checked, all recomputed from the files: every file of the sweep folder against "
    "its SHA256SUMS seal (added, missing, changed; the seal covers every file but these "
    "verification files, which are rewritten on each check, and W&B's wandb/ folder); each "
    "run's weights and optimizer digests from its model.pt and its metrics digest from the "
    "history in its run.json, against the fingerprint its run.json records (a run whose files "
    "disagree with its record is altered and compared with nothing); summary.json and best/ "
    "against the runs; then each group of replicates on the recomputed digests."
)


def write_verification_report(verification: Verification, folder: str | Path) -> tuple[Path, Path]:
    """Write the verification as ``verification.md`` and ``verification.html``, atomically.

    First the verdict, the seal and every alteration and missing file; then per group, worst
    first: the replicates' loss curves overlaid (where two or more have a history), the first
    divergence and the differing tensors (tolerance figures and reasons where environments
    rule out bit equality), then the members' environments with differing fields highlighted.
    The markdown links the figures, written beside it as ``verification_group_<i>.png``
    (``i``: the group's index in the verification); the HTML embeds them.

    Returns:
        The paths of the markdown and the HTML file.
    """
    from sweeper.plots import replicate_curves_png  # here: table users needn't load matplotlib

    folder = Path(folder)
    images = {}
    for i, group in enumerate(verification.groups):
        png = replicate_curves_png(group, mark_epoch=_first_divergence_epoch(group))
        if png is not None:
            images[i] = Image(IMAGE_NAME.format(i), png, _caption(group), "loss curves")
            atomic_write_bytes(folder / images[i].name, png)
    blocks = _document(verification, images)
    title = f"Replicate verification: {verification.sweep}"
    return render(blocks, title, folder / REPORT_MD, folder / REPORT_HTML)


def _document(verification: Verification, images: dict[int, Image]) -> list[Any]:
    groups = by_severity(verification.groups)
    verdict = verdict_line(verification)
    blocks: list[Any] = [
        Text("Replicate verification", 1),
        Text(
            f"Sweep {verification.sweep}, checked {verification.checked_at}: "
            f"{groups_text(len(groups))} of trials that differ only in their replicate index."
        ),
        Text(verdict, css=verdict.split(":")[0].lower()),
        Text(WHAT_IS_CHECKED),
        Text(seal_line(verification.seal)),
    ]
    seal = verification.seal
    rows = [
        {"file": path, "since sealing": what}
        for what, paths in (("changed", seal.changed), ("missing", seal.missing))
        for path in paths
    ] + [{"file": path, "since sealing": "added"} for path in seal.added]
    if rows:
        blocks.append(Table(rows, frozenset((i, "since sealing") for i in range(len(rows)))))
    blocks += _alteration_blocks(verification.all_alterations)
    if verification.problems:
        rows = [{"file": p.path, "problem": p.reason} for p in verification.problems]
        blocks += [Text("Missing or unreadable files", 2), Table(rows)]
    if groups:
        rows = [overview_row(i, g) for i, g in groups]
        bad = {(k, "status") for k, r in enumerate(rows) if r["status"] in (DIVERGED, ALTERED)}
        blocks.append(Table(rows, frozenset(bad)))
    for i, group in groups:
        blocks += _group_blocks(i, group, images.get(i))
    return blocks


def _alteration_blocks(alterations: list[Alteration]) -> list[Any]:
    if not alterations:
        return []
    rows = [
        {
            "files": files_text(a),
            "part": a.part,
            "what disagrees": a.detail,
            "where": names_text(a.tensors or tuple(map(str, a.epochs or a.optimizers)), 12) or "-",
        }
        for a in alterations
    ]
    note = Text(
        "Altered: these files no longer agree with what was recorded of them (the digests are "
        "recomputed from the files). An altered run is compared with nothing.",
        css="note",
    )
    return [Text("Altered files", 2), note, Table(rows)]


def _group_blocks(index: int, group: GroupVerdict, image: Image | None) -> list[Any]:
    mode = {True: "on", False: "off"}.get(group.deterministic, "unknown")
    unused = [m for m in group.members if m.trial_id not in group.histories]
    not_done = [f"{m.trial_id} ({m.status})" for m in unused if m.status != "completed"]
    notes = [f"Not completed: {', '.join(not_done)}."] if not_done else []
    notes += [f"Unreadable: {m.trial_id}: {m.problem}." for m in unused if m.problem]
    notes += [f"Altered, so not compared: {m.trial_id}." for m in unused if m.altered]
    notes += [f"Note: {group.note}."] if group.note else []
    blocks: list[Any] = [
        Text(f"Group {index}: {group.status.replace('_', ' ')}", 2, css=group.status),
        Text(
            f"Seed {group.seed}, {params_text(group.params)}; {len(group.histories)} of "
            f"{len(group.members)} members completed; deterministic mode {mode}."
        ),
        *([image] if image else []),
        *(Text(note, css="note") for note in notes),
    ]
    for comparison in group.comparisons:
        if not comparison.identical:
            blocks += _comparison_blocks(comparison)
    return blocks + _environment_blocks(group)


def _comparison_blocks(comparison: Comparison) -> list[Any]:
    same = ", ".join(f"{k} {'same' if v else 'DIFFER'}" for k, v in comparison.same.items())
    blocks: list[Any] = [
        Text(f"{comparison.trial} vs reference {comparison.reference}", 3),
        Text(f"Recomputed fingerprints: {same}."),
    ]
    reasons = comparison.not_comparable_because
    if reasons:
        why = "; ".join(_reason(comparison, r) for r in reasons)
        blocks.append(
            Text(
                f"Not comparable bit for bit: {why}. The figures below are tolerances "
                "(how far the runs drifted apart), not a failure.",
                css="note",
            )
        )
    blocks += _divergence_blocks(comparison.first_divergence)
    if reasons and comparison.metric_drift:
        drift = sorted(comparison.metric_drift.items(), key=lambda kv: -kv[1])
        blocks.append(Text("Largest relative difference of each metric over all epochs:"))
        blocks.append(Table([{"metric": k, "max rel diff": _sci(v)} for k, v in drift]))
    return blocks + _tensor_blocks(comparison.differing_tensors)


def _reason(comparison: Comparison, reason: str) -> str:
    difference = comparison.environment_field(reason)
    if difference is None:
        return reason
    a, b = difference.values
    return f"{reason} differs ({_or_none(a)} vs {_or_none(b)})"


def _divergence_blocks(first: Divergence | None) -> list[Any]:
    if first is None:
        return [Text("Every epoch's metrics have the same bits.")]
    blocks: list[Any] = [Text(f"First divergence at epoch {first.epoch}:")]
    if first.lengths:
        blocks.append(
            Text("The histories have different lengths: {} vs {} epochs.".format(*first.lengths))
        )
    rows = [
        {
            "epoch": first.epoch,
            "metric": name,
            "reference": repr(float(m.values[0])),  # the shortest repr that round-trips
            "trial": repr(float(m.values[1])),
            "ULPs": "-" if m.ulps is None else m.ulps,
            "rel diff": _sci(m.rel_diff),
        }
        for name, m in first.metrics.items()
    ]
    return blocks + ([Table(rows)] if rows else [])


def _tensor_blocks(tensors: tuple[TensorDifference, ...]) -> list[Any]:
    if not tensors:
        return []
    top = sorted(tensors, key=lambda t: -t.max_abs_diff)[:MAX_TENSORS]
    rows = [
        {
            "tensor": t.name,
            "shape": " x ".join(map(str, t.shape)) or "scalar",
            "differing": f"{t.n_differing} of {math.prod(t.shape)}",
            "max abs diff": _sci(t.max_abs_diff),
            "max rel diff": _sci(t.max_rel_diff),
        }
        for t in top
    ]
    more = [Text(f"... and {len(tensors) - len(top)} more.")] if len(tensors) > len(top) else []
    count = f"{len(tensors)} differing tensor{'s' if len(tensors) > 1 else ''}"
    return [Text(f"{count}, largest max abs diff first:"), Table(rows), *more]


def _environment_blocks(group: GroupVerdict) -> list[Any]:
    members = group.members
    envs = [m.environment or {} for m in members]
    fields = [f for f in (envs[0] if envs else {}) if any(e.get(f) is not None for e in envs)]
    rows = [
        {"trial": m.trial_id, "replicate": m.replicate, "status": m.status}
        | {f: _env_value(f, env.get(f)) for f in fields}
        for m, env in zip(members, envs, strict=True)
    ]
    row = {m.trial_id: i for i, m in enumerate(members)}
    marked = frozenset(
        (row[t], d.field)
        for c in group.comparisons
        for d in c.environment
        for t in (c.reference, c.trial)
        if t in row and d.field in fields
    )
    note = [Text("Highlighted: fields that differ between compared members.")] if marked else []
    return [Text("Environment", 3), Table(rows, marked), *note] if rows else []


def _caption(group: GroupVerdict) -> str:
    epoch = _first_divergence_epoch(group)
    caption = (
        f"Train and validation loss of {len(group.histories)} replicates overlaid; the first "
        "is solid, later ones dashed. Bit-identical replicates lie exactly on top of each "
        "other, so the dashed curves cover the solid one."
    )
    if group.status == IDENTICAL:
        caption += " These are identical: one visible curve per panel is the expected picture."
    if epoch is not None:
        caption += (
            f" The dotted red line marks the first divergence (epoch {epoch}); differences too "
            "small to see here are located in the tables below."
        )
    return caption


def _first_divergence_epoch(group: GroupVerdict) -> int | None:
    found = [c.first_divergence for c in group.comparisons]
    return min((d.epoch for d in found if d), default=None)


def _env_value(field: str, value: Any) -> Any:
    if value is None:
        return "-"
    long = field in ("node_id", "git_commit", "data") and len(str(value)) > 15
    return f"{str(value)[:12]}..." if long else value


def _or_none(value: Any) -> Any:
    return "none" if value is None else value


def _sci(value: float) -> str:
    return "0" if value == 0 else f"{value:.3e}"


def publish_verification(folder: SweepFolder) -> tuple[Verification, str]:
    """Verify a sweep folder and write the verification JSON, markdown and HTML report into it.

    A remote folder is verified through a local copy.

    Returns:
        The verification and the HTML report's location.

    Raises:
        ResultFileError: ``summary.json`` is missing or not a sweep summary (named).
    """
    local = folder.download()
    verification = verify_sweep(local)
    write_verification(verification, verification_path(local))
    _, html = write_verification_report(verification, local)
    if folder.local is not None:
        return verification, str(html)
    for path in sorted(local.glob("verification*")):
        folder.write_bytes(path.name, path.read_bytes())
    return verification, f"{folder}/{html.name}"
