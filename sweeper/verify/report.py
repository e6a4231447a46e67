"""The replicate verification, for people: a terminal verdict, markdown and an HTML page.

The report is one list of blocks (text, tables, figures), rendered twice: as markdown with PNG
files beside it, and as a self-contained HTML page. Both always agree.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from sweeper.analysis import DIVERGED, IDENTICAL, INCOMPLETE, NOT_COMPARABLE
from sweeper.document import Image, Table, Text, render
from sweeper.report import format_table, params_text
from trainables.constants import TUNE_REPLICATE
from trainables.files import atomic_write_bytes

# Group statuses, worst first.
SEVERITY = (DIVERGED, INCOMPLETE, NOT_COMPARABLE, IDENTICAL)
REPORT_MD, REPORT_HTML = "verification.md", "verification.html"
IMAGE_NAME = "verification_group_{}.png"
MAX_TENSORS = 20  # differing tensors listed per comparison, largest max abs diff first


def format_verdict(verification: dict[str, Any]) -> str:
    """The replicate verification for a terminal: one row per group, then a one-line verdict.

    Args:
        verification: What ``sweeper.analysis.verify_sweep`` returned, or its JSON file's content.

    Returns:
        The table (worst groups first), any group notes, a blank line and the verdict.
    """
    groups = verification["groups"]
    lines = [format_table([_overview_row(i, g) for i, g in _by_severity(groups)])]
    lines += [f"group {i}: {g['note']}" for i, g in enumerate(groups) if g.get("note")]
    return "\n".join([*lines, "", verdict_line(verification)])


def verdict_line(verification: dict[str, Any]) -> str:
    """``PASS``, ``FAIL`` or ``INCONCLUSIVE``, with how many groups are in each status."""
    counts = Counter(g["status"] for g in verification["groups"])
    n = len(verification["groups"])
    if counts[DIVERGED]:
        head, shown = f"FAIL: {counts[DIVERGED]} of {_groups(n)} diverged", SEVERITY[1:]
    elif counts[IDENTICAL] == n > 0:
        return f"PASS: {_groups(n)} identical"
    elif counts[IDENTICAL]:
        head, shown = f"PASS: {counts[IDENTICAL]} of {_groups(n)} identical", SEVERITY[1:3]
    else:
        head, shown = f"INCONCLUSIVE: none of {_groups(n)} compared bit for bit", SEVERITY[1:3]
    others = [f"{counts[s]} {s.replace('_', ' ')}" for s in shown if counts[s]]
    return head + (f" ({', '.join(others)})" if others else "")


def write_verification_report(
    verification: dict[str, Any], folder: str | Path
) -> tuple[Path, Path]:
    """Write the verification as ``verification.md`` and ``verification.html``, atomically.

    Per group, worst first: the replicates' loss curves overlaid, the first divergence and the
    differing tensors (tolerance figures and reasons where environments rule out bit equality),
    then the members' environments with differing fields highlighted. The markdown links the
    figures, written beside it as ``verification_group_<i>.png``; the HTML embeds them.

    Args:
        verification: What ``sweeper.analysis.verify_sweep`` returned, or its JSON file's content.
        folder: Where to write (created if missing).

    Returns:
        The paths of the markdown and the HTML file.
    """
    from sweeper.plots import replicate_curves_png  # here: table users needn't load matplotlib

    folder = Path(folder)
    images = {}
    for i, group in enumerate(verification["groups"]):
        png = replicate_curves_png(group, mark_epoch=_first_divergence_epoch(group))
        if png is not None:
            images[i] = Image(IMAGE_NAME.format(i), png, _caption(group), "loss curves")
            atomic_write_bytes(folder / images[i].name, png)
    blocks = _document(verification, images)
    title = f"Replicate verification: {verification.get('sweep', '')}"
    return render(blocks, title, folder / REPORT_MD, folder / REPORT_HTML)


def _document(verification: dict[str, Any], images: dict[int, Image]) -> list[Any]:
    groups = _by_severity(verification["groups"])
    verdict = verdict_line(verification)
    blocks: list[Any] = [
        Text("Replicate verification", 1),
        Text(
            f"Sweep {verification.get('sweep')}, checked {verification.get('checked_at')}: "
            f"{_groups(len(groups))} of trials that differ only in their replicate index."
        ),
        Text(verdict, css=verdict.split(":")[0].lower()),
    ]
    if groups:
        rows = [_overview_row(i, g) for i, g in groups]
        diverged = {(k, "status") for k, r in enumerate(rows) if r["status"] == DIVERGED}
        blocks.append(Table(rows, frozenset(diverged)))
    for i, group in groups:
        blocks += _group_blocks(i, group, images.get(i))
    return blocks


def _group_blocks(index: int, group: dict[str, Any], image: Image | None) -> list[Any]:
    status, histories = group["status"], group["histories"]
    mode = {True: "on", False: "off"}.get(group["deterministic"], "unknown")
    missing = [f"{m['trial_id']} ({m['status']})" for m in group["members"]]
    missing = [
        s for s, m in zip(missing, group["members"], strict=True) if m["trial_id"] not in histories
    ]
    notes = ([f"Not completed: {', '.join(missing)}."] if missing else []) + (
        [f"Note: {group['note']}."] if group.get("note") else []
    )
    blocks: list[Any] = [
        Text(f"Group {index}: {status.replace('_', ' ')}", 2, css=status),
        Text(
            f"Seed {group['seed']}, {params_text(group['params'])}; {len(histories)} of "
            f"{len(group['members'])} members completed; deterministic mode {mode}."
        ),
        *([image] if image else []),
        *(Text(note, css="note") for note in notes),
    ]
    for comparison in group["comparisons"]:
        if not comparison["identical"]:
            blocks += _comparison_blocks(comparison)
    return blocks + _environment_blocks(group)


def _comparison_blocks(comparison: dict[str, Any]) -> list[Any]:
    same = ", ".join(f"{k} {'same' if v else 'DIFFER'}" for k, v in comparison["same"].items())
    blocks: list[Any] = [
        Text(f"{comparison['trial']} vs reference {comparison['reference']}", 3),
        Text(f"Fingerprints: {same}."),
    ]
    reasons, env = comparison["not_comparable_because"], comparison["environment_diff"]
    if reasons:
        why = "; ".join(
            f"{r} differs ({_or_none(env[r][0])} vs {_or_none(env[r][1])})" if r in env else r
            for r in reasons
        )
        blocks.append(
            Text(
                f"Not comparable bit for bit: {why}. The figures below are tolerances "
                "(how far the runs drifted apart), not a failure.",
                css="note",
            )
        )
    blocks += _divergence_blocks(comparison.get("first_divergence"))
    if reasons and comparison.get("metric_drift"):
        drift = sorted(comparison["metric_drift"].items(), key=lambda kv: -kv[1])
        blocks.append(Text("Largest relative difference of each metric over all epochs:"))
        blocks.append(Table([{"metric": k, "max rel diff": _sci(v)} for k, v in drift]))
    return blocks + _tensor_blocks(comparison.get("differing_tensors") or [])


def _divergence_blocks(first: dict[str, Any] | None) -> list[Any]:
    if first is None:
        return [Text("Every epoch's metrics have the same bits.")]
    blocks: list[Any] = [Text(f"First divergence at epoch {first['epoch']}:")]
    if "lengths" in first:
        blocks.append(
            Text("The histories have different lengths: {} vs {} epochs.".format(*first["lengths"]))
        )
    rows = [
        {
            "epoch": first["epoch"],
            "metric": name,
            "reference": repr(float(m["values"][0])),  # the shortest repr that round-trips
            "trial": repr(float(m["values"][1])),
            "ULPs": "-" if m["ulps"] is None else m["ulps"],
            "rel diff": _sci(m["rel_diff"]),
        }
        for name, m in first["metrics"].items()
    ]
    return blocks + ([Table(rows)] if rows else [])


def _tensor_blocks(tensors: list[dict[str, Any]]) -> list[Any]:
    if not tensors:
        return []
    top = sorted(tensors, key=lambda t: -t["max_abs_diff"])[:MAX_TENSORS]
    rows = [
        {
            "tensor": t["name"],
            "shape": " x ".join(map(str, t["shape"])) or "scalar",
            "differing": f"{t['n_differing']} of {math.prod(t['shape'])}",
            "max abs diff": _sci(t["max_abs_diff"]),
            "max rel diff": _sci(t["max_rel_diff"]),
        }
        for t in top
    ]
    more = [Text(f"... and {len(tensors) - len(top)} more.")] if len(tensors) > len(top) else []
    count = f"{len(tensors)} differing tensor{'s' if len(tensors) > 1 else ''}"
    return [Text(f"{count}, largest max abs diff first:"), Table(rows), *more]


def _environment_blocks(group: dict[str, Any]) -> list[Any]:
    members = group["members"]
    fields = next((list(m["environment"]) for m in members if m["environment"]), [])
    rows = [
        {"trial": m["trial_id"], "replicate": m[TUNE_REPLICATE], "status": m["status"]}
        | {f: _env_value(f, (m["environment"] or {}).get(f)) for f in fields}
        for m in members
    ]
    row = {m["trial_id"]: i for i, m in enumerate(members)}
    marked = frozenset(
        (row[t], field)
        for c in group["comparisons"]
        for field in c["environment_diff"]
        for t in (c["reference"], c["trial"])
        if t in row
    )
    note = [Text("Highlighted: fields that differ between compared members.")] if marked else []
    return [Text("Environment", 3), Table(rows, marked), *note]


def _caption(group: dict[str, Any]) -> str:
    epoch = _first_divergence_epoch(group)
    caption = (
        f"Train and validation loss of {len(group['histories'])} replicates overlaid; the first "
        "is solid, later ones dashed. Bit-identical replicates lie exactly on top of each "
        "other, so the dashed curves cover the solid one."
    )
    if group["status"] == IDENTICAL:
        caption += " These are identical: one visible curve per panel is the expected picture."
    if epoch is not None:
        caption += (
            f" The dotted red line marks the first divergence (epoch {epoch}); differences too "
            "small to see here are located in the tables below."
        )
    return caption


def _overview_row(index: int, group: dict[str, Any]) -> dict[str, Any]:
    diffs = [c for c in group["comparisons"] if not c["identical"]]
    tensors: dict[str, float] = {}
    for t in (t for c in diffs for t in c.get("differing_tensors") or []):
        tensors[t["name"]] = max(tensors.get(t["name"], 0.0), t["max_abs_diff"])
    found = [c["first_divergence"] for c in diffs if c.get("first_divergence")]
    first = "-"
    if found:
        earliest = min(found, key=lambda d: d["epoch"])
        names = list(earliest["metrics"]) or ["history length"]
        more = f" +{len(names) - 1}" if len(names) > 1 else ""
        first = f"epoch {earliest['epoch']} {names[0]}{more}"
    compared = bool(group["comparisons"])  # False: nothing to compare, so no figures
    return {
        "#": index,
        "status": group["status"],
        "seed": group["seed"],
        "params": _shorten(params_text(group["params"]), 48),
        "members": f"{len(group['histories'])}/{len(group['members'])}",
        "first divergence": first,
        "tensors": len(tensors) if compared else "-",
        "max |Δw|": max(tensors.values(), default=0.0) if compared else "-",
    }


def _first_divergence_epoch(group: dict[str, Any]) -> int | None:
    found = [c.get("first_divergence") for c in group["comparisons"]]
    return min((d["epoch"] for d in found if d), default=None)


def _by_severity(groups: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    rank = {s: i for i, s in enumerate(SEVERITY)}
    return sorted(enumerate(groups), key=lambda ig: (rank.get(ig[1]["status"], -1), ig[0]))


def _groups(n: int) -> str:
    return f"{n} group" if n == 1 else f"{n} groups"


def _env_value(field: str, value: Any) -> Any:
    if value is None:
        return "-"
    return f"{value[:12]}..." if field == "node_id" and len(str(value)) > 15 else value


def _or_none(value: Any) -> Any:
    return "none" if value is None else value


def _sci(value: float) -> str:
    return "0" if value == 0 else f"{value:.3e}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
